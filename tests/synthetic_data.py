"""Images the tests make themselves: Fashion-MNIST-like IDX files and image folders.

The training-loop tests run on Debian's Fashion-MNIST where it is installed
and on these files elsewhere, so the loop is always covered:
`FASHION_MNIST_DIR` is the `data_dir` they pass, `None` (Debian's) or a
directory of these files. `GLOW_TF_TEST_OWN_DATA=1` uses the tests' own files
even where Debian's are installed.
"""

import gzip
import os
import tempfile

import numpy as np

IDX_NAMES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def garment_like_images(n, seed, size=28):
  """`n` uint8 `[size, size]` images of 10 classes (bright shapes on black) and their labels.

  Each class is a smooth shape (a box of class-dependent width and height
  with soft edges, brightness varying by image) plus a little noise: images
  with the structure a flow learns quickly, like Fashion-MNIST's garments.
  """
  rng = np.random.RandomState(seed)
  labels = rng.randint(0, 10, n).astype(np.uint8)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  c = (size - 1) / 2.
  images = np.empty([n, size, size], np.uint8)
  for i, label in enumerate(labels):
    half_w = 3 + label % 5 * 2 + rng.uniform(-1, 1)
    half_h = 4 + label // 5 * 6 + rng.uniform(-1, 1)
    inside = np.minimum(half_w - np.abs(xx - c), half_h - np.abs(yy - c))
    shape = 1. / (1. + np.exp(-2. * inside))
    value = shape * rng.uniform(120, 250) + rng.normal(0, 6, [size, size])
    images[i] = np.clip(value, 0, 255).astype(np.uint8)
  return images, labels


def write_idx(directory, n_train=1000, n_test=200, seed=0):
  """Writes the four gzipped IDX files of a Fashion-MNIST-like set into `directory`."""
  os.makedirs(directory, exist_ok=True)
  for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
    images, labels = garment_like_images(n, s)
    image_file, label_file = IDX_NAMES[split]
    with gzip.open(os.path.join(directory, image_file), "wb") as f:
      f.write(np.array([0x803, n, 28, 28], ">i4").tobytes() + images.tobytes())
    with gzip.open(os.path.join(directory, label_file), "wb") as f:
      f.write(np.array([0x801, n], ">i4").tobytes() + labels.tobytes())
  return directory


DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
HAVE_DEBIAN_FASHION_MNIST = os.path.exists(
    os.path.join(DEBIAN_FASHION_MNIST, IDX_NAMES["train"][0]))


def _fashion_mnist_dir():
  if HAVE_DEBIAN_FASHION_MNIST and os.environ.get("GLOW_TF_TEST_OWN_DATA") != "1":
    return None
  return write_idx(tempfile.mkdtemp(prefix="glow_tf_fmnist_"))


FASHION_MNIST_DIR = _fashion_mnist_dir()
