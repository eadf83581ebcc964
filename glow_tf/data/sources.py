"""Sources: IDX files, TFDS, OpenAI's TFRecord shards and image folders; `load`."""

import glob
import gzip
import os
import re
import socket
import threading
import urllib.parse
from typing import Optional

import numpy as np
import tensorflow as tf

from glow_tf.config import DataConfig
from glow_tf.data.catalog import (CELEBA_ATTRIBUTES, DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES,
                                 IDX_FILES, IMAGE_EXTENSIONS, OPENAI_LAYOUT, DataError)
from glow_tf.data.dataset import (ImageDataset, array_split, file_split, tfds_split,
                                  tfrecord_split)

__all__ = ["DOWNLOAD_PROBE_SECONDS", "download_host_error", "load"]

# How long the check that a download host can be reached may take, name lookup included.
DOWNLOAD_PROBE_SECONDS = 3.0
# Where TFDS itself downloads from when a builder does not list its URLs.
_TFDS_HOST = "https://storage.googleapis.com"

_CELEBA_HQ_TEST = 3000  # the original's validation split of CelebA-HQ
_CELEBA_CROP = 148  # RealNVP's CelebA crop
_NATIVE_SIZE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "imagenet32": 32,
                "imagenet64": 64}
_LABELLED = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "imagenet32": 1000,
             "imagenet64": 1000}


# ---- Image helpers ----------------------------------------------------------------------


def _centre_resize(image, size, crop=None):
  """Centre crop (`crop` square, or the largest square) and area-resize to `size`; uint8."""
  shape = tf.shape(image)
  side = crop if crop else tf.minimum(shape[0], shape[1])
  top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
  image = image[top:top + side, left:left + side]
  image = tf.image.resize(image, [size, size], method="area", antialias=True)
  image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return tf.ensure_shape(image, [size, size, None])


def _check_size(name, size, largest):
  if size > largest:
    raise ValueError(f"{name} images are at most {largest}x{largest}; image_size={size} does not "
                     f"fit (use image_size <= {largest}, or unset it for {largest}).")


# ---- MNIST-likes: IDX files or TFDS --------------------------------------------------------


def _read_idx(path, magic):
  try:
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f"cannot read IDX file {path} ({e}); replace it.") from e
  found = int.from_bytes(data[:4], "big")
  if found != magic:
    raise DataError(f"{path} is not an IDX file of this kind (magic {found}, expected {magic}).")
  ndim = magic & 0xFF
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(dims)):
    raise DataError(f"{path}: truncated IDX file ({array.size} of {int(np.prod(dims))} bytes).")
  return array.reshape(dims)


def _idx_path(directory, name):
  """`name` (.gz) or its uncompressed twin in `directory`, or None."""
  for candidate in (name, name[:-3]):
    path = os.path.join(directory, candidate)
    if os.path.isfile(path):
      return path
  return None


def _idx_dir(config):
  candidates = [config.data_dir] if config.data_dir else []
  if config.dataset == "fashion_mnist":
    candidates.append(DEBIAN_FASHION_MNIST)
  for d in candidates:
    if all(_idx_path(d, f) for f in sum(IDX_FILES.values(), ())):
      return d
  return None


def _load_idx(directory, pad):
  splits = []
  for split in ("train", "test"):
    images_file, labels_file = (_idx_path(directory, f) for f in IDX_FILES[split])
    images = _read_idx(images_file, 2051)
    labels = _read_idx(labels_file, 2049)
    if images.shape[0] != labels.shape[0]:
      raise DataError(f"{images_file} holds {images.shape[0]} images but {labels_file} "
                      f"{labels.shape[0]} labels.")
    images = images[..., None]  # [N, 28, 28, 1]
    if pad:
      images = np.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]])  # [N, 32, 32, 1]
    splits.append(array_split({"image": images, "label": labels.astype(np.int32)}))
  return splits


