"""`ImageDataset`: training, test and init pipelines over splits of a source.

A split (`Split`) is a function `read(index, num_shards, shuffle_seed)` that
gives shard `index` of `num_shards` of the split as unbatched example dicts in
a fixed order (or with its files in a seeded random order), plus its size.
The constructors below make them from numpy arrays, TFDS builders and
TFRecord files; `ImageDataset` turns two of them into pipelines.
"""

from typing import Dict

import numpy as np
import tensorflow as tf

from glow_tf.data.catalog import DataError

__all__ = ["ImageDataset", "Split", "array_split", "count", "tfds_split", "tfrecord_split"]


# ---- Splits: unbatched examples in a fixed order, read whole or as one shard ---------


def count(ds):
  """Number of elements of a finite dataset, counted by reading it."""
  return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


class Split:
  """One split of a source.

  `read(index, num_shards, shuffle_seed)` returns shard `index` of
  `num_shards` as an unbatched `tf.data.Dataset` of example dicts, in a fixed
  order, or, with a `shuffle_seed`, with its files in a seeded random order.
  """

  def __init__(self, read, size):
    self._read = read
    self._size = size  # an int, or a function computing it (called once)

  def read(self, index=0, num_shards=1, shuffle_seed=None):
    return self._read(index, num_shards, shuffle_seed)

  @property
  def size(self):
    if callable(self._size):
      self._size = int(self._size())
    return self._size

  def first(self, n):
    """The first `n` examples (all when `n` is `None`), sharded by example."""
    if n is None:
      return self

    def read(index, num_shards, unused_seed):
      ds = self.read().take(n)
      return ds.shard(num_shards, index) if num_shards > 1 else ds

    size = (min(n, self._size) if isinstance(self._size, int)
            else lambda: count(self.read().take(n)))
    return Split(read, size)


def array_split(arrays):
  """A split held in numpy arrays (IDX files)."""
  def read(index, num_shards, unused_seed):
    return tf.data.Dataset.from_tensor_slices({k: v[index::num_shards] for k, v in arrays.items()})
  return Split(read, len(arrays["label"]))


def tfds_split(builder, split, convert, size=None):
  """A TFDS split (a split string such as `"train[3000:]"`); shards are even sub-splits.

  `convert` maps TFDS examples to ours; `size` overrides the metadata's count.
  """
  def read(index, num_shards, shuffle_seed):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    part = tfds.even_splits(split, num_shards)[index] if num_shards > 1 else split
    ds = builder.as_dataset(split=part, shuffle_files=shuffle_seed is not None,
                            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed))
    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def num_examples():
    try:
      return builder.info.splits[split].num_examples
    except (KeyError, ValueError):  # no metadata (e.g. under tfds.testing.mock_data)
      return count(builder.as_dataset(split=split))
  return Split(read, num_examples if size is None else size)


