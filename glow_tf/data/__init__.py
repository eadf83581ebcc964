"""Datasets as `tf.data` pipelines of uint8 images, labels and attributes.

`load(DataConfig(dataset=...))` returns an `ImageDataset`. Its methods give
the training pipeline (shuffled with the seed, repeated, batched, prefetched),
the test pipeline (fixed order, every example exactly once, last batch kept,
so that test bits/dim is exact), the actnorm init batch and labelled examples
for attribute directions. Elements are dicts: `image` uint8
`[B, H, W, C]` (grayscale keeps `C = 1`), `label` int32 `[B]` (0 when the
data has no labels) and, when available, `attr` int32 `[B, 40]` (CelebA
attributes, +1/-1 as in the original's `attr.npy`). Images stay 8-bit:
keeping `n_bits_x` bits and dequantising is the model's job
(`GlowModel.preprocess`).

Sources, by `dataset`, in the order they are tried:

* Any name: `data_dir` (or `data_dir/<category>`) holding OpenAI's prepared
  TFRecord shards, `train/train-rXX-s-NNNN-of-NNNN.tfrecords` and
  `validation/validation-rXX-...` (rXX = log2 of the resolution; features
  `shape` int64[3], `data` raw uint8 bytes, `label` int64[1], optional `attr`
  int64[40]). They are read as they are, so the original's celeba-tfr,
  imagenet-oord-tfr and lsun shards work unchanged. Images stored larger than
  `image_size` (lsun_realnvp's 96-pixel ones) are cropped to it: at random
  for training, centred for test.
* `mnist`, `fashion_mnist`: 1. the four IDX files
  (`train-images-idx3-ubyte.gz`, ...) in `data_dir`; 2. for `fashion_mnist`,
  Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`);
  3. TFDS. No network access is attempted when 1 or 2 is present. The 28x28
  images are zero-padded to 32x32 as the original does (`pad_to_32=False` or
  `image_size=28` keeps 28).
* `cifar10`: TFDS `cifar10`.
* `imagenet32`, `imagenet64`: TFDS `downsampled_imagenet/32x32` (`/64x64`),
  van den Oord's downsampled ImageNet, the data of the paper's bits/dim; or
  TFDS `imagenet_resized/32x32` (`/64x64`, with 1000 class labels) when that
  is the one prepared.
* `celeba`: TFDS `celeb_a_hq/256` (manual download) when `image_size` is
  unset or 256 and it is prepared or can be prepared, with 3000 images held
  out for test as the original; otherwise TFDS `celeb_a`, centre-cropped to
  148x148 and resized to `image_size` (default 64), with its 40 attributes.
* `lsun`: TFDS `lsun/<category>`, centre-cropped and resized to `image_size`
  (default 64).
* `folder`: every image file under `data_dir`. `train/` and `test/`
  subfolders when both exist, else a fixed `holdout_fraction` of the files
  (chosen independently of `seed`) is the test set. When all images sit in
  two or more class subfolders, the subfolder's index (sorted names) is the
  label. Images are converted to RGB, centre-cropped and resized to
  `image_size` (default 64).

A TFDS dataset that is already prepared under `data_dir` (TFDS's default,
`~/tensorflow_datasets`, when unset) is read without network access;
otherwise TFDS downloads and prepares it (`download=True`) and a failure
raises `DataError` saying how to get the data. Before TFDS starts, one
connection to the download host is tried (`download_host_error`, at most
`DOWNLOAD_PROBE_SECONDS`): without network access `load` fails at once rather
than after TFDS's minutes of retries. `download=False` never downloads.

Corrupt image files (folders) fail, with the file name: a silently smaller
dataset would make bits/dim incomparable between runs. `load` opens every
file's header and raises `DataError` listing the unreadable files; a file
whose header is fine but whose pixel data is damaged stops the pipeline with
a `tf.errors.InvalidArgumentError` naming it. TFDS and TFRecord data are taken
as prepared.

Distribution: `train_dataset()` gives global batches of the whole training
set in an order fixed by the seed, and `init_batch()` draws its seeded sample
with numpy; both are identical on every worker.
`strategy.experimental_distribute_dataset` splits each global batch over the
replicas (`AutoShardPolicy.DATA`: replica `i` of the global batch gets its
`i`-th slice), so the batches do not depend on the number of replicas.

#### Examples

```python
from glow_tf import data

ds = data.load(data.DataConfig(dataset="fashion_mnist"))
ds.image_shape                                  # [32, 32, 1]
batch = next(iter(ds.train_dataset(64, seed=0)))  # image: uint8 [64, 32, 32, 1], label: int32 [64]
init = ds.init_batch(256, seed=0)               # numpy dict, same on every worker
for batch in ds.test_dataset(500): ...          # 10000 examples, each once
```
"""

from glow_tf.config import DataConfig
from glow_tf.data.catalog import (CELEBA_ATTRIBUTES, DATASETS, DEBIAN_FASHION_MNIST,
                                  FASHION_MNIST_CLASSES, IDX_FILES, IMAGE_EXTENSIONS,
                                  OPENAI_LAYOUT, DataError)
from glow_tf.data.dataset import ImageDataset
from glow_tf.data.sources import DOWNLOAD_PROBE_SECONDS, download_host_error, load

__all__ = ["CELEBA_ATTRIBUTES", "DATASETS", "DEBIAN_FASHION_MNIST", "DOWNLOAD_PROBE_SECONDS",
           "FASHION_MNIST_CLASSES", "IDX_FILES", "IMAGE_EXTENSIONS", "OPENAI_LAYOUT",
           "DataConfig", "DataError", "ImageDataset", "download_host_error", "load"]
