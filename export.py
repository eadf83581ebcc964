"""Export a trained Glow as a TensorFlow SavedModel: `python export.py --logdir=logs`.

The SavedModel (in --output, default <logdir>/export, with the run's
config.json beside it) loads with `tf.saved_model.load(path)` in any
TensorFlow program, without glow_tf: tf.functions sample(n, temperature,
seed), log_prob(images), bits_per_dim(images), encode(images) and
decode(latents), and the serving signatures serving_default (= bits_per_dim)
and one per function, for TensorFlow Serving and `saved_model_cli run`.
By default the weights, raw or Polyak-averaged, with the better test
bits/dim in the run's latest evaluation (--polyak/--nopolyak force one).
`train.py --restore_path=<export>` fine-tunes from it.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from flags import export_flags  # noqa: E402
from flags import glow_flags  # noqa: E402

FLAGS = absl_flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from glow_tf import export  # after flag parsing: --help needs no TensorFlow
  try:
    export.export(export_flags.config_from_flags(FLAGS))
  except (ValueError, FileNotFoundError) as e:
    print(f"export.py: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  glow_flags.run_app(main, export_flags.define_flags, export_flags)
