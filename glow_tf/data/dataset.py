"""`ImageDataset`: training, test and init pipelines over splits of a source.

A split (`Split`) reads its examples in two stages: `raw(shuffle_seed)` gives
them undecoded (array rows, file paths, serialized records) in a fixed order,
or with their files in a seeded random order, and `decode` turns one into an
example dict. The training pipeline shuffles and skips the raw elements and
decodes only what it keeps, so resuming at step `n` costs a skip over cheap
elements, never the decoding of `n` batches. The constructors below make
splits from numpy arrays, image files, TFDS builders and TFRecord files;
`ImageDataset` turns two of them into pipelines.
"""

from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from glow_tf.config import DataConfig, augmentation_level
from glow_tf.data.augmentation import augmenting
from glow_tf.data.catalog import DataError

if TYPE_CHECKING:  # for annotations only: imported at run time where a TFDS split is read
  import tensorflow_datasets as tfds

__all__ = ["ImageDataset", "Split", "array_split", "count", "file_split", "tfds_split",
           "tfrecord_split"]


# ---- Splits: examples in a fixed order, undecoded until kept ---------------------------


def count(ds: tf.data.Dataset) -> int:
  """Number of elements of a finite dataset, counted by reading it."""
  return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


_NO_END = 2 ** 62  # epochs of the repeated training pipeline


def _identity_decode(raw, unused_seed):
  return raw


class Split:
  """One split of a source: undecoded elements and how to decode one.

  Args:
    raw: `raw(shuffle_seed) -> tf.data.Dataset` of undecoded elements, in a
      fixed order (`shuffle_seed=None`) or with the files in a seeded order.
    size: the number of examples, or a function computing it (called once).
    decode: `decode(raw_element, seed) -> example dict`; `seed` is a `[2]`
      int64 tensor for any randomness of the decoding (a training crop),
      derived from the element's position so that a resumed pipeline decodes
      exactly as an uninterrupted one. Default: the raw elements are examples.
  """

  def __init__(self, raw: Callable[[Optional[int]], tf.data.Dataset], size: Union[int, Callable[[], int]],
               decode: Optional[Callable] = None):
    self._raw = raw
    self._size = size
    self.decode = decode or _identity_decode

  def raw(self, shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    return self._raw(shuffle_seed)

  def read(self, shuffle_seed: Optional[int] = None) -> tf.data.Dataset:
    """The decoded examples, in the order of `raw(shuffle_seed)`."""
    return decode_positions(self.raw(shuffle_seed).enumerate(), self.decode, shuffle_seed or 0)

  @property
  def size(self) -> int:
    if callable(self._size):
      self._size = int(self._size())
    return self._size

  def first(self, n: Optional[int]) -> "Split":
    """The first `n` examples (all when `n` is `None`)."""
    if n is None:
      return self
    size = (min(n, self._size) if isinstance(self._size, int)
            else lambda: count(self.raw().take(n)))
    return Split(lambda unused_seed: self.raw().take(n), size, self.decode)


def decode_positions(ds: tf.data.Dataset, decode: Callable, seed: int) -> tf.data.Dataset:
  """Decodes `(position, raw)` elements with the per-element seed `[seed, position]`."""
  def apply(position, raw):
    return decode(raw, tf.stack([tf.cast(seed, tf.int64), position]))
  return ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def array_split(arrays: Dict[str, np.ndarray]) -> Split:
  """A split held in numpy arrays (IDX files): the rows are the examples."""
  return Split(lambda unused_seed: tf.data.Dataset.from_tensor_slices(arrays),
               len(arrays["label"]))


def file_split(files: Union[Sequence[str], np.ndarray], labels: Union[Sequence[int], np.ndarray],
               decode_file: Callable) -> Split:
  """Image files and their labels; `decode_file(path) -> example dict` (a `tf` function)."""
  files, labels = np.asarray(files), np.asarray(labels, np.int32)

  def decode(raw, unused_seed):
    path, label = raw
    return dict(decode_file(path), label=label)
  return Split(lambda unused_seed: tf.data.Dataset.from_tensor_slices((files, labels)),
               len(files), decode)


def tfds_split(builder: "tfds.core.DatasetBuilder", split: str, convert: Optional[Callable],
               size: Optional[int] = None) -> Split:
  """A TFDS split (a split string such as `"train[3000:]"`).

  Raw elements keep the image encoded (`tfds.decode.SkipDecoding`); `decode`
  decodes it with the dataset's feature and applies `convert`, which maps
  TFDS examples to ours. `size` overrides the metadata's count.
  """
  image_feature = builder.info.features["image"]

  def raw(shuffle_seed):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    return builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None,
                              read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                                          shuffle_reshuffle_each_iteration=False),
                              decoders={"image": tfds.decode.SkipDecoding()})

  def decode(e, unused_seed):
    e = dict(e, image=image_feature.decode_example(e["image"]))
    return convert(e)

  def num_examples():
    try:
      return builder.info.splits[split].num_examples
    except (KeyError, ValueError):  # no metadata (e.g. under tfds.testing.mock_data)
      return count(builder.as_dataset(split=split))
  return Split(raw, num_examples if size is None else size, decode)