def tfrecord_split(files, make_parse):
  """TFRecord files parsed by `make_parse(shuffle_seed)`; shards are whole files when there are enough.

  The parser is made per read so that its random crops (training) follow the
  read's seed.
  """
  def read(index, num_shards, shuffle_seed):
    chosen = files
    if num_shards > 1 and len(files) >= num_shards:
      chosen = files[index::num_shards]  # whole files per input pipeline
    ds = tf.data.Dataset.from_tensor_slices(chosen)
    if shuffle_seed is not None:
      ds = ds.shuffle(len(chosen), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(chosen)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if num_shards > 1 and len(files) < num_shards:
      ds = ds.shard(num_shards, index)
    return ds.map(make_parse(shuffle_seed), num_parallel_calls=tf.data.AUTOTUNE)
  return Split(read, lambda: count(tf.data.TFRecordDataset(files)))


# ---- The dataset object ---------------------------------------------------------------


class ImageDataset:
  """Train and test data of one dataset, with its shape, classes and attributes.

  Made by `load`; `train` and `test` are `Split`s of the source.

  Attributes:
    config: the `DataConfig`.
    image_shape: `[H, W, C]` of the images.
    n_classes: number of label classes, or `None` when unlabelled.
    class_names: names of the classes, or `None`.
    attribute_names: names of the entries of `attr` (CelebA's 40), or `None`.
    source: where the data comes from, for logs.
  """

  def __init__(self, config, train, test, image_shape, n_classes=None, class_names=None,
               attribute_names=None, source=""):
    self.config = config
    self._train = train.first(config.train_subset)
    self._test = test.first(config.n_test)
    self.image_shape = [int(d) for d in image_shape]
    self.n_classes = n_classes
    self.class_names = list(class_names) if class_names is not None else None
    self.attribute_names = list(attribute_names) if attribute_names is not None else None
    self.source = source

  def __repr__(self):
    return (f"ImageDataset({self.config.dataset!r}, {self.source}, image_shape="
            f"{self.image_shape}, n_classes={self.n_classes})")

  @property
  def num_train(self):
    """Number of training examples (after `train_subset`); may read the data once to count."""
    return self._train.size

  @property
  def num_test(self):
    """Number of test examples (after `n_test`); may read the data once to count."""
    return self._test.size

  # -- training ------------------------------------------------------------------------

  def train_dataset(self, batch_size: int, seed: int) -> tf.data.Dataset:
    """Shuffled (seeded), repeated global batches of `{'image', 'label'[, 'attr']}`.

    The order depends only on the seed and the data, so `skip(n)` resumes at
    step `n`. Under a `tf.distribute` strategy, give the pipeline to
    `strategy.experimental_distribute_dataset`, which splits each global
    batch over the replicas in order (`AutoShardPolicy.DATA`); the caller
    checks that the replicas divide `batch_size`
    (`glow_tf.config.check_replica_divisible`).

    Args:
      batch_size: global batch size (`TrainConfig.n_batch_train`).
      seed: seeds the file order and the shuffle (`TrainConfig.seed`).

    Returns:
      `tf.data.Dataset` of dicts: `image` uint8 `[batch, height, width, channels]`,
      `label` int32 `[batch]`, and `attr` int32 `[batch, 40]` when available.
    """
    ds = self._train.read(shuffle_seed=seed)
    ds = ds.shuffle(self.config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    return _with_options(ds.batch(batch_size, drop_remainder=True),
                         tf.data.experimental.AutoShardPolicy.DATA)

  def init_batch(self, n: int, seed: int) -> Dict[str, np.ndarray]:
    """A seeded random sample of `n` training examples, for actnorm's data-dependent init.

    Drawn from the first `max(n, min(4 n, shuffle_buffer))` training examples
    (the original took its first batch from a buffer of 4 batches) with numpy
    (independent of TensorFlow's global seed and of the strategy), so it is
    identical on every worker and in every run with the same seed. Fewer than
    `n` examples when the training set is smaller.

    Args:
      n: number of examples (`TrainConfig.n_batch_init`).
      seed: seeds the sample (`TrainConfig.seed`).

    Returns:
      dict of numpy arrays: `image` uint8 `[n, height, width, channels]`,
      `label` int32 `[n]` (and `attr`).
    """
    pool = max(n, min(4 * n, self.config.shuffle_buffer))
    keys = np.random.RandomState(seed).random_sample(pool)
    best, offset = None, 0
    for batch in self._train.read().take(pool).batch(256).as_numpy_iterator():
      batch = dict(batch, _key=keys[offset:offset + len(batch["label"])])
      offset += len(batch["label"])
      if best is not None:
        batch = {k: np.concatenate([best[k], v]) for k, v in batch.items()}
      keep = np.argsort(batch["_key"], kind="stable")[:n]
      best = {k: v[keep] for k, v in batch.items()}
    if best is None:
      raise DataError(f"the training set of {self.source} is empty.")
    best.pop("_key")
    return best

  # -- test ----------------------------------------------------------------------------

  def test_dataset(self, batch_size: int) -> tf.data.Dataset:
    """The test set in a fixed order, each example once, the last batch kept.

    Args:
      batch_size: global batch size (`TrainConfig.n_batch_test`).

    Returns:
      `tf.data.Dataset` of dicts as `train_dataset`; the last batch may be smaller.
    """
    ds = self._test.read().batch(batch_size)
    return _with_options(ds, tf.data.experimental.AutoShardPolicy.DATA)

  # -- labelled examples -----------------------------------------------------------------

  def labelled_examples(self, split="train", max_examples=None):
    """Unbatched examples with `label` (and `attr`) in a fixed order, for manipulation directions.

    Args:
      split: `"train"` or `"test"`.
      max_examples: the first examples only (`None`: all).
    """
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    ds = (self._train if split == "train" else self._test).read()
    return ds.take(max_examples) if max_examples else ds


def _with_options(ds, shard_policy=None):
  options = tf.data.Options()
  options.deterministic = True
  if shard_policy is not None:
    options.experimental_distribute.auto_shard_policy = shard_policy
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

