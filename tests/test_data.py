"""Datasets: offline Fashion-MNIST, TFDS paths (mocked), OpenAI shards, folders, sharding."""

import gzip
import os
import socket
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from glow_tf import data
from tests.synthetic_data import FASHION_MNIST_DIR

HAVE_FMNIST = all(os.path.exists(os.path.join(data.DEBIAN_FASHION_MNIST, f))
                  for f in sum(data.IDX_FILES.values(), ()))
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST, reason="needs Debian's dataset-fashion-mnist (scripts/setup.sh installs it)")


class _Connection:
  def close(self):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """The tests never open a connection: the check that a download host answers says it does."""
  monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _Connection())


def _unreachable(monkeypatch, calls=None):
  """No network: every connection fails at once, as without a route (recorded in `calls`)."""
  def create_connection(address, *args, **kwargs):
    if calls is not None:
      calls.append(address)
    raise OSError(101, "Network is unreachable")
  monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.fixture(scope="module")
def fmnist():
  """Fashion-MNIST from the Debian IDX files, decoded once for the module."""
  return data.load(data.DataConfig(dataset="fashion_mnist"))


@pytest.fixture(scope="module")
def fmnist_test(fmnist):
  return _all(fmnist.test_dataset(2000))


def _all(ds):
  """Concatenated numpy arrays of a finite batched dataset."""
  out = {}
  for batch in ds.as_numpy_iterator():
    for k, v in batch.items():
      out.setdefault(k, []).append(v)
  return {k: np.concatenate(v) for k, v in out.items()}


def _local(strategy, tensor):
  return [t.numpy() for t in strategy.experimental_local_results(tensor)]


# ---- Fashion-MNIST from Debian's IDX files -----------------------------------------------


@needs_fmnist
def test_fashion_mnist_from_debian_idx_files(fmnist, fmnist_test):
  assert fmnist.source == f"IDX files in {data.DEBIAN_FASHION_MNIST}"
  assert fmnist.image_shape == [32, 32, 1] and fmnist.n_classes == 10
  assert fmnist.class_names[1] == "Trouser" and fmnist.attribute_names is None
  assert (fmnist.num_train, fmnist.num_test) == (60000, 10000)
  images, labels = fmnist_test["image"], fmnist_test["label"]
  assert images.shape == (10000, 32, 32, 1) and images.dtype == np.uint8
  assert labels.dtype == np.int32 and np.bincount(labels).tolist() == [1000] * 10
  assert images.min() == 0 and images.max() == 255
  # Zero-padded 28 -> 32 as the original: a 2-pixel empty border.
  assert images[:, :2].max() == 0 and images[:, -2:].max() == 0
  assert images[:, :, :2].max() == 0 and images[:, :, -2:].max() == 0
  assert 60 < images[:, 2:30, 2:30].mean() < 90
  batch = next(iter(fmnist.train_dataset(64, seed=0)))
  assert batch["image"].shape == [64, 32, 32, 1] and batch["image"].dtype == tf.uint8
  assert batch["label"].shape == [64] and batch["label"].dtype == tf.int32


@needs_fmnist
def test_fashion_mnist_train_split_is_complete(fmnist):
  train = _all(fmnist.labelled_examples("train").batch(20000))
  assert train["image"].shape == (60000, 32, 32, 1)
  assert np.bincount(train["label"]).tolist() == [6000] * 10


@needs_fmnist
def test_fashion_mnist_unpadded_from_a_data_dir_keeps_the_last_batch(tmp_path, fmnist_test):
  for name in sum(data.IDX_FILES.values(), ()):
    os.symlink(os.path.join(data.DEBIAN_FASHION_MNIST, name), tmp_path / name)
  d = data.load(data.DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path),
                                pad_to_32=False, n_test=100))
  assert d.source == f"IDX files in {tmp_path}" and d.image_shape == [28, 28, 1]
  got = _all(d.test_dataset(30))  # 30 + 30 + 30 + 10
  assert got["image"].shape == (100, 28, 28, 1) and d.num_test == 100
  np.testing.assert_array_equal(got["image"], fmnist_test["image"][:100, 2:30, 2:30])


