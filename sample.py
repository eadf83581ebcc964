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
  from glow_tf import sampling  # after flag parsing: --help needs no TensorFlow
  try:
    config = sample_flags.config_from_flags(FLAGS)
    sampling.run(config)
  except (ValueError, FileNotFoundError) as e:
    print(f"sample.py: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  glow_flags.run_app(main, sample_flags.define_flags, sample_flags)