def tfrecord_split(files: Sequence[str], parse: Callable) -> Split:
  """TFRecord files; the raw elements are serialized records, `parse(record, seed)` decodes one."""
  def raw(shuffle_seed):
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_seed is not None:
      ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=False)
    return ds.interleave(tf.data.TFRecordDataset, cycle_length=min(8, len(files)),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return Split(raw, lambda: count(tf.data.TFRecordDataset(files)), parse)


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

  def __init__(self, config: DataConfig, train: Split, test: Split, image_shape: Sequence[int],
               n_classes: Optional[int] = None, class_names: Optional[Sequence[str]] = None,
               attribute_names: Optional[Sequence[str]] = None, source: str = ""):
    self.config = config
    self._train = train.first(config.train_subset)
    self._test = test.first(config.n_test)
    self.image_shape = [int(d) for d in image_shape]
    self.n_classes = n_classes
    self.class_names = list(class_names) if class_names is not None else None
    self.attribute_names = list(attribute_names) if attribute_names is not None else None
    self.source = source
    self.augmentation_level = augmentation_level(config.dataset, config.dal)
    self._train_decode = augmenting(self._train.decode, self.augmentation_level)

  def __repr__(self) -> str:
    return (f"ImageDataset({self.config.dataset!r}, {self.source}, image_shape="
            f"{self.image_shape}, n_classes={self.n_classes})")

  @property
  def num_train(self) -> int:
    """Number of training examples (after `train_subset`); may read the data once to count."""
    return self._train.size

  @property
  def num_test(self) -> int:
    """Number of test examples (after `n_test`); may read the data once to count."""
    return self._test.size

  # -- training ------------------------------------------------------------------------

  def train_dataset(self, batch_size: int, seed: int, start_step: int = 0) -> tf.data.Dataset:
    """Shuffled (seeded), repeated global batches of `{'image', 'label'[, 'attr']}`.

    Epoch `e` is the split (its files in an order fixed by `seed`) through a
    shuffle buffer seeded by `(seed, e)`, so the order depends only on the
    seed and the data, and any epoch can be produced without the ones before
    it. `start_step=n` starts at the batch of step `n` of that order: it
    begins at the epoch holding it and skips the undecoded elements before it
    in that epoch, so resuming costs at most one epoch of cheap elements
    (file names, array rows, serialized records), whatever the step. Under a
    `tf.distribute` strategy, give the pipeline to
    `strategy.experimental_distribute_dataset`, which splits each global
    batch over the replicas in order (`AutoShardPolicy.DATA`); the caller
    checks that the replicas divide `batch_size`
    (`glow_tf.config.check_replica_divisible`).

    Args:
      batch_size: global batch size (`TrainConfig.n_batch_train`).
      seed: seeds the file order and the shuffle (`TrainConfig.seed`).
      start_step: the number of batches to leave out at the start.

    Returns:
      `tf.data.Dataset` of dicts: `image` uint8 `[batch, height, width, channels]`,
      `label` int32 `[batch]`, and `attr` int32 `[batch, 40]` when available.
    """
    n = self._train.size
    if n < 1:
      raise DataError(f"the training set of {self.source} is empty.")
    raw = self._train.raw(shuffle_seed=seed)
    first_epoch, offset = divmod(start_step * batch_size, n)

    def epoch(e):
      return raw.shuffle(self.config.shuffle_buffer, seed=tf.cast(seed, tf.int64) * 1000003 + e,
                         reshuffle_each_iteration=False)

    ds = tf.data.Dataset.range(first_epoch, _NO_END).flat_map(epoch)
    ds = ds.enumerate(start=first_epoch * n).skip(offset)
    ds = decode_positions(ds, self._train_decode, seed)
    return _with_options(ds.batch(batch_size, drop_remainder=True),
                         tf.data.experimental.AutoShardPolicy.DATA)

  def init_batch(self, n: int, seed: int) -> Dict[str, np.ndarray]:
    """`n` training examples drawn uniformly from the whole training set, for actnorm's data-dependent init.

    The positions are drawn with numpy from `seed` (independent of
    TensorFlow's global seed and of the strategy), so the batch is identical
    on every worker and in every run with the same seed; they are read in
    one pass over the undecoded training elements, decoding only the chosen
    ones, augmented as the training images are (the original took its init
    batch from its augmented training iterator). All of the training set
    when it has fewer than `n` examples.

    Args:
      n: number of examples (`Schedule.init_images`).
      seed: seeds the sample (`TrainConfig.seed`).

    Returns:
      dict of numpy arrays: `image` uint8 `[n, height, width, channels]`,
      `label` int32 `[n]` (and `attr`), in the order of the training set.
    """
    size = self._train.size
    if size < 1:
      raise DataError(f"the training set of {self.source} is empty.")
    chosen = np.zeros(size, bool)
    chosen[np.random.RandomState(seed).choice(size, min(n, size), replace=False)] = True
    chosen = tf.constant(chosen)
    ds = self._train.raw().enumerate().filter(lambda i, _: chosen[i]).take(int(n))
    ds = decode_positions(ds, self._train_decode, seed)
    batches = list(ds.batch(1024).as_numpy_iterator())
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

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

  def labelled_examples(self, split: str = "train", max_examples: Optional[int] = None) -> tf.data.Dataset:
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