def _write_idx(directory, arrays, compress=True):
  for split, (images, labels) in arrays.items():
    for name, a, magic in zip(data.IDX_FILES[split], (images, labels), (2051, 2049)):
      blob = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape)
      blob += a.astype(np.uint8).tobytes()
      if compress:
        with gzip.open(directory / name, "wb") as f:
          f.write(blob)
      else:
        (directory / name[:-3]).write_bytes(blob)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_are_parsed_exactly(tmp_path, compress):
  rng = np.random.RandomState(0)
  arrays = {"train": (rng.randint(0, 256, [7, 28, 28]), rng.randint(0, 10, [7])),
            "test": (rng.randint(0, 256, [3, 28, 28]), rng.randint(0, 10, [3]))}
  _write_idx(tmp_path, arrays, compress)
  d = data.load(data.DataConfig(dataset="mnist", data_dir=str(tmp_path), image_size=28))
  got = _all(d.test_dataset(2))
  np.testing.assert_array_equal(got["image"][..., 0], arrays["test"][0])
  np.testing.assert_array_equal(got["label"], arrays["test"][1])
  assert (d.num_train, d.num_test) == (7, 3)


def test_truncated_idx_file_names_the_file(tmp_path):
  arrays = {s: (np.zeros([4, 28, 28]), np.zeros([4])) for s in ("train", "test")}
  _write_idx(tmp_path, arrays)
  with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
    f.write((2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (4, 28, 28)))
  with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz: truncated"):
    data.load(data.DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path)))


# ---- TFDS (mocked: no network) ------------------------------------------------------------


@pytest.mark.parametrize("name, size, shape, n_classes", [
    ("mnist", None, [32, 32, 1], 10), ("mnist", 28, [28, 28, 1], 10),
    ("cifar10", None, [32, 32, 3], 10), ("cifar10", 16, [16, 16, 3], 10)])
def test_tfds_paths_with_mock_data(name, size, shape, n_classes):
  with tfds.testing.mock_data(num_examples=12):
    d = data.load(data.DataConfig(dataset=name, image_size=size))
    assert d.source == f"TFDS {name}"
    assert d.image_shape == shape and d.n_classes == n_classes
    batch = next(iter(d.train_dataset(4, seed=0)))
    assert batch["image"].shape == [4] + shape and batch["image"].dtype == tf.uint8
    assert batch["label"].dtype == tf.int32
    got = _all(d.test_dataset(5))
    assert got["image"].shape[0] == d.num_test == 12 and got["label"].max() < n_classes
    if name == "mnist" and size is None:
      assert got["image"][:, :2].max() == 0  # padded


def test_celeba_hq_with_mock_data():
  with tfds.testing.mock_data(num_examples=20):
    d = data.load(data.DataConfig(dataset="celeba"))
    assert d.source == "TFDS celeb_a_hq/256" and d.image_shape == [256, 256, 3]
    assert d.attribute_names is None and d.n_classes is None
    assert d.num_test == 2  # a tenth of a small set; 3000 of the real one
    assert next(iter(d.test_dataset(2)))["image"].shape == [2, 256, 256, 3]


def _failing_for(*names):
  """A download_and_prepare that fails (as without the manual files) for `names`."""
  original = tfds.core.DatasetBuilder.download_and_prepare

  def download_and_prepare(self, *args, **kwargs):
    if self.name in names:
      raise AssertionError(f"Manual directory {self.name} does not exist or is empty.")
    return original(self, *args, **kwargs)
  return mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                           download_and_prepare)


