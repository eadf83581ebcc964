"""Draw from a trained Glow: `python sample.py --temperature=0.7`.

Modes: sample (a grid, one row per --temperature), reconstruct, interpolate,
manipulate --attribute=NAME. The model is rebuilt from the config.json that
train.py saved in --logdir; with no model there, the small Fashion-MNIST
model shipped in pretrained/fashion_mnist is used.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from flags import glow_flags  # noqa: E402
from flags import sample_flags  # noqa: E402

FLAGS = absl_flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from glow_tf import sampling  # after flag parsing: --help stays fast
  try:
    config = sampling.SampleConfig(
        mode=FLAGS.mode, logdir=FLAGS.logdir, restore_path=FLAGS.restore_path,
        temperatures=tuple(sample_flags.parse_temperatures(FLAGS.temperature)),
        n_samples=FLAGS.n_samples, seed=FLAGS.seed, output=FLAGS.output, label=FLAGS.label,
        images=tuple(FLAGS.images), n_steps=FLAGS.n_steps, attribute=FLAGS.attribute,
        scales=tuple(float(s) for s in FLAGS.scales),
        n_direction_examples=FLAGS.n_direction_examples, data_dir=FLAGS.data_dir,
        polyak=FLAGS.polyak, zoom=FLAGS.zoom, default_logdir=not FLAGS["logdir"].present)
    sampling.run(config)
  except (ValueError, FileNotFoundError) as e:
    print(f"sample.py: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  glow_flags.run_app(main, sample_flags.define_flags, sample_flags)