def _load_mnist_like(config):
  name = config.dataset
  if config.image_size not in (None, 28, 32):
    raise ValueError(f"{name} images are 28x28: use image_size=32 (zero-padded, the default) "
                     f"or 28; {config.image_size} does not fit.")
  pad = config.image_size == 32 or (config.image_size is None and config.pad_to_32)
  size = 32 if pad else 28
  classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else [str(i) for i in range(10)]
  directory = _idx_dir(config)
  if directory:
    train, test = _load_idx(directory, pad)
    source = f"IDX files in {directory}"
  else:
    hint = ("For Fashion-MNIST without network access install Debian's package "
            "(apt-get install dataset-fashion-mnist, into /usr/share/datasets/fashion-mnist) "
            "or pass --data_dir with the four IDX .gz files "
            f"({', '.join(sum(IDX_FILES.values(), ()))})." if name == "fashion_mnist" else
            "Or pass --data_dir with MNIST's four IDX .gz files "
            f"({', '.join(sum(IDX_FILES.values(), ()))}).")
    builder = _tfds_builder([name], config, hint)

    def convert(e):
      image = tf.pad(e["image"], [[2, 2], [2, 2], [0, 0]]) if pad else e["image"]
      return {"image": image, "label": tf.cast(e["label"], tf.int32)}
    train, test = (tfds_split(builder, s, convert) for s in ("train", "test"))
    source = f"TFDS {name}"
  return ImageDataset(config, train, test, [size, size, 1], n_classes=10, class_names=classes,
                      source=source)


# ---- Other TFDS datasets -------------------------------------------------------------------


def download_host_error(url: str, timeout: float = DOWNLOAD_PROBE_SECONDS) -> Optional[str]:
  """Why no TCP connection to `url`'s host opens within `timeout` seconds; `None` when one does.

  One attempt (a socket connection to the host's HTTP(S) port, then closed),
  its name lookup included in the time limit: the check before TFDS
  downloads, which without network access retries for minutes.
  """
  parts = urllib.parse.urlsplit(url)
  host = parts.hostname or url
  port = parts.port or (80 if parts.scheme == "http" else 443)
  outcome = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      outcome.append(None)
    except OSError as e:  # name lookup, refused, unreachable, timed out
      outcome.append(f"{type(e).__name__}: {e}")

  # A thread, so that a name lookup that hangs (no timeout of its own) is bounded too.
  thread = threading.Thread(target=connect, name="glow_tf-download-probe", daemon=True)
  thread.start()
  thread.join(timeout)
  return outcome[0] if outcome else f"no connection within {timeout:g} s"


def _download_url(builder) -> Optional[str]:
  """A URL `builder` downloads from (TFDS's checksums), else TFDS's host; `None`: manual data only."""
  try:
    urls = list(builder.url_infos or ())
  except Exception:  # noqa: BLE001 - no checksums file in this TFDS version or builder
    urls = []
  if urls:
    return urls[0]
  if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    return None  # prepared from files the user puts in the manual directory
  return _TFDS_HOST


