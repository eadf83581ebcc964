"""Writes image folders to score against Fashion-MNIST (`score.py --ood_images=DIR`).

  python scripts/make_ood_images.py --kind=inverted --out=/tmp/fmnist_inverted
  python scripts/make_ood_images.py --kind=noise --n=1000 --out=/tmp/uniform_noise

`inverted`: Fashion-MNIST's test images (32x32, zero-padded as train.py reads
them), each pixel v replaced by 255 - v. `noise`: uniform random 32x32
grayscale images. PNG files, one per image.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--kind", choices=["inverted", "noise"], required=True)
  p.add_argument("--out", required=True, help="directory to create")
  p.add_argument("--n", type=int, default=None, help="number of images (default: all / 1000)")
  p.add_argument("--data_dir", default=None, help="Fashion-MNIST's IDX files (inverted)")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  from PIL import Image
  if os.path.exists(args.out) and os.listdir(args.out):
    p.error(f"--out {args.out} exists and is not empty")
  os.makedirs(args.out, exist_ok=True)
  if args.kind == "noise":
    images = np.random.RandomState(args.seed).randint(0, 256, [args.n or 1000, 32, 32], np.uint8)
  else:
    from glow_tf import config, data
    ds = data.load(config.DataConfig(dataset="fashion_mnist", data_dir=args.data_dir or None,
                                     n_test=args.n))
    images = 255 - np.concatenate([b["image"].numpy()[..., 0] for b in ds.test_dataset(1000)])
  for i, image in enumerate(images):
    Image.fromarray(image).save(os.path.join(args.out, f"{i:05d}.png"))
  print(f"wrote {len(images)} images to {args.out}")


if __name__ == "__main__":
  main()