def test_celeba_falls_back_to_celeb_a_with_attributes():
  with tfds.testing.mock_data(num_examples=20), _failing_for("celeb_a_hq"):
    d = data.load(data.DataConfig(dataset="celeba"))  # CelebA-HQ missing
    assert d.source == "TFDS celeb_a" and d.image_shape == [64, 64, 3]
    assert d.attribute_names == list(data.CELEBA_ATTRIBUTES) and d.attribute_names[31] == "Smiling"
    batch = next(iter(d.train_dataset(4, seed=0)))
    assert batch["image"].shape == [4, 64, 64, 3] and batch["attr"].shape == [4, 40]
    assert set(np.unique(batch["attr"].numpy())) <= {-1, 1}
    example = next(iter(d.labelled_examples("test")))
    assert example["attr"].shape == [40] and example["label"].numpy() == 0
    small = data.load(data.DataConfig(dataset="celeba", image_size=32))
    assert small.image_shape == [32, 32, 3] and small.source == "TFDS celeb_a"
    with pytest.raises(data.DataError, match="downloads/manual"):
      data.load(data.DataConfig(dataset="celeba", image_size=256))  # no upsampling of 148


def test_failed_tfds_download_says_how_to_get_the_data(tmp_path):
  # No network (and no manual files): TFDS's download fails; we say what to do.
  with _failing_for("cifar10", "downsampled_imagenet", "imagenet_resized", "fashion_mnist"):
    with pytest.raises(data.DataError, match="not prepared under .*tfds build"):
      data.load(data.DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    with pytest.raises(data.DataError, match="imagenet-oord-tfr"):
      data.load(data.DataConfig(dataset="imagenet32", data_dir=str(tmp_path)))
    if not HAVE_FMNIST:
      with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.load(data.DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path)))
  with pytest.raises(data.DataError, match="download=False"):
    data.load(data.DataConfig(dataset="mnist", data_dir=str(tmp_path), download=False))


def test_a_tfds_download_without_network_fails_at_once_saying_what_to_do(tmp_path, monkeypatch):
  probed, downloads = [], []
  _unreachable(monkeypatch, probed)
  with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                         side_effect=lambda *a, **k: downloads.append(1)):
    start = time.time()
    with pytest.raises(data.DataError) as raised:
      data.load(data.DataConfig(dataset="cifar10", data_dir=str(tmp_path / "tfds")))
  assert time.time() - start < 10
  assert downloads == []  # TFDS never started (its retries take minutes)
  assert probed == [("www.cs.toronto.edu", 443)]  # once, the host of cifar10's download
  message = str(raised.value)
  assert "cifar10: its download host www.cs.toronto.edu cannot be reached" in message
  assert "Network is unreachable" in message
  assert "--data_dir=DIR" in message and "--nodownload" in message, message


def test_a_download_host_that_does_not_answer_is_given_up_after_the_timeout(monkeypatch):
  monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(5))
  start = time.time()
  assert data.download_host_error("https://example.invalid/x.tar", timeout=0.2) == (
      "no connection within 0.2 s")
  assert time.time() - start < 2
  assert data.DOWNLOAD_PROBE_SECONDS <= 5


def test_the_celeba_command_offline_fails_at_once_with_each_sources_fix(tmp_path, monkeypatch):
  """The design card's `train.py --dataset=celeba --n_levels=6` without the data or a network."""
  from glow_tf import train_lib
  probed = []
  _unreachable(monkeypatch, probed)
  logdir = tmp_path / "run"
  config = _train_config(["--dataset=celeba", "--n_levels=6", f"--data_dir={tmp_path / 'tfds'}",
                          f"--logdir={logdir}"])
  assert config.data.download
  start = time.time()
  with _failing_for("celeb_a_hq"), pytest.raises(data.DataError) as raised:
    train_lib.prepare(config)
  assert time.time() - start < 30
  assert [host for host, _ in probed] == ["drive.google.com"]  # celeb_a's; celeb_a_hq is manual
  message = str(raised.value)
  assert "downloads/manual" in message  # CelebA-HQ: where its files go
  assert "celeb_a: its download host drive.google.com cannot be reached" in message
  assert "--nodownload" in message and "--data_dir" in message
  assert not logdir.exists()