def _tfds_builder(candidates, config, how_to_get):
  """The first candidate TFDS builder that is prepared, else the first that can be prepared."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel  # slow import
  builders = []
  for name in candidates:
    try:
      builder = tfds.builder(name, data_dir=config.data_dir)
    except Exception as e:  # noqa: BLE001 - unknown name or config in this TFDS version
      raise DataError(f"TFDS cannot build {name!r} ({type(e).__name__}: {e}); "
                      "upgrade tensorflow-datasets.") from e
    if builder.is_prepared():
      return builder
    builders.append(builder)
  root = getattr(builders[0], "data_dir_root", None) or config.data_dir or "~/tensorflow_datasets"
  names = " or ".join(repr(n) for n in candidates)
  shards = f"Or point --data_dir at the original's TFRecord shards: {OPENAI_LAYOUT}."
  if not config.download:
    raise DataError(" ".join(filter(None, [
        f"TFDS dataset {names} is not prepared under {root} and download=False (--nodownload).",
        how_to_get,
        shards])))
  errors = []
  offline = False
  for builder in builders:
    url = _download_url(builder)
    # Checked once, before TFDS starts: without network access its downloads retry for minutes.
    unreachable = download_host_error(url) if url else None
    if unreachable:
      offline = True
      host = urllib.parse.urlsplit(url).hostname or url
      errors.append(f"{builder.name}: its download host {host} cannot be reached ({unreachable}); "
                    "nothing was downloaded")
      continue
    try:
      builder.download_and_prepare()
      return builder
    except Exception as e:  # noqa: BLE001 - TFDS raises many kinds; we add the fix
      first_line = (str(e).strip().splitlines() or [""])[0][:200]
      errors.append(": ".join(filter(None, [builder.name, type(e).__name__, first_line])))
  fix = ("No network access here? Prepare the data where there is "
         "(`tfds build NAME --data_dir=DIR`) and pass --data_dir=DIR, or pass --nodownload to "
         "stop at once without trying." if offline else
         "TFDS downloads need network access; without it, prepare the data elsewhere "
         "(`tfds build NAME --data_dir=DIR`) and pass --data_dir=DIR.")
  raise DataError(" ".join(filter(None, [
      f"TFDS dataset {names} is not prepared under {root} and preparing it failed "
      f"({'; '.join(errors)}).", how_to_get, fix, shards])))


def _manual_dir(config):
  root = config.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return os.path.join(root, "downloads", "manual")


def _tfds_convert(size=None, crop=None, labels=False, attributes=False):
  def convert(e):
    image = e["image"] if size is None else _centre_resize(e["image"], size, crop)
    out = {"image": image,
           "label": tf.cast(e["label"], tf.int32) if labels else tf.constant(0, tf.int32)}
    if attributes:
      out["attr"] = tf.stack([tf.where(e["attributes"][k], 1, -1) for k in CELEBA_ATTRIBUTES])
    return out
  return convert


def _load_small_tfds(config):
  """cifar10, imagenet32, imagenet64: fixed-size images, smaller sizes by area downsampling."""
  name, native = config.dataset, _NATIVE_SIZE[config.dataset]
  size = config.image_size or native
  _check_size(name, size, native)
  if name == "cifar10":
    candidates, test_split, hint = ["cifar10"], "test", ""
  else:
    res = f"{native}x{native}"
    candidates = [f"downsampled_imagenet/{res}", f"imagenet_resized/{res}"]
    test_split = "validation"
    hint = (f"downsampled_imagenet/{res} (van den Oord's, the paper's data) came from "
            f"image-net.org/small; imagenet_resized/{res} from image-net.org/data/downsample "
            f"(both may need an image-net.org account: prepare them where you can download). "
            "The original's imagenet-oord-tfr.tar "
            "(https://openaipublic.azureedge.net/glow-demo/data/imagenet-oord-tfr.tar) "
            "works with --data_dir.")
  builder = _tfds_builder(candidates, config, hint)
  labelled = "label" in builder.info.features.keys()
  convert = _tfds_convert(None if size == native else size, labels=labelled)
  label_feature = builder.info.features["label"] if labelled else None
  return ImageDataset(
      config, tfds_split(builder, "train", convert), tfds_split(builder, test_split, convert),
      [size, size, 3], n_classes=label_feature.num_classes if labelled else None,
      class_names=label_feature.names if labelled else None, source=f"TFDS {builder.name}"
      + (f"/{builder.builder_config.name}" if builder.builder_config else ""))


def _load_celeba(config):
  size = config.image_size
  if size not in (None, 256):
    _check_size("CelebA (celeb_a, cropped to 148x148)", size, _CELEBA_CROP)
  hq_hint = (f"CelebA-HQ (celeb_a_hq/256) needs a manual download: put data2x2.tar ... "
             f"data1024x1024.tar (see TFDS's celeb_a_hq page) into {_manual_dir(config)}.")
  candidates = ["celeb_a_hq/256", "celeb_a"] if size is None else (
      ["celeb_a_hq/256"] if size == 256 else ["celeb_a"])
  builder = _tfds_builder(candidates, config, hq_hint + (
      " CelebA (celeb_a) downloads automatically with network access." if size != 256 else
      f" celeb_a's images are cropped to {_CELEBA_CROP}x{_CELEBA_CROP}, too small for 256."))
  if builder.name == "celeb_a_hq":
    n = tfds_split(builder, "train", None).size
    n_test = min(_CELEBA_HQ_TEST, n // 10)
    convert = _tfds_convert()
    return ImageDataset(config, tfds_split(builder, f"train[{n_test}:]", convert, n - n_test),
                        tfds_split(builder, f"train[:{n_test}]", convert, n_test), [256, 256, 3],
                        source="TFDS celeb_a_hq/256")
  size = size or 64
  missing = set(CELEBA_ATTRIBUTES) - set(builder.info.features["attributes"].keys())
  if missing:
    raise DataError(f"TFDS celeb_a lacks the attributes {sorted(missing)}.")
  convert = _tfds_convert(size, crop=_CELEBA_CROP, attributes=True)
  return ImageDataset(config, tfds_split(builder, "train", convert),
                      tfds_split(builder, "test", convert), [size, size, 3],
                      attribute_names=CELEBA_ATTRIBUTES, source="TFDS celeb_a")


def _load_lsun(config):
  size = config.image_size or 64
  _check_size("LSUN (shorter side 256)", size, 256)
  name = f"lsun/{config.category}"
  builder = _tfds_builder([name], config, f"TFDS {name} downloads from the LSUN site "
                          "(network access; bedroom is ~43 GB).")
  convert = _tfds_convert(size)
  return ImageDataset(config, tfds_split(builder, "train", convert),
                      tfds_split(builder, "validation", convert), [size, size, 3],
                      source=f"TFDS {name}")


# ---- OpenAI's TFRecord shards ------------------------------------------------------------

_SHARD_RE = re.compile(r"-r(\d\d)-s-(\d+)-of-(\d+)\.tfrecords$")


def _shard_files(root, split):
  """{resolution log2: sorted files} of `root/split/split-rXX-s-*-of-*.tfrecords`."""
  found = {}
  for path in glob.glob(os.path.join(root, split, f"{split}-r*-s-*-of-*.tfrecords")):
    m = _SHARD_RE.search(path)
    if m:
      found.setdefault(int(m.group(1)), []).append(path)
  return {res: sorted(files) for res, files in found.items()}


def _find_openai_shards(config):
  """The shard root: `data_dir`, or `data_dir/<category>` as the original's LSUN layout."""
  if not config.data_dir:
    return None
  roots = [config.data_dir]
  if config.category:
    roots.insert(0, os.path.join(config.data_dir, config.category))
  for root in roots:
    if _shard_files(root, "train"):
      return root
  return None


