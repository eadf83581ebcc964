"""Datasets as `tf.data` pipelines of uint8 images, labels and attributes.

`load(DataConfig(dataset=...))` returns an `ImageDataset` whose methods give
the training pipeline (shuffled with the seed, repeated, batched to the
global batch), the test pipeline (fixed order, every example exactly once,
last batch kept), the init batch for actnorm and labelled examples for
attribute directions.

Sources, by `dataset` name:

| name | source |
|---|---|
| `mnist`, `fashion_mnist` | TFDS; `fashion_mnist` first reads the four IDX `.gz` files from `data_dir` or Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`), never touching the network when they are there. 28x28 images are padded to 32x32 with zeros (the original pads with the minimum, 0), unless `image_size=28`. |
| `cifar10` | TFDS `cifar10` |
| `imagenet32`, `imagenet64` | TFDS `imagenet_resized/32x32`, `/64x64` (manual download) |
| `celeba` | TFDS `celeb_a_hq/256` (manual download) when prepared, else TFDS `celeb_a`, centre-cropped to 148x148 and resized to `image_size` (default 64); with the 40 attributes |
| `lsun` | TFDS `lsun/<category>`, centre-cropped and resized to `image_size` (default 64) |
| `folder` | every image file under `data_dir` (`train/` and `test/` subfolders when present, else a held-out fraction), centre-cropped and resized to `image_size` (default 64); label = subfolder index when images sit in class subfolders |
| any | when `data_dir` holds OpenAI's prepared TFRecord shards (`train/train-rXX-s-*-of-*.tfrecords`, `validation/...`), they are read as they are (features `shape`, `data`, `label`, optional `attr`) |

Corrupt image files in a folder fail loudly with the file name (a silently
smaller dataset would make bits/dim incomparable); TFDS and TFRecord data are
taken as prepared.

Multi-replica: `train_dataset` yields *global* batches; hand it to
`strategy.experimental_distribute_dataset`, which splits each global batch
over the replicas of one worker and, with several workers, shards the data so
that each example is read by one worker per epoch (`AutoShardPolicy.DATA`).
"""

import dataclasses
import glob
import gzip
import math
import os
from typing import Optional

import numpy as np
import tensorflow as tf

__all__ = ["DATASETS", "DataConfig", "ImageDataset", "load", "DEBIAN_FASHION_MNIST"]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "imagenet32", "imagenet64", "celeba",
            "lsun", "folder")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
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
  """Which data and how much of it.

  Attributes:
    dataset: one of `DATASETS`.
    data_dir: TFDS data dir, IDX directory, image folder, or OpenAI shard root.
    category: LSUN category (`dataset="lsun"`).
    image_size: square size; `None` for the dataset's own (32 for padded
      MNIST-likes, 32 for CIFAR/ImageNet32, 64 for ImageNet64, 256 for
      CelebA-HQ, 64 for CelebA/LSUN/folders).
    n_train: use only the first `n_train` training examples (`None`: all).
    n_test: use only the first `n_test` test examples (`None`: all).
    n_batch_train, n_batch_test, n_batch_init: batch sizes (global).
    shuffle_buffer: shuffle buffer of the training pipeline.
    holdout_fraction: test fraction of an image folder without `test/`.
    seed: seeds the training order and the init batch.
  """
  dataset: str = "cifar10"
  data_dir: Optional[str] = None
  category: Optional[str] = None
  image_size: Optional[int] = None
  n_train: Optional[int] = None
  n_test: Optional[int] = None
  n_batch_train: int = 64
  n_batch_test: int = 50
  n_batch_init: int = 256
  shuffle_buffer: int = 10000
  holdout_fraction: float = 0.05
  seed: int = 0

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ValueError(f"unknown dataset {self.dataset!r}; valid names: {', '.join(DATASETS)}.")
    if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
      raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}.")
    for name in ("n_train", "n_test"):
      v = getattr(self, name)
      if v is not None and (not isinstance(v, int) or v < 1):
        raise ValueError(f"{name} must be a positive integer or unset, got {v!r}.")
    for name in ("n_batch_train", "n_batch_test", "n_batch_init", "shuffle_buffer"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}.")
    if not 0 < self.holdout_fraction < 1:
      raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}.")
    if self.dataset == "lsun" and not self.category and not self.data_dir:
      raise ValueError("dataset lsun needs --category (e.g. bedroom, church_outdoor, tower).")
    if self.dataset == "folder" and not self.data_dir:
      raise ValueError("dataset folder needs --data_dir, a directory of images.")


