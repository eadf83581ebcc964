"""Export a trained model's Polyak-averaged weights (no optimiser state) with its config.

  python scripts/export_model.py --logdir=runs/fmnist_small --output=pretrained/fashion_mnist

The result is what sample.py loads with --logdir=<output> (and, for
pretrained/fashion_mnist, by default when ./logs holds no model).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--logdir", required=True, help="train.py logdir or checkpoint directory")
  parser.add_argument("--output", required=True, help="directory to write")
  parser.add_argument("--nopolyak", action="store_true", help="export the raw weights (default: the "
                      "ones, raw or Polyak-averaged, with the better test bits/dim)")
  args = parser.parse_args()
  from glow_tf import sampling  # pylint: disable=import-outside-toplevel
  try:
    loaded = sampling.load_model(args.logdir, polyak=False if args.nopolyak else None)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"export_model.py: error: {e}")
  path = sampling.export_model(loaded, args.output)
  print(f"exported {loaded.checkpoint} -> {path} ({loaded.model.num_parameters():,} parameters)")


if __name__ == "__main__":
  main()