def test_train_flags_nodownload_stops_without_trying(tmp_path, monkeypatch):
  probed = []
  _unreachable(monkeypatch, probed)
  assert _train_config([]).data.download is True
  config = _train_config(["--dataset=mnist", f"--data_dir={tmp_path}", "--nodownload"])
  assert config.data.download is False
  with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                         side_effect=AssertionError("a download was attempted")):
    with pytest.raises(data.DataError, match=r"download=False \(--nodownload\)"):
      data.load(config.data)
  assert probed == []


@needs_fmnist
def test_fashion_mnist_never_touches_tfds_when_the_debian_files_exist(tmp_path):
  with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                         side_effect=AssertionError("network access attempted")):
    d = data.load(data.DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path), n_test=10))
  assert d.source.startswith("IDX files")


# ---- OpenAI's TFRecord shards ---------------------------------------------------------------


def _feature(values=None, raw=None):
  if raw is not None:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw]))
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _write_openai_shards(root, n, sizes=(8,), shape=None, n_shards=2, label_max=5,
                         attr=True, folders=("train", "validation")):
  """The original's layout; returns {folder: (images at sizes[0], labels, attrs)}."""
  rng = np.random.RandomState(1)
  written = {}
  for folder in folders:
    os.makedirs(root / folder, exist_ok=True)
    labels = rng.randint(0, label_max, [n]) if label_max else np.zeros([n], int)
    attrs = rng.choice([-1, 1], [n, 40])
    for size in sizes:
      images = rng.randint(0, 256, [n] + list(shape or (size, size, 3))).astype(np.uint8)
      written.setdefault(folder, (images, labels, attrs))
      res = int(np.log2(size))
      for shard in range(n_shards):
        path = root / folder / f"{folder}-r{res:02d}-s-{shard:04d}-of-{n_shards:04d}.tfrecords"
        with tf.io.TFRecordWriter(str(path)) as w:
          for i in range(shard, n, n_shards):
            feature = {"shape": _feature(images[i].shape),
                       "data": _feature(raw=images[i].tobytes()),
                       "label": _feature([labels[i]])}
            if attr is not None:
              feature["attr"] = _feature(attrs[i] if attr else [])
            w.write(tf.train.Example(features=tf.train.Features(feature=feature))
                    .SerializeToString())
  return written


def _by_bytes(batches):
  return {img.tobytes(): (lab, att.tolist() if att is not None else None)
          for img, lab, att in zip(batches["image"], batches["label"],
                                   batches.get("attr", [None] * len(batches["label"])))}


def test_openai_shards_read_back_bit_exactly(tmp_path):
  written = _write_openai_shards(tmp_path, 7, sizes=(8, 4))  # r03 and r02, as celeba-tfr
  d = data.load(data.DataConfig(dataset="celeba", data_dir=str(tmp_path)))
  assert d.source == f"OpenAI TFRecord shards in {tmp_path} (r03)"
  assert d.image_shape == [8, 8, 3] and (d.num_train, d.num_test) == (7, 7)
  assert d.attribute_names[31] == "Smiling" and d.n_classes == 5
  for split, folder in (("test", "validation"), ("train", "train")):
    images, labels, attrs = written[folder]
    got = _by_bytes(_all(d.labelled_examples(split).batch(3)))
    assert got == {img.tobytes(): (lab, att.tolist()) for img, lab, att in
                   zip(images, labels, attrs)}
  assert len(_all(d.test_dataset(4))["image"]) == 7  # 4 + 3: remainder kept
  small = data.load(data.DataConfig(dataset="celeba", data_dir=str(tmp_path), image_size=4))
  assert small.image_shape == [4, 4, 3] and small.source.endswith("(r02)")
  with pytest.raises(data.DataError, match="no OpenAI shards for image size 16"):
    data.load(data.DataConfig(dataset="celeba", data_dir=str(tmp_path), image_size=16))


def test_openai_unconditional_shards_with_empty_attr(tmp_path):
  # imagenet-oord-tfr style: label 0, attr written as an empty list.
  _write_openai_shards(tmp_path, 4, sizes=(4,), label_max=0, attr=False)
  d = data.load(data.DataConfig(dataset="imagenet32", data_dir=str(tmp_path)))
  assert d.n_classes is None and d.attribute_names is None and d.image_shape == [4, 4, 3]
  batch = next(iter(d.train_dataset(3, seed=0)))
  assert set(batch) == {"image", "label"} and batch["image"].shape == [3, 4, 4, 3]