# ---- Sources: each returns (train, test) tf.data.Datasets of dicts, unbatched ----------


def _read_idx(path):
  with gzip.open(path, "rb") as f:
    data = f.read()
  magic = int.from_bytes(data[:4], "big")
  ndim = magic & 0xFF
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(dims)):
    raise DataError(f"{path}: truncated IDX file ({array.size} of {int(np.prod(dims))} bytes).")
  return array.reshape(dims)


def _idx_dir(config):
  candidates = [config.data_dir] if config.data_dir else []
  candidates.append(DEBIAN_FASHION_MNIST)
  for d in candidates:
    if d and all(os.path.exists(os.path.join(d, f)) for f in sum(IDX_FILES.values(), ())):
      return d
  return None


def _from_idx(directory):
  out = []
  for split in ("train", "test"):
    images, labels = (_read_idx(os.path.join(directory, f)) for f in IDX_FILES[split])
    if images.shape[0] != labels.shape[0]:
      raise DataError(f"{directory}: {split} images and labels differ in count.")
    out.append({"image": images[..., None], "label": labels.astype(np.int32)})
  return out


def _tfds_load(name, config, split_names=("train", "test"), manual_hint=""):
  import tensorflow_datasets as tfds  # only when needed: it is slow to import
  try:
    builder = tfds.builder(name, data_dir=config.data_dir)
    builder.download_and_prepare()
    splits = builder.info.splits
    test_split = split_names[1]
    if splits and test_split not in splits:
      test_split = "validation" if "validation" in splits else "test"
    return (builder.as_dataset(split=split_names[0], shuffle_files=False),
            builder.as_dataset(split=test_split, shuffle_files=False), builder.info)
  except Exception as e:  # noqa: BLE001 - TFDS raises many kinds; we add the fix
    raise DataError(
        f"cannot load TFDS dataset {name!r} ({type(e).__name__}: {str(e)[:300]}). "
        f"{manual_hint or 'TFDS downloads it on first use; this needs network access.'} "
        "Or point --data_dir at OpenAI's TFRecord shards (train/ and validation/ "
        "subfolders of *-rXX-s-*-of-*.tfrecords).") from e


def _num_examples(info, split, ds):
  """Example count from the TFDS metadata, else from the dataset itself."""
  try:
    return info.splits[split].num_examples
  except KeyError:  # no metadata (e.g. under tfds.testing.mock_data)
    n = int(ds.cardinality())
    return n if n >= 0 else int(ds.reduce(0, lambda c, _: c + 1))


def _openai_shards(config):
  if not config.data_dir:
    return None
  found = {}
  for split, folder in (("train", "train"), ("test", "validation")):
    files = sorted(glob.glob(os.path.join(config.data_dir, folder, f"{folder}-r*-s-*-of-*.tfrecords")))
    if not files:
      return None
    found[split] = files
  return found


def _parse_openai(files, image_size):
  """OpenAI's records: shape int64[3], data raw uint8, label int64[1], optional attr int64[40]."""
  # Pick the resolution: rXX = log2(size); default the largest present.
  by_res = {}
  for f in files:
    res = int(os.path.basename(f).split("-r")[1][:2])
    by_res.setdefault(res, []).append(f)
  if image_size:
    res = int(round(math.log2(image_size)))
    if res not in by_res:
      raise DataError(
          f"no OpenAI shards for image size {image_size} (r{res:02d}); found resolutions "
          f"{sorted(2 ** r for r in by_res)}.")
  else:
    res = max(by_res)
  files = by_res[res]
  has_attr = _record_has(files[0], "attr")
  spec = {"shape": tf.io.FixedLenFeature([3], tf.int64),
          "data": tf.io.FixedLenFeature([], tf.string),
          "label": tf.io.FixedLenFeature([1], tf.int64)}
  if has_attr:
    spec["attr"] = tf.io.FixedLenFeature([40], tf.int64)

  def parse(record):
    ex = tf.io.parse_single_example(record, spec)
    out = {"image": tf.reshape(tf.io.decode_raw(ex["data"], tf.uint8), ex["shape"]),
           "label": tf.cast(ex["label"][0], tf.int32)}
    if has_attr:
      out["attr"] = tf.cast(ex["attr"], tf.int32)
    return out

  return tf.data.TFRecordDataset(files).map(parse), has_attr