def _first_example(path):
  for raw in tf.data.TFRecordDataset([path]).take(1):
    return tf.train.Example.FromString(raw.numpy()).features.feature
  raise DataError(f"{path} holds no records.")


def _load_openai(config, root):
  train_res, test_res = _shard_files(root, "train"), _shard_files(root, "validation")
  if config.image_size:
    res = int(np.log2(config.image_size))  # as the original: r06 also serves 64 crops of 96
  else:
    native = {"cifar10": 5, "imagenet32": 5, "imagenet64": 6}.get(config.dataset)
    res = native if native in train_res else max(train_res)
  if res not in train_res:
    raise DataError(f"no OpenAI shards for image size {config.image_size} (r{res:02d}) in "
                    f"{root}/train; found resolutions {sorted(2 ** r for r in train_res)}.")
  if res not in test_res:
    raise DataError(f"{root}/validation holds no r{res:02d} shards; the original's layout is "
                    f"{OPENAI_LAYOUT}.")
  for split, files in (("train", train_res[res]), ("validation", test_res[res])):
    expected = int(_SHARD_RE.search(files[0]).group(3))
    if len(files) != expected:
      raise DataError(f"{root}/{split}: {len(files)} of {expected} r{res:02d} shards present; "
                      "download or extract the rest.")
  size = config.image_size or 2 ** res
  first = _first_example(train_res[res][0])
  stored = list(first["shape"].int64_list.value)
  if len(stored) != 3 or min(stored[:2]) < size:
    raise ValueError(f"the r{res:02d} shards hold {stored} images; image_size={size} does not "
                     "fit.")
  channels = stored[2]
  has_attr = "attr" in first and len(first["attr"].int64_list.value) == len(CELEBA_ATTRIBUTES)
  spec = {"shape": tf.io.FixedLenFeature([3], tf.int64),
          "data": tf.io.FixedLenFeature([], tf.string),
          "label": tf.io.FixedLenFeature([1], tf.int64)}
  if has_attr:
    spec["attr"] = tf.io.FixedLenFeature([len(CELEBA_ATTRIBUTES)], tf.int64)

  def parser(training):
    return lambda record, seed: parse(record, training, seed)

  def parse(record, training, seed):
    ex = tf.io.parse_single_example(record, spec)
    image = tf.reshape(tf.io.decode_raw(ex["data"], tf.uint8), ex["shape"])
    if stored[:2] != [size, size]:  # lsun_realnvp: crops of larger images
      if training:
        image = tf.image.stateless_random_crop(image, [size, size, channels], seed=seed)
      else:
        top, left = (tf.shape(image)[0] - size) // 2, (tf.shape(image)[1] - size) // 2
        image = image[top:top + size, left:left + size]
    out = {"image": tf.ensure_shape(image, [size, size, channels]),
           "label": tf.cast(ex["label"][0], tf.int32)}
    if has_attr:
      out["attr"] = tf.cast(ex["attr"], tf.int32)
    return out

  train = tfrecord_split(train_res[res], parser(True))
  test = tfrecord_split(test_res[res], parser(False))
  # Labels: the original writes 0 for unconditional data; look at the first test records.
  labels = [e["label"] for e in test.read().take(256).as_numpy_iterator()]
  n_classes = None
  if labels and max(labels) > 0:
    n_classes = max(_LABELLED.get(config.dataset, 0), max(labels) + 1)
  return ImageDataset(config, train, test, [size, size, channels], n_classes=n_classes,
                      attribute_names=CELEBA_ATTRIBUTES if has_attr else None,
                      source=f"OpenAI TFRecord shards in {root} (r{res:02d})")


# ---- Image folders ------------------------------------------------------------------------