def test_openai_lsun_layout_crops_larger_images(tmp_path):
  # lsun_realnvp: <data_dir>/<category>/..., 6x7 images in r02 shards, cropped to 4x4.
  written = _write_openai_shards(tmp_path / "tower", 5, sizes=(4,), shape=(6, 7, 3),
                                 label_max=0, attr=None)
  d = data.load(data.DataConfig(dataset="lsun", category="tower", data_dir=str(tmp_path)))
  assert d.image_shape == [4, 4, 3]
  test = _all(d.test_dataset(5))["image"]
  np.testing.assert_array_equal(np.sort(test.reshape(5, -1), 0),
                                np.sort(written["validation"][0][:, 1:5, 1:5].reshape(5, -1), 0))
  assert next(iter(d.train_dataset(2, seed=0)))["image"].shape == [2, 4, 4, 3]


def test_openai_missing_shards(tmp_path):
  _write_openai_shards(tmp_path, 4, n_shards=2)
  os.remove(tmp_path / "train" / "train-r03-s-0001-of-0002.tfrecords")
  with pytest.raises(data.DataError, match="1 of 2 r03 shards"):
    data.load(data.DataConfig(dataset="celeba", data_dir=str(tmp_path)))
  other = tmp_path / "x"
  _write_openai_shards(other, 4, folders=("train",))
  with pytest.raises(data.DataError, match="validation holds no r03 shards"):
    data.load(data.DataConfig(dataset="celeba", data_dir=str(other)))


# ---- Image folders --------------------------------------------------------------------------


def _write_folder(root, with_splits, classes=("cats", "dogs"), n=5):
  rng = np.random.RandomState(2)
  arrays = {}
  for split in (("train", "test") if with_splits else ("",)):
    for cls in classes:
      d = root / split / cls
      os.makedirs(d)
      for i in range(n):
        array = rng.randint(0, 256, [16, 20, 3]).astype(np.uint8)
        path = d / f"{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(array).save(path)
        arrays[str(path)] = array
  return arrays


@pytest.mark.parametrize("with_splits", [True, False])
def test_image_folder(tmp_path, with_splits):
  arrays = _write_folder(tmp_path, with_splits)
  d = data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16,
                                holdout_fraction=0.2))
  assert d.image_shape == [16, 16, 3] and d.n_classes == 2 and d.class_names == ["cats", "dogs"]
  assert (d.num_train, d.num_test) == ((10, 10) if with_splits else (8, 2))
  got = _all(d.test_dataset(3))
  assert got["image"].shape == (d.num_test, 16, 16, 3) and got["image"].dtype == np.uint8
  assert set(got["label"].tolist()) <= {0, 1}
  # PNGs are lossless: centre 16x16 crops come back exactly.
  pngs = {a[:, 2:18].tobytes() for p, a in arrays.items() if p.endswith(".png")}
  train = _all(d.labelled_examples("train").batch(20))["image"]
  assert len(pngs & {x.tobytes() for x in np.concatenate([train, got["image"]])}) == len(pngs)


def test_unlabelled_folder_resizes(tmp_path):
  for i in range(4):
    Image.fromarray(np.full([40, 30], 60 * i, np.uint8)).save(tmp_path / f"{i}.png")
  d = data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path), holdout_fraction=0.25))
  assert d.n_classes is None and d.image_shape == [64, 64, 3]
  images = _all(d.test_dataset(50))["image"]
  assert images.shape == (1, 64, 64, 3) and len(np.unique(images)) == 1  # gray stays flat


def test_corrupt_image_header_fails_at_load_with_the_file_name(tmp_path):
  _write_folder(tmp_path, True)
  (tmp_path / "train" / "cats" / "broken.png").write_bytes(b"not an image")
  with pytest.raises(data.DataError, match=r"1 unreadable image file.*broken\.png"):
    data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16))


