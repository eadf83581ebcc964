"""Score images under a trained Glow: `python score.py --output=scores.csv`.

Exact per-image log-likelihoods (nats, bits/dim) of a dataset split or of
image files, with `--n_dequant_samples=K` importance-weighted draws, the
latents (`--latents`), and out-of-distribution detection against a second
set (`--ood_dataset` or `--ood_images`): AUROC, AUPR and FPR at 95% TPR of
bits/dim, the typicality test and the complexity-corrected score, and a
histogram. The model is rebuilt from --logdir's config.json; with no model
there, the small Fashion-MNIST model shipped in pretrained/fashion_mnist is
used. Exit code 2 for an error in the flags, the model or the images.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from flags import glow_flags  # noqa: E402
from flags import score_flags  # noqa: E402

FLAGS = absl_flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from glow_tf import scoring  # after flag parsing: --help needs no TensorFlow
  try:
    scoring.run(score_flags.config_from_flags(FLAGS))
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f"score.py: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  glow_flags.run_app(main, score_flags.define_flags, score_flags)