def _record_has(path, key):
  for raw in tf.data.TFRecordDataset([path]).take(1):
    example = tf.train.Example.FromString(raw.numpy())
    return key in example.features.feature
  return False


def _folder_files(root):
  files = []
  for dirpath, _, names in os.walk(root):
    files += [os.path.join(dirpath, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(files)


def _load_folder_images(files, size, classes, root):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  images, labels = [], []
  for path in files:
    try:
      with Image.open(path) as im:
        im = im.convert("RGB")
        side = min(im.size)
        left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
        images.append(np.asarray(im, np.uint8))
    except (OSError, ValueError) as e:
      raise DataError(f"cannot read image file {path!r} ({e}); remove or replace it.") from e
    rel = os.path.relpath(path, root).split(os.sep)
    labels.append(classes.get(rel[0], 0) if len(rel) > 1 else 0)
  return {"image": np.stack(images), "label": np.asarray(labels, np.int32)}


class ImageDataset:
  """Train and test data of one dataset, with its shape, classes and attributes.

  Attributes:
    image_shape: `[H, W, C]`.
    n_classes: number of label classes, or `None` when unlabelled.
    class_names: names of the classes when known.
    attribute_names: names of the binary attributes (`attr` feature), or `None`.
    num_train, num_test: example counts after `n_train` / `n_test`.
  """

  def __init__(self, config, train, test, image_shape, n_classes=None, class_names=None,
               attribute_names=None, num_train=None, num_test=None, source=""):
    self.config = config
    self._train = train
    self._test = test
    self.image_shape = list(image_shape)
    self.n_classes = n_classes
    self.class_names = class_names
    self.attribute_names = attribute_names
    self.num_train = num_train
    self.num_test = num_test
    self.source = source

  def train_dataset(self, batch_size=None, strategy=None):
    """Shuffled (seeded), repeated global batches of `{'image', 'label'[, 'attr']}`.

    The order depends only on the seed; `skip(n)` resumes at step `n`. The
    strategy (when given) sets auto-sharding so each worker reads its part.
    """
    batch_size = batch_size or self.config.n_batch_train
    ds = self._train.shuffle(min(self.config.shuffle_buffer, self.num_train or 10 ** 9),
                             seed=self.config.seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

  def test_dataset(self, batch_size=None):
    """The test set in a fixed order, each example once, the last batch kept."""
    return self._test.batch(batch_size or self.config.n_batch_test).prefetch(tf.data.AUTOTUNE)

  def init_batch(self, n=None):
    """The first `n` training images in the seeded order (numpy dict), identical on every worker."""
    n = n or self.config.n_batch_init
    ds = self._train.shuffle(min(self.config.shuffle_buffer, self.num_train or 10 ** 9),
                             seed=self.config.seed + 1, reshuffle_each_iteration=False)
    batch = next(iter(ds.batch(n).take(1)))
    return {k: v.numpy() for k, v in batch.items()}

  def labelled_examples(self, split="train", max_examples=None):
    """Unbatched examples in a fixed order, for attribute or class directions."""
    ds = self._train if split == "train" else self._test
    return ds.take(max_examples) if max_examples else ds


def _finish(config, train, test, image_shape, **kwargs):
  """Limits counts, casts and resizes; returns an ImageDataset."""
  num_train, num_test = kwargs.pop("num_train"), kwargs.pop("num_test")
  if config.n_train:
    train, num_train = train.take(config.n_train), min(config.n_train, num_train)
  if config.n_test:
    test, num_test = test.take(config.n_test), min(config.n_test, num_test)
  return ImageDataset(config, train, test, image_shape, num_train=num_train,
                      num_test=num_test, **kwargs)


def _pad_or_resize(ds, native, size, pad_28):
  """Pads 28x28 to 32x32 (MNIST-likes), or resizes to `size`."""
  if pad_28 and native == 28 and size == 32:
    return ds.map(lambda e: {**e, "image": tf.pad(e["image"], [[2, 2], [2, 2], [0, 0]])})
  if size == native:
    return ds
  return ds.map(lambda e: {**e, "image": _resize(e["image"], size)})


def _resize(image, size, crop=None):
  if crop:
    shape = tf.shape(image)
    top, left = (shape[0] - crop) // 2, (shape[1] - crop) // 2
    image = image[top:top + crop, left:left + crop]
  else:  # centre square
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    image = image[top:top + side, left:left + side]
  image = tf.image.resize(image, [size, size], method="area", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _from_tfds_dicts(ds, has_label=True, attr_keys=None):
  def convert(e):
    out = {"image": e["image"], "label": tf.cast(e["label"], tf.int32) if has_label
           else tf.constant(0, tf.int32)}
    if attr_keys:
      out["attr"] = tf.stack([tf.cast(e["attributes"][k], tf.int32) * 2 - 1 for k in attr_keys])
    return out
  return ds.map(convert)


def load(config):
  """Returns the `ImageDataset` for `config`.

  Raises:
    DataError: data missing or unreadable, with instructions to get it.
    ValueError: an image size that does not fit.
  """
  size = config.image_size
  shards = _openai_shards(config)
  if shards:
    train, has_attr = _parse_openai(shards["train"], size)
    test, _ = _parse_openai(shards["test"], size)
    first = next(iter(train.take(1)))["image"].shape.as_list()
    num_train, num_test = (int(d.reduce(0, lambda n, _: n + 1)) for d in (train, test))
    return _finish(config, train, test, first, num_train=num_train, num_test=num_test,
                   attribute_names=list(CELEBA_ATTRIBUTES) if has_attr else None,
                   n_classes=None, source=f"OpenAI TFRecord shards in {config.data_dir}")

  name = config.dataset
  if name in ("mnist", "fashion_mnist"):
    if size not in (None, 28, 32):
      raise ValueError(f"{name} images are 28x28: use image_size 32 (padded, default) or 28.")
    size = size or 32
    idx = _idx_dir(config) if name == "fashion_mnist" else None
    if idx:
      train_np, test_np = _from_idx(idx)
      train = tf.data.Dataset.from_tensor_slices(train_np)
      test = tf.data.Dataset.from_tensor_slices(test_np)
      num_train, num_test, source = len(train_np["label"]), len(test_np["label"]), f"IDX files in {idx}"
    else:
      hint = ("For offline Fashion-MNIST install Debian's dataset-fashion-mnist "
              "(apt-get install dataset-fashion-mnist) or pass --data_dir with the four "
              "IDX .gz files." if name == "fashion_mnist" else "")
      train, test, info = _tfds_load(name, config, manual_hint=hint)
      num_train, num_test = _num_examples(info, "train", train), _num_examples(info, "test", test)
      train, test = _from_tfds_dicts(train), _from_tfds_dicts(test)
      source = "TFDS"
    train, test = (_pad_or_resize(d, 28, size, True) for d in (train, test))
    return _finish(config, train, test, [size, size, 1], n_classes=10,
                   class_names=list(FASHION_MNIST_CLASSES) if name == "fashion_mnist" else
                   [str(i) for i in range(10)], num_train=num_train, num_test=num_test,
                   source=source)

  if name in ("cifar10", "imagenet32", "imagenet64"):
    native = {"cifar10": 32, "imagenet32": 32, "imagenet64": 64}[name]
    size = size or native
    if size > native:
      raise ValueError(f"{name} images are {native}x{native}; image_size {size} is larger.")
    tfds_name = {"cifar10": "cifar10", "imagenet32": "imagenet_resized/32x32",
                 "imagenet64": "imagenet_resized/64x64"}[name]
    hint = ("" if name == "cifar10" else
            "ImageNet needs a manual download: put Imagenet32_train_npz.zip / "
            "Imagenet64_train_npz.zip and the val files from image-net.org into "
            "<data_dir>/downloads/manual/ (see the TFDS imagenet_resized page).")
    train, test, info = _tfds_load(tfds_name, config, ("train", "test" if name == "cifar10" else "validation"), hint)
    n_classes = info.features["label"].num_classes
    num_train = _num_examples(info, "train", train)
    num_test = _num_examples(info, "test" if name == "cifar10" else "validation", test)
    train, test = _from_tfds_dicts(train), _from_tfds_dicts(test)
    train, test = (_pad_or_resize(d, native, size, False) for d in (train, test))
    return _finish(config, train, test, [size, size, 3], n_classes=n_classes,
                   class_names=info.features["label"].names, num_train=num_train,
                   num_test=num_test, source="TFDS " + tfds_name)

  if name == "celeba":
    return _load_celeba(config)

  if name == "lsun":
    size = size or 64
    tfds_name = f"lsun/{config.category}"
    train, test, info = _tfds_load(tfds_name, config, ("train", "validation"))
    conv = lambda e: {"image": _resize(e["image"], size), "label": tf.constant(0, tf.int32)}
    return _finish(config, train.map(conv), test.map(conv), [size, size, 3],
                   num_train=_num_examples(info, "train", train),
                   num_test=_num_examples(info, "validation", test), source="TFDS " + tfds_name)

  return _load_folder(config)


def _load_celeba(config):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  size = config.image_size
  hq_error = None
  if size in (None, 256):
    try:
      builder = tfds.builder("celeb_a_hq/256", data_dir=config.data_dir)
      builder.download_and_prepare()
      train = builder.as_dataset(split="train", shuffle_files=False)
      n = _num_examples(builder.info, "train", train)
      n_test = min(3000, n // 10)  # CelebA-HQ has one split; the original holds out 3000
      conv = lambda e: {"image": e["image"], "label": tf.constant(0, tf.int32)}
      return _finish(config, train.skip(n_test).map(conv), train.take(n_test).map(conv),
                     [256, 256, 3], num_train=n - n_test, num_test=n_test,
                     source="TFDS celeb_a_hq/256")
    except Exception as e:  # noqa: BLE001 - fall back to CelebA
      hq_error = e
  size = size or 64
  hint = ("CelebA-HQ needs a manual download into <data_dir>/downloads/manual/ (see the TFDS "
          "celeb_a_hq page); CelebA (celeb_a) downloads automatically with network access."
          + (f" (celeb_a_hq: {type(hq_error).__name__})" if hq_error else ""))
  train, test, info = _tfds_load("celeb_a", config, manual_hint=hint)
  keys = sorted(info.features["attributes"].keys())

  def conv(e):
    return {"image": _resize(e["image"], size, crop=148), "label": tf.constant(0, tf.int32),
            "attr": tf.stack([tf.cast(e["attributes"][k], tf.int32) * 2 - 1 for k in keys])}

  return _finish(config, train.map(conv), test.map(conv), [size, size, 3],
                 attribute_names=keys, num_train=_num_examples(info, "train", train),
                 num_test=_num_examples(info, "test", test), source="TFDS celeb_a")


def _load_folder(config):
  root = config.data_dir
  if not os.path.isdir(root):
    raise DataError(f"--data_dir {root!r} is not a directory of images.")
  size = config.image_size or 64
  split_dirs = {s: os.path.join(root, s) for s in ("train", "test")}
  if all(os.path.isdir(d) for d in split_dirs.values()):
    train_files, test_files = (_folder_files(split_dirs[s]) for s in ("train", "test"))
    roots = split_dirs
  else:
    files = _folder_files(root)
    rng = np.random.RandomState(1234)  # a fixed split, independent of --seed
    order = rng.permutation(len(files))
    n_test = max(1, int(round(len(files) * config.holdout_fraction)))
    test_files = [files[i] for i in sorted(order[:n_test])]
    train_files = [files[i] for i in sorted(order[n_test:])]
    roots = {"train": root, "test": root}
  if not train_files or not test_files:
    raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root!r}.")
  sub = sorted({os.path.relpath(f, roots["train"]).split(os.sep)[0]
                for f in train_files if os.sep in os.path.relpath(f, roots["train"])})
  classes = {c: i for i, c in enumerate(sub)}
  train_np = _load_folder_images(train_files, size, classes, roots["train"])
  test_np = _load_folder_images(test_files, size, classes, roots["test"])
  return _finish(config, tf.data.Dataset.from_tensor_slices(train_np),
                 tf.data.Dataset.from_tensor_slices(test_np), [size, size, 3],
                 n_classes=len(classes) if len(classes) > 1 else None,
                 class_names=sub if len(classes) > 1 else None,
                 num_train=len(train_files), num_test=len(test_files),
                 source=f"image folder {root}")