def test_damaged_pixel_data_fails_with_the_file_name(tmp_path):
  _write_folder(tmp_path, True)
  good = (tmp_path / "test" / "cats" / "1.png").read_bytes()
  (tmp_path / "test" / "cats" / "1.png").write_bytes(good[:len(good) // 2])  # header intact
  d = data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16))
  with pytest.raises(tf.errors.OpError, match=r"cats/1\.png"):
    _all(d.test_dataset(4))


def test_empty_folder(tmp_path):
  with pytest.raises(data.DataError, match="no images"):
    data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path)))


# ---- Distribution -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
  """64 training and 45 test images of Fashion-MNIST (Debian's, or the tests' own)."""
  return data.load(data.DataConfig(dataset="fashion_mnist", data_dir=FASHION_MNIST_DIR,
                                   train_subset=64, n_test=45))


def test_two_replicas_partition_the_global_batch(small, two_replicas):
  dist = iter(two_replicas.experimental_distribute_dataset(small.train_dataset(16, seed=5)))
  global_batches = iter(small.train_dataset(16, seed=5))
  for _ in range(5):  # crosses an epoch boundary (64 examples)
    per_replica = next(dist)
    expected = next(global_batches)
    for key in ("image", "label"):
      shards = _local(two_replicas, per_replica[key])
      assert [s.shape[0] for s in shards] == [8, 8]
      np.testing.assert_array_equal(np.concatenate(shards), expected[key].numpy())


def test_two_replicas_cover_the_test_set_exactly_once(small, two_replicas):
  expected = _all(small.test_dataset(45))["image"]
  seen = [x.tobytes() for batch in two_replicas.experimental_distribute_dataset(
      small.test_dataset(10)) for shard in _local(two_replicas, batch["image"]) for x in shard]
  assert len(seen) == 45 and sorted(seen) == sorted(x.tobytes() for x in expected)


# ---- Init batch and errors ------------------------------------------------------------------


def test_init_batch_is_deterministic_and_depends_on_the_seed(small):
  again = data.load(small.config)
  first = small.init_batch(32, seed=5)
  assert first["image"].shape == (32, 32, 32, 1) and first["label"].dtype == np.int32
  np.testing.assert_array_equal(first["image"], again.init_batch(32, seed=5)["image"])
  assert not np.array_equal(first["image"], small.init_batch(32, seed=6)["image"])
  assert len({x.tobytes() for x in first["image"]}) == 32  # no repeats
  assert small.init_batch(500, seed=5)["image"].shape[0] == 64  # at most the training set
  first_label = lambda d, seed: next(iter(d.train_dataset(8, seed)))["label"].numpy()
  np.testing.assert_array_equal(first_label(small, 5), first_label(again, 5))
  assert not np.array_equal(first_label(small, 5), first_label(small, 6))


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="svhn"), "unknown dataset 'svhn'; valid names: mnist, fashion_mnist, cifar10"),
    (dict(dataset="lsun"), "--category"),
    (dict(dataset="folder"), "--data_dir"),
    (dict(dataset="fashion_mnist", image_size=64), "28x28.*64 does not fit"),
    (dict(dataset="fashion_mnist", image_size=32, pad_to_32=False), "pad_to_32"),
    (dict(dataset="cifar10", image_size=64), "at most 32x32; image_size=64 does not fit"),
    (dict(dataset="celeba", image_size=200), "148x148; image_size=200 does not fit"),
    (dict(dataset="lsun", category="tower", image_size=512), "image_size=512 does not fit"),
    (dict(dataset="mnist", train_subset=0), "train_subset must be a positive integer"),
    (dict(dataset="mnist", shuffle_buffer=2.5), "shuffle_buffer must be a positive integer"),
    (dict(dataset="mnist", holdout_fraction=1), "holdout_fraction"),
])
def test_bad_configs(kwargs, message):
  with pytest.raises(ValueError, match=message):
    data.load(data.DataConfig(**kwargs))


def test_missing_folder(tmp_path):
  with pytest.raises(data.DataError, match="is not a directory"):
    data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path / "nope")))