def _folder_files(root):
  files = []
  for dirpath, dirnames, names in os.walk(root, followlinks=True):
    dirnames.sort()
    files += [os.path.join(dirpath, n) for n in sorted(names)
              if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
  return sorted(files)


def _class_of(path, root):
  parts = os.path.relpath(path, root).split(os.sep)
  return parts[0] if len(parts) > 1 else None


def _check_headers(files):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  bad = []
  for path in files:
    try:
      with Image.open(path) as im:
        _ = im.size  # opening reads the header; the pixels are decoded only when used
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
      bad.append(f"{path} ({type(e).__name__}: {e})")
  if bad:
    raise DataError(f"{len(bad)} unreadable image file(s); remove or replace them: "
                    + "; ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))


def _decode_file(path, size):
  """PIL decode, RGB, centre square, resize; errors name the file."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  path = path.decode() if isinstance(path, bytes) else str(path)
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      side = min(im.size)
      left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
      im = im.crop((left, top, left + side, top + side))
      if im.size != (size, size):
        im = im.resize((size, size), Image.LANCZOS if side > size else Image.BICUBIC)
      return np.asarray(im, np.uint8)
  except Exception as e:  # noqa: BLE001
    raise DataError(f"cannot decode image file {path} ({type(e).__name__}: {e}); "
                    "remove or replace it.") from e


def _file_split(files, labels, size):
  def decode_file(path):
    image = tf.numpy_function(lambda p: _decode_file(p, size), [path], tf.uint8, stateful=False)
    return {"image": tf.ensure_shape(image, [size, size, 3])}
  return file_split(files, labels, decode_file)


def _load_folder(config):
  root = config.data_dir
  if not os.path.isdir(root):
    raise DataError(f"--data_dir {root!r} is not a directory of images.")
  size = config.image_size or 64
  split_roots = {s: os.path.join(root, s) for s in ("train", "test")}
  if all(os.path.isdir(d) for d in split_roots.values()):
    files = {s: _folder_files(d) for s, d in split_roots.items()}
  else:
    all_files = _folder_files(root)
    order = np.random.RandomState(1234).permutation(len(all_files))  # fixed, not --seed
    n_test = max(1, int(round(len(all_files) * config.holdout_fraction)))
    files = {"test": [all_files[i] for i in sorted(order[:n_test])],
             "train": [all_files[i] for i in sorted(order[n_test:])]}
    split_roots = {"train": root, "test": root}
  if not files["train"] or not files["test"]:
    raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found for both train and test "
                    f"under {root!r} ({len(files['train'])} train, {len(files['test'])} test).")
  _check_headers(files["train"] + files["test"])
  classes = {s: [_class_of(f, split_roots[s]) for f in files[s]] for s in files}
  names = sorted(set(classes["train"]) - {None})
  labelled = len(names) > 1 and None not in classes["train"] + classes["test"]
  if labelled:
    unknown = sorted(set(classes["test"]) - set(names))
    if unknown:
      raise DataError(f"test images in class folders {unknown} that train/ does not have.")
    index = {c: i for i, c in enumerate(names)}
    labels = {s: [index[c] for c in classes[s]] for s in files}
  else:
    labels = {s: [0] * len(files[s]) for s in files}
  return ImageDataset(config, _file_split(files["train"], labels["train"], size),
                      _file_split(files["test"], labels["test"], size), [size, size, 3],
                      n_classes=len(names) if labelled else None,
                      class_names=names if labelled else None, source=f"image folder {root}")


# ---- Entry point ---------------------------------------------------------------------------


def load(config: DataConfig) -> ImageDataset:
  """Returns the `ImageDataset` for `config` (sources and their order: module docstring).

  Args:
    config: a `DataConfig`.

  Raises:
    DataError: data missing or unreadable; the message says how to get or fix it.
    ValueError: an image size that does not fit the data.
  """
  root = _find_openai_shards(config)
  if root:
    return _load_openai(config, root)
  if config.data_dir and os.path.isdir(os.path.join(config.data_dir, "train")) and (
      glob.glob(os.path.join(config.data_dir, "train", "*.tfrecords"))):
    raise DataError(f"{config.data_dir}/train holds .tfrecords files not named as the "
                    f"original's shards; expected {OPENAI_LAYOUT}.")
  loaders = {"mnist": _load_mnist_like, "fashion_mnist": _load_mnist_like,
             "cifar10": _load_small_tfds, "imagenet32": _load_small_tfds,
             "imagenet64": _load_small_tfds, "celeba": _load_celeba, "lsun": _load_lsun,
             "folder": _load_folder}
  return loaders[config.dataset](config)
