"""Datasets: offline Fashion-MNIST, TFDS paths (mocked), OpenAI shards, folders, replicas."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from glow_tf import data

HAVE_FMNIST = os.path.exists(os.path.join(data.DEBIAN_FASHION_MNIST, "train-images-idx3-ubyte.gz"))
needs_fmnist = pytest.mark.skipif(
    not HAVE_FMNIST, reason="needs Debian's dataset-fashion-mnist (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def fmnist():
  return data.load(data.DataConfig(dataset="fashion_mnist"))


def _all(ds):
  images, labels = [], []
  for batch in ds:
    images.append(batch["image"].numpy())
    labels.append(batch["label"].numpy())
  return np.concatenate(images), np.concatenate(labels)


@needs_fmnist
def test_fashion_mnist_from_debian_idx_files(fmnist):
  assert fmnist.source.startswith("IDX files")
  assert fmnist.image_shape == [32, 32, 1] and fmnist.n_classes == 10
  assert (fmnist.num_train, fmnist.num_test) == (60000, 10000)
  images, labels = _all(fmnist.test_dataset(1000))
  assert images.shape == (10000, 32, 32, 1) and images.dtype == np.uint8
  assert labels.dtype == np.int32 and np.bincount(labels).tolist() == [1000] * 10
  assert images.max() == 255 and images.min() == 0
  # Padded 28 -> 32 with zeros, as the original: the border is empty.
  assert images[:, :2].max() == 0 and images[:, :, -2:].max() == 0
  assert images[:, 2:30, 2:30].mean() > 50
  batch = next(iter(fmnist.train_dataset(64)))
  assert batch["image"].shape == [64, 32, 32, 1] and batch["label"].shape == [64]


@needs_fmnist
def test_fashion_mnist_unpadded_and_from_a_data_dir(tmp_path):
  for name in sum(data.IDX_FILES.values(), ()):
    os.symlink(os.path.join(data.DEBIAN_FASHION_MNIST, name), tmp_path / name)
  d = data.load(data.DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path), image_size=28,
                                n_test=100))
  assert d.source == f"IDX files in {tmp_path}"
  images, _ = _all(d.test_dataset(30))
  assert images.shape == (100, 28, 28, 1)  # remainder batch kept: 30+30+30+10


def test_fashion_mnist_idx_files_are_parsed_exactly(tmp_path):
  """Write IDX files ourselves and read them back."""
  import gzip
  rng = np.random.RandomState(0)
  arrays = {"train": (rng.randint(0, 256, [7, 28, 28]), rng.randint(0, 10, [7])),
            "test": (rng.randint(0, 256, [3, 28, 28]), rng.randint(0, 10, [3]))}
  for split, (images, labels) in arrays.items():
    for name, a, magic in zip(data.IDX_FILES[split], (images, labels), (2051, 2049)):
      header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape)
      with gzip.open(tmp_path / name, "wb") as f:
        f.write(header + a.astype(np.uint8).tobytes())
  d = data.load(data.DataConfig(dataset="fashion_mnist", data_dir=str(tmp_path), image_size=28))
  images, labels = _all(d.test_dataset(2))
  np.testing.assert_array_equal(images[..., 0], arrays["test"][0])
  np.testing.assert_array_equal(labels, arrays["test"][1])
  assert d.num_train == 7


@pytest.mark.parametrize("name, shape, n_classes", [
    ("mnist", [32, 32, 1], 10), ("cifar10", [32, 32, 3], 10)])
def test_tfds_paths_with_mock_data(name, shape, n_classes):
  with tfds.testing.mock_data(num_examples=12):
    d = data.load(data.DataConfig(dataset=name, seed=3))
    assert d.image_shape == shape and d.n_classes == n_classes
    batch = next(iter(d.train_dataset(4)))
    assert batch["image"].shape == [4] + shape and batch["image"].dtype == tf.uint8
    images, labels = _all(d.test_dataset(5))
    assert images.shape[0] == d.num_test == 12 and labels.max() < n_classes


def test_celeba_tfds_paths_with_mock_data():
  with tfds.testing.mock_data(num_examples=20):
    hq = data.load(data.DataConfig(dataset="celeba"))  # celeb_a_hq/256 when prepared
    assert hq.source == "TFDS celeb_a_hq/256" and hq.image_shape == [256, 256, 3]
    assert hq.num_train + hq.num_test == 20
    small = data.load(data.DataConfig(dataset="celeba", image_size=32))  # celeb_a, cropped
    assert small.source == "TFDS celeb_a" and small.image_shape == [32, 32, 3]
    assert len(small.attribute_names) == 40 and "Smiling" in small.attribute_names
    batch = next(iter(small.train_dataset(4)))
    assert batch["image"].shape == [4, 32, 32, 3]
    assert set(np.unique(batch["attr"].numpy())) <= {-1, 1}


def _write_openai_shards(root, n_per_split, size=8, with_attr=True):
  rng = np.random.RandomState(1)
  written = {}
  for folder in ("train", "validation"):
    os.makedirs(root / folder)
    images = rng.randint(0, 256, [n_per_split, size, size, 3]).astype(np.uint8)
    labels = rng.randint(0, 5, [n_per_split])
    attrs = rng.choice([-1, 1], [n_per_split, 40])
    res = int(np.log2(size))
    for shard in range(2):
      path = root / folder / f"{folder}-r{res:02d}-s-{shard:04d}-of-0002.tfrecords"
      with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(shard, n_per_split, 2):
          feature = {
              "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=[size, size, 3])),
              "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[images[i].tobytes()])),
              "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]]))}
          if with_attr:
            feature["attr"] = tf.train.Feature(int64_list=tf.train.Int64List(value=attrs[i]))
          w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    written[folder] = (images, labels, attrs)
  return written


def test_openai_tfrecord_shards_read_back_bit_exactly(tmp_path):
  written = _write_openai_shards(tmp_path, 6)
  d = data.load(data.DataConfig(dataset="celeba", data_dir=str(tmp_path)))
  assert d.source.startswith("OpenAI TFRecord shards")
  assert d.image_shape == [8, 8, 3] and (d.num_train, d.num_test) == (6, 6)
  assert d.attribute_names[31] == "Smiling"
  got = {}
  for batch in d.test_dataset(4):
    for img, lab, att in zip(batch["image"].numpy(), batch["label"].numpy(), batch["attr"].numpy()):
      got[img.tobytes()] = (lab, att.tolist())
  images, labels, attrs = written["validation"]
  assert len(got) == 6
  for img, lab, att in zip(images, labels, attrs):
    assert got[img.tobytes()] == (lab, att.tolist())
  with pytest.raises(data.DataError, match="no OpenAI shards for image size 16"):
    data.load(data.DataConfig(dataset="celeba", data_dir=str(tmp_path), image_size=16))


def _write_folder(root, with_splits, corrupt=False):
  rng = np.random.RandomState(2)
  paths = []
  splits = ("train", "test") if with_splits else ("",)
  for split in splits:
    for cls in ("cats", "dogs"):
      d = root / split / cls
      os.makedirs(d)
      for i in range(5):
        array = rng.randint(0, 256, [20, 24, 3]).astype(np.uint8)
        path = d / f"{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(array).save(path)
        paths.append(path)
  if corrupt:
    (root / splits[0] / "cats" / "broken.png").write_bytes(b"not an image")
  return paths


@pytest.mark.parametrize("with_splits", [True, False])
def test_image_folder(tmp_path, with_splits):
  _write_folder(tmp_path, with_splits)
  d = data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16,
                                holdout_fraction=0.2))
  assert d.image_shape == [16, 16, 3] and d.n_classes == 2 and d.class_names == ["cats", "dogs"]
  assert (d.num_train, d.num_test) == ((10, 10) if with_splits else (8, 2))
  images, labels = _all(d.test_dataset(3))
  assert images.shape == (d.num_test, 16, 16, 3) and images.dtype == np.uint8
  assert set(labels.tolist()) <= {0, 1}


def test_corrupt_image_fails_with_the_file_name(tmp_path):
  _write_folder(tmp_path, True, corrupt=True)
  with pytest.raises(data.DataError, match="broken.png"):
    data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path), image_size=16))


@needs_fmnist
def test_replicas_partition_the_global_batch_and_test_set_is_covered_once(fmnist, two_replicas):
  small = data.load(data.DataConfig(dataset="fashion_mnist", n_train=64, n_test=45))
  global_batch = next(iter(small.train_dataset(16)))
  dist = two_replicas.experimental_distribute_dataset(small.train_dataset(16))
  per_replica = next(iter(dist))
  shards = [t.numpy() for t in two_replicas.experimental_local_results(per_replica["image"])]
  assert [s.shape[0] for s in shards] == [8, 8]
  np.testing.assert_array_equal(np.concatenate(shards), global_batch["image"].numpy())
  seen = []
  for batch in two_replicas.experimental_distribute_dataset(small.test_dataset(10)):
    for t in two_replicas.experimental_local_results(batch["image"]):
      seen.extend(x.tobytes() for x in t.numpy())
  expected, _ = _all(small.test_dataset(45))
  assert sorted(seen) == sorted(x.tobytes() for x in expected) and len(seen) == 45


@needs_fmnist
def test_init_batch_is_deterministic_and_order_depends_on_the_seed():
  a = data.load(data.DataConfig(dataset="fashion_mnist", n_train=500, seed=1))
  b = data.load(data.DataConfig(dataset="fashion_mnist", n_train=500, seed=1))
  c = data.load(data.DataConfig(dataset="fashion_mnist", n_train=500, seed=2))
  np.testing.assert_array_equal(a.init_batch(32)["image"], b.init_batch(32)["image"])
  first = lambda d: next(iter(d.train_dataset(8)))["label"].numpy()
  np.testing.assert_array_equal(first(a), first(b))
  assert not np.array_equal(a.init_batch(32)["image"], c.init_batch(32)["image"])


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(dataset="svhn"), ValueError, "valid names: mnist, fashion_mnist"),
    (dict(dataset="lsun"), ValueError, "--category"),
    (dict(dataset="folder"), ValueError, "--data_dir"),
    (dict(dataset="fashion_mnist", image_size=64), ValueError, "28x28"),
    (dict(dataset="cifar10", image_size=64), ValueError, "larger"),
    (dict(dataset="mnist", n_train=0), ValueError, "n_train must be a positive integer"),
])
def test_bad_configs(kwargs, error, message):
  with pytest.raises(error, match=message):
    data.load(data.DataConfig(**kwargs))


def test_missing_tfds_data_says_how_to_get_it(tmp_path):
  with pytest.raises(data.DataError, match="manual download"):
    data.load(data.DataConfig(dataset="imagenet32", data_dir=str(tmp_path)))


def test_empty_folder(tmp_path):
  with pytest.raises(data.DataError, match="no images"):
    data.load(data.DataConfig(dataset="folder", data_dir=str(tmp_path)))