# ---- Resuming the training pipeline ---------------------------------------------------------


def _counting_dataset(n, shuffle_buffer):
  """An ImageDataset of `n` tiny examples whose decoding is counted (`decoded[0]`)."""
  from glow_tf.data.dataset import ImageDataset, Split
  decoded = [0]

  def count(x):
    decoded[0] += 1
    return x

  def decode(raw, unused_seed):
    image = tf.numpy_function(count, [raw["image"]], tf.uint8, stateful=True)
    return {"image": tf.ensure_shape(image, [2, 2, 1]), "label": raw["label"]}

  images = np.arange(n * 4, dtype=np.int64).reshape(n, 2, 2, 1).astype(np.uint8)
  arrays = {"image": images, "label": np.arange(n, dtype=np.int32)}
  split = Split(lambda unused_seed: tf.data.Dataset.from_tensor_slices(arrays), n, decode)
  config = data.DataConfig(dataset="folder", data_dir="unused", shuffle_buffer=shuffle_buffer)
  return ImageDataset(config, split, split, [2, 2, 1]), decoded


@pytest.mark.parametrize("start_step", [0, 7, 500])
def test_train_pipeline_resumes_at_a_step_without_decoding_what_it_skips(start_step):
  ds, decoded = _counting_dataset(40, shuffle_buffer=16)
  batch = 4
  reference = [b["label"].numpy() for b in ds.train_dataset(batch, seed=3).take(start_step + 2)]
  decoded[0] = 0
  resumed = ds.train_dataset(batch, seed=3, start_step=start_step)
  resumed = [b["label"].numpy() for b in resumed.take(2)]
  for a, b in zip(reference[start_step:], resumed):
    np.testing.assert_array_equal(a, b)
  # Only what is kept is decoded (and what prefetching reads ahead): not start_step batches.
  assert decoded[0] <= 2 * batch + 64, decoded[0]


# ---- The init batch and augmentation (the original's --dal) -----------------------------------


def test_init_batch_is_drawn_from_the_whole_training_set(tmp_path):
  # Class-sorted folders: the first stored examples are all of class 0.
  _write_folder(tmp_path, with_splits=True, classes=("a", "b"), n=40)
  d = data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16,
                                shuffle_buffer=8))
  batch = d.init_batch(8, seed=0)
  assert batch["image"].shape == (8, 16, 16, 3)
  assert set(batch["label"].tolist()) == {0, 1}
  again = d.init_batch(8, seed=0)
  np.testing.assert_array_equal(batch["image"], again["image"])
  other = d.init_batch(8, seed=1)
  assert not np.array_equal(batch["image"], other["image"])
  assert d.init_batch(500, seed=0)["image"].shape[0] == 80  # at most the training set


def _keras_matrix(draws, level, h, w):
  """Keras' ImageDataGenerator.random_transform matrix (2018), from the draws, in numpy."""
  u = lambda x, lo, hi: lo + (hi - lo) * x
  tx, ty = u(draws[1], -.1, .1) * h, u(draws[2], -.1, .1) * w
  m = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
  if level == 2:
    theta = np.deg2rad(u(draws[0], -15, 15))
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                    [0, 0, 1]])
    shear = u(draws[3], -.02, .02)
    sh = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.diag([u(draws[4], .9, 1.1), u(draws[5], .9, 1.1), 1.])
    m = rot @ m @ sh @ zoom
  ox, oy = h / 2 + .5, w / 2 + .5
  return (np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ m
          @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]]))


