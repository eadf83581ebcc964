"""`DataConfig`, the dataset names and the files each source expects."""

import dataclasses
import os
from typing import Optional

__all__ = ["CELEBA_ATTRIBUTES", "DATASETS", "DEBIAN_FASHION_MNIST", "FASHION_MNIST_CLASSES",
           "IDX_FILES", "IMAGE_EXTENSIONS", "OPENAI_LAYOUT", "DataConfig", "DataError"]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "imagenet32", "imagenet64", "celeba",
            "lsun", "folder")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
OPENAI_LAYOUT = ("train/train-rXX-s-NNNN-of-NNNN.tfrecords and "
                 "validation/validation-rXX-s-NNNN-of-NNNN.tfrecords, rXX = log2 of the size")
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


class DataError(ValueError):
  """The data cannot be found or read; the message says how to get it."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data and how much of it (`--dataset`, `--data_dir`, ... of train.py).

  Attributes:
    dataset: one of `DATASETS`.
    data_dir: TFDS data dir, directory of IDX files, image folder, or root of
      OpenAI's TFRecord shards. `None`: TFDS's default and Debian's
      Fashion-MNIST.
    category: LSUN category (`dataset="lsun"`), e.g. `bedroom`.
    image_size: square output size; `None` for the dataset's own (32 for
      padded MNIST-likes, CIFAR-10 and ImageNet32, 64 for ImageNet64, 256 for
      CelebA-HQ, 64 for CelebA, LSUN and folders; the shards' resolution).
    pad_to_32: pad 28x28 MNIST-likes to 32x32 when `image_size` is unset.
    n_train: use only the first `n_train` training examples (`None`: all).
    n_test: use only the first `n_test` test examples (`None`: all).
    n_batch_train: global training batch size.
    n_batch_test: global test batch size.
    n_batch_init: size of the actnorm init batch.
    shuffle_buffer: examples in the training shuffle buffer; also bounds the
      pool the init batch is drawn from.
    holdout_fraction: test fraction of an image folder without `test/`.
    seed: seeds the training order and the init batch.
    download: let TFDS download and prepare data that is not prepared yet.
  """
  dataset: str = "cifar10"
  data_dir: Optional[str] = None
  category: Optional[str] = None
  image_size: Optional[int] = None
  pad_to_32: bool = True
  n_train: Optional[int] = None
  n_test: Optional[int] = None
  n_batch_train: int = 64
  n_batch_test: int = 50
  n_batch_init: int = 256
  shuffle_buffer: int = 10000
  holdout_fraction: float = 0.05
  seed: int = 0
  download: bool = True

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ValueError(f"unknown dataset {self.dataset!r}; valid names: {', '.join(DATASETS)}.")
    if self.data_dir:
      object.__setattr__(self, "data_dir", os.path.expanduser(str(self.data_dir)))
    else:
      object.__setattr__(self, "data_dir", None)
    if self.image_size is not None and (
        isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
        or self.image_size < 1):
      raise ValueError(f"image_size must be a positive integer or unset, got {self.image_size!r}.")
    for name in ("n_train", "n_test"):
      v = getattr(self, name)
      if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"{name} must be a positive integer or unset (all), got {v!r}.")
    for name in ("n_batch_train", "n_batch_test", "n_batch_init", "shuffle_buffer"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    if not 0 < self.holdout_fraction < 1:
      raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}.")
    if self.dataset == "lsun" and not self.category:
      raise ValueError("dataset lsun needs --category (e.g. bedroom, church_outdoor, tower).")
    if self.dataset == "folder" and not self.data_dir:
      raise ValueError("dataset folder needs --data_dir, a directory of images.")
    if (self.dataset in ("mnist", "fashion_mnist") and self.image_size == 32
        and not self.pad_to_32):
      raise ValueError("image_size=32 pads the 28x28 images: drop pad_to_32=False, or use "
                       "image_size=28.")