def _bilinear_nearest(image, m):
  """scipy.ndimage.affine_transform(order=1, mode='nearest') per channel, floored to uint8."""
  h, w, _ = image.shape
  r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  rin = np.clip(m[0, 0] * r + m[0, 1] * c + m[0, 2], 0, h - 1)
  cin = np.clip(m[1, 0] * r + m[1, 1] * c + m[1, 2], 0, w - 1)
  r0, c0 = np.floor(rin).astype(int), np.floor(cin).astype(int)
  r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
  fr, fc = (rin - r0)[..., None], (cin - c0)[..., None]
  x = image.astype(np.float64)
  out = ((1 - fr) * (1 - fc) * x[r0, c0] + (1 - fr) * fc * x[r0, c1] + fr * (1 - fc) * x[r1, c0]
         + fr * fc * x[r1, c1])
  return np.clip(np.floor(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("level", [1, 2])
def test_augmentation_is_the_originals_keras_transform(level):
  from glow_tf.data import augmentation
  rng = np.random.RandomState(level)
  image = rng.randint(0, 256, [32, 32, 3]).astype(np.uint8)
  for k in range(4):
    seed = tf.constant([7, k], tf.int64)
    got = augmentation.augment(tf.constant(image), level, seed).numpy()
    draws = tf.random.stateless_uniform([7], seed=seed).numpy().astype(np.float64)
    want = _bilinear_nearest(image, _keras_matrix(draws, level, 32, 32))
    if level == 2 and draws[6] < .5:
      want = want[:, ::-1]
    # float32 against float64 arithmetic: a floor may land one level apart.
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert np.mean(got != want) < 0.02
    assert not np.array_equal(got, image)  # it moved


def test_augmented_training_resumes_exactly_and_differs_from_plain():
  base = dict(dataset="fashion_mnist", data_dir=FASHION_MNIST_DIR, train_subset=64)
  augmented = data.load(data.DataConfig(**base))  # --dal=1 by default, as the original
  plain = data.load(data.DataConfig(**base, dal=0))
  assert augmented.augmentation_level == 1 and plain.augmentation_level == 0
  whole = [b["image"].numpy() for b in augmented.train_dataset(16, seed=3).take(6)]
  resumed = [b["image"].numpy() for b in augmented.train_dataset(16, seed=3, start_step=4).take(2)]
  for a, b in zip(whole[4:], resumed):
    np.testing.assert_array_equal(a, b)
  unaugmented = [b["image"].numpy() for b in plain.train_dataset(16, seed=3).take(6)]
  assert not np.array_equal(whole[0], unaugmented[0])
  # Same images, shifted: the same total ink up to the shifted-out border.
  assert abs(whole[0].astype(float).mean() - unaugmented[0].astype(float).mean()) < 5


def _train_config(argv):
  from absl import flags
  from flags import glow_flags
  values = flags.FlagValues()
  glow_flags.define_flags(values)
  values(["train.py"] + argv)
  return glow_flags.config_from_flags(values)


def test_the_celeba_command_takes_celeba_hq_with_the_originals_sizes(tmp_path):
  import io
  from glow_tf import train_lib
  logdir = tmp_path / "run"
  config = _train_config(["--dataset=celeba", "--n_levels=6", "--depth=1", "--width=8",
                          "--n_test=4", f"--logdir={logdir}"])
  stream = io.StringIO()
  with tfds.testing.mock_data(num_examples=30):
    trainer = train_lib.prepare(config, stream=stream)
  out = stream.getvalue()
  assert "data: TFDS celeb_a_hq/256, 256x256" in out, out
  assert ("schedule: 1 images of 256x256 a step (64 anchored at 32x32) on 1 replica(s), 782 "
          "steps per epoch of 50000 anchored images, warmup 7813 steps") in out
  assert "init on 4 images" in out and "initialised actnorm on 4 training images" in out
  assert trainer.config.model.image_shape == (256, 256, 3)
  trainer.release_lock()


def test_the_celeba_command_without_data_says_how_to_get_each_source(tmp_path):
  from glow_tf import train_lib
  logdir = tmp_path / "run"
  config = _train_config(["--dataset=celeba", "--n_levels=6", f"--data_dir={tmp_path / 'tfds'}",
                          f"--logdir={logdir}"])
  with _failing_for("celeb_a_hq", "celeb_a"):
    with pytest.raises(data.DataError) as raised:
      train_lib.prepare(config)
  message = str(raised.value)
  assert "celeb_a_hq/256" in message and "downloads/manual" in message
  assert "celeb_a" in message and "tfds build" in message
  assert not logdir.exists()
