"""Exact likelihoods of images under a trained Glow: per-image bits/dim, tighter estimates, latents.

What `score.py` does after flag parsing. A set of images (a dataset split or
image files) is scored in batches under a `tf.distribute` strategy by a
`Scorer`, which keeps its traced step for all the sets of a run; each
image's record (its index, file or label, nats and bits/dim) is streamed to
a CSV, JSON-lines or JSON file, its latents optionally to an `.npz`, and the
summary (mean, standard error, count, images/s) returned. With a second,
out-of-distribution set, `run` reports `glow_tf.ood.ood_report`. `nats` in the
records is the negative log-likelihood `-log P_K(x)` of the image (its code
length in nats).

With `K = n_dequant_samples` dequantisation draws `u_k`, an image's score is
the importance-weighted estimate of its discrete likelihood,

```none
log P_K(x) = log mean_k p(x + u_k) = logsumexp_k log p(x + u_k) - log K,
bits/dim = -log P_K(x) / (D ln 2),
```

a lower bound of `log P(x)` that tightens as `K` grows (K = 1 is the
original's test figure). For a model trained with variational dequantisation
the draws come from its `q(u | x)` and are weighted by it (`q` is the
proposal),

```none
log P_K(x) = logsumexp_k [log p(x + u_k) - log q(u_k | x)] - log K;
```

`dequantization="uniform"` scores such a model with uniform draws instead.
The draws are stateless: draw `k` of image `i` is
`dequantization_noise([i], shape, seed, k)`, so a score does not depend on
the batch size, the strategy or the number of replicas.
"""

import csv
import dataclasses
import glob
import json
import math
import os
import shutil
import tempfile
import time
import zipfile
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Union

import numpy as np
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import distribute
from glow_tf import metrics
from glow_tf import model as model_lib
from glow_tf import ood
from glow_tf import sampling

__all__ = ["ImageSet", "ScoreSummary", "Scorer", "dataset_images", "dequantization_noise",
           "file_images", "score_images", "OutputWriter", "LatentWriter", "run"]


def dequantization_noise(index: tf.Tensor, image_shape: Sequence[int],
                         seed: Union[int, tf.Tensor], draw: Union[int, tf.Tensor]) -> tf.Tensor:
  """Uniform `[0, 1)` noise `[batch] + image_shape` for draw `draw` of the images numbered `index`.

  Image `i`'s noise is `stateless_uniform(image_shape, seed=[seed * 1000 + draw, i])`: it
  depends on the image alone, not on its batch or replica.
  """
  first = tf.cast(seed, tf.int64) * 1000 + tf.cast(draw, tf.int64)
  seeds = tf.stack([tf.fill(tf.shape(index), first),
                    tf.cast(index, tf.int64)], axis=1)
  return tf.map_fn(lambda s: tf.random.stateless_uniform(list(image_shape), s), seeds,
                   fn_output_signature=tf.float32)


# ---- What is scored ------------------------------------------------------------------


class ImageSet:
  """Images to score: unbatched `{"image", "index"[, "label"]}` examples, with names for the records.

  Attributes:
    dataset: a `tf.data.Dataset` of uint8 `[height, width, channels]` images
      with their `index` (int64, 0..n-1) and, where known, `label`.
    size: the number of images.
    names: the file of each image (by index), or `None` for a dataset split.
    description: what the images are, for logs.
  """

  def __init__(self, dataset: tf.data.Dataset, size: int, names: Optional[List[str]] = None,
               description: str = ""):
    if size < 1:
      raise ValueError(f"nothing to score: {description or 'the set'} holds no images.")
    self.dataset = dataset
    self.size = int(size)
    self.names = names
    self.description = description


def dataset_images(data_config: config_lib.DataConfig, split: str, image_shape: Sequence[int],
                   limit: Optional[int] = None) -> ImageSet:
  """A split (`"train"` or `"test"`) of a dataset `train.py` reads, checked against `image_shape`."""
  config_lib.check_split(split)
  ds = data_lib.load(data_config)
  if list(ds.image_shape) != list(image_shape):
    raise ValueError(
        f"{ds.source} has images of shape {ds.image_shape}, the model takes {list(image_shape)}: "
        "choose --image_size (or a dataset) with the model's size and channels.")
  size = ds.num_test if split == "test" else ds.num_train
  size = min(size, limit) if limit else size
  keep = ("image", "label") if ds.n_classes else ("image",)  # (a label of 0 means none)
  if ds.attribute_names:  # (an attributes-conditioned model's condition)
    keep += ("attr",)
  examples = ds.labelled_examples(split, limit).enumerate().map(
      lambda i, e: dict({k: e[k] for k in keep}, index=i), num_parallel_calls=tf.data.AUTOTUNE)
  return ImageSet(examples, size, None, f"{data_config.dataset} {split}")


def _expand_paths(paths: Sequence[str]) -> List[str]:
  out = []
  for p in paths:
    if os.path.isdir(p):
      found = sorted(f for f in glob.glob(os.path.join(p, "**", "*"), recursive=True)
                     if f.lower().endswith(data_lib.IMAGE_EXTENSIONS))
    elif any(c in p for c in "*?["):
      found = sorted(glob.glob(p, recursive=True))
    else:
      found = [p]
    out.extend(found)
  return out


# PIL's modes of 8-bit images and their channels: the values a file holds are the image's.
_PIL_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def _check_image_file(path: str, h: int, w: int, c: int) -> Optional[str]:
  """Why the image file at `path` cannot be scored as uint8 `[h, w, c]`, or `None` if it can."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as im:
      if im.mode not in _PIL_MODES:  # palette, 1-bit, 16-bit, float, CMYK, ...
        return (f"{path} (mode {im.mode}: not 8-bit grey or RGB; convert it, e.g. "
                f"PIL's im.convert({'L' if c == 1 else 'RGB'!r}))")
      if im.size != (w, h) or _PIL_MODES[im.mode] != c:
        return f"{path} ({im.size[0]}x{im.size[1]}x{_PIL_MODES[im.mode]})"
      im.load()  # decodes it all: a truncated or damaged file is named now, not mid-run
  except Exception as e:  # noqa: BLE001 - PIL raises many kinds
    return f"{path} (unreadable: {type(e).__name__}: {e})"
  return None


def file_images(paths: Sequence[str], image_shape: Sequence[int]) -> ImageSet:
  """Image files (paths, folders, globs) of exactly `image_shape`; the others stop it, named.

  Images are not resized or converted: a likelihood of a resized image is
  not the image's. A file of another size, channel count or pixel format
  (palette, 16-bit, ...), or one that cannot be read to its end, stops
  scoring before anything is scored, with a message naming the first few:
  a subset scored silently would misreport the set.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  files = _expand_paths(paths)
  if not files:
    raise ValueError(f"no image files in --images {list(paths)}.")
  h, w, c = (int(d) for d in image_shape)
  bad = [why for why in (_check_image_file(f, h, w, c) for f in files) if why]
  if bad:
    raise ValueError(
        f"{len(bad)} of {len(files)} image files do not fit the model's {h}x{w}x{c} 8-bit "
        f"images, so nothing was scored (a subset would misreport the set): "
        f"{'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}. "
        "Resize or convert them first, or remove them.")

  def load(path):
    path = path.decode()
    try:
      with Image.open(path) as im:
        return np.asarray(im, np.uint8).reshape(h, w, c)
    except Exception as e:  # noqa: BLE001 - changed since it was checked
      raise ValueError(f"cannot read {path} ({type(e).__name__}: {e})") from e

  def decode(i, path):
    image = tf.numpy_function(load, [path], tf.uint8, stateful=False)
    return {"image": tf.ensure_shape(image, [h, w, c]), "index": i}

  ds = tf.data.Dataset.from_tensor_slices(files).enumerate().map(
      decode, num_parallel_calls=tf.data.AUTOTUNE)
  where = paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"
  return ImageSet(ds, len(files), files, f"{len(files)} images of {where}")


# ---- Outputs, streamed ---------------------------------------------------------------


def _refuse_existing(flag: str, path: str, overwrite: bool) -> None:
  """Raises when the file `path` (of `flag`) exists and `overwrite` is not set."""
  if os.path.exists(path) and not overwrite:
    raise ValueError(f"{flag} {path!r} exists; pass --overwrite to replace it.")


class OutputWriter:
  """Per-image records to a file, complete only when closed; the extension says the format.

  * `.csv`: a header row (`COLUMNS`), then one row per image (empty cells
    for what is unknown);
  * `.jsonl`: JSON lines, one object per image (unknown keys left out);
  * `.json`: one JSON document, the list of those objects.

  Rows go to a temporary file beside `path` as they come (memory stays flat);
  `close()` renames it to `path`. `abort()` (an error) removes it, so a
  half-written file is never left where the output should be.
  """

  COLUMNS = ("index", "file", "label", "nats", "bits_per_dim")

  def __init__(self, path: str, overwrite: bool = False):
    config_lib.check_score_output(path)
    _refuse_existing("--output", path, overwrite)
    self.path = path
    self._csv = path.endswith(".csv")
    self._json_document = path.endswith(".json")
    self._records = 0
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".",
                                     suffix=".partial")
    self._file: Optional[TextIO] = os.fdopen(fd, "w", newline="")
    self._csv_writer = csv.writer(self._file) if self._csv else None
    if self._csv_writer is not None:
      self._csv_writer.writerow(self.COLUMNS)
    elif self._json_document:
      self._file.write("[")

  def write(self, record: Dict[str, object]) -> None:
    if self._csv_writer is not None:
      self._csv_writer.writerow(["" if record.get(k) is None else record[k] for k in self.COLUMNS])
    else:
      line = json.dumps({k: record.get(k) for k in self.COLUMNS if record.get(k) is not None})
      if self._json_document:  # one element of the list a line
        line = ("," if self._records else "") + "\n" + line
      else:
        line += "\n"
      self._file.write(line)
    self._records += 1

  def close(self) -> str:
    if self._json_document:
      self._file.write("\n]\n")
    self._file.close()
    os.replace(self._tmp, self.path)
    return self.path

  def abort(self) -> None:
    if self._file is not None:
      self._file.close()
    if os.path.exists(self._tmp):
      os.remove(self._tmp)


class LatentWriter:
  """The latents of every scored image, per level, into one `.npz` (streamed through memmaps).

  Keys: `z0`, `z1`, ... (one per split, then the top, as `GlowModel.encode`),
  `x` (the uint8 images), `index`, and `label` where known. The latents are
  `encode`'s: mid-bin dequantisation, so `decode(latents) == x` exactly.
  """

  def __init__(self, path: str, n: int, image_shape: Sequence[int],
               latent_shapes: Sequence[Sequence[int]], overwrite: bool = False):
    config_lib.check_latents_path(path)
    _refuse_existing("--latents", path, overwrite)
    self.path = path
    self._dir = tempfile.mkdtemp(prefix="glow_latents_",
                                 dir=os.path.dirname(os.path.abspath(path)))
    open_memmap = np.lib.format.open_memmap
    self._arrays = {f"z{i}": open_memmap(os.path.join(self._dir, f"z{i}.npy"), "w+",
                                         np.float32, (n,) + tuple(s))
                    for i, s in enumerate(latent_shapes)}
    self._arrays["x"] = open_memmap(os.path.join(self._dir, "x.npy"), "w+", np.uint8,
                                    (n,) + tuple(image_shape))
    self._arrays["index"] = open_memmap(os.path.join(self._dir, "index.npy"), "w+", np.int64, (n,))
    self._labels: Optional[np.ndarray] = None
    self._n = n

  def write(self, index: np.ndarray, images: np.ndarray, latents: Sequence[np.ndarray],
            labels: Optional[np.ndarray]) -> None:
    for i, z in enumerate(latents):
      self._arrays[f"z{i}"][index] = z
    self._arrays["x"][index] = images
    self._arrays["index"][index] = index
    if labels is not None:
      if self._labels is None:
        self._labels = np.lib.format.open_memmap(os.path.join(self._dir, "label.npy"), "w+",
                                                 np.int32, (self._n,))
        self._arrays["label"] = self._labels
      self._labels[index] = labels

  def close(self) -> str:
    tmp = self.path + ".partial"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
      for key, array in self._arrays.items():
        array.flush()
        z.write(os.path.join(self._dir, f"{key}.npy"), f"{key}.npy")
    os.replace(tmp, self.path)
    self._cleanup()
    return self.path

  def abort(self) -> None:
    if os.path.exists(self.path + ".partial"):
      os.remove(self.path + ".partial")
    self._cleanup()

  def _cleanup(self) -> None:
    self._arrays = {}
    shutil.rmtree(self._dir, ignore_errors=True)


# ---- Scoring -----------------------------------------------------------------------


class ScoreSummary:
  """The mean bits/dim of a scored set, its standard error, the count and the throughput."""

  def __init__(self, bits_per_dim: np.ndarray, nats: np.ndarray, seconds: float, description: str,
               png_bits_per_dim: Optional[np.ndarray] = None):
    """`bits_per_dim`, `nats` (negative log-likelihoods), `png_bits_per_dim` `[n]`, by image index."""
    self.bits_per_dim = bits_per_dim
    self.nats = nats
    self.n = len(bits_per_dim)
    self.mean = float(np.mean(bits_per_dim))
    self.stderr = float(np.std(bits_per_dim, ddof=1) / math.sqrt(self.n)) if self.n > 1 else 0.
    self.images_per_sec = self.n / max(seconds, 1e-9)
    self.description = description
    self.png_bits_per_dim = png_bits_per_dim

  def line(self) -> str:
    return (f"{self.description}: {self.mean:.4f} bits/dim (standard error {self.stderr:.4f}) "
            f"over {self.n} images, {self.images_per_sec:.1f} images/s")


MAX_REDRAWS = 8


def _finite_draws(draw: Callable[[tf.Tensor], tf.Tensor], n: int) -> Callable[[tf.Tensor], tf.Tensor]:
  """`draw` (k -> log-weights `[B]`) with each image's non-finite draw replaced by a finite one.

  For a `q` sampled by generating (`dequant_sampling="generate"`, the first
  version's), whose flow can overflow float32 for rare noise (it divides by
  its steps' scales): such a draw of an image is replaced by its next draws, numbers
  `k + n`, `k + 2n`, ... (at most `MAX_REDRAWS`), so the proposal is `q`
  restricted to where it is finite, nearly all of its mass. An image still
  not finite after them is left so (the scorer's error names it).
  """

  def finite(k):
    def again(r, log_w):
      return r + 1, tf.where(tf.math.is_finite(log_w), log_w, draw(k + r * n))

    def pending(r, log_w):
      return tf.logical_and(r <= MAX_REDRAWS, tf.reduce_any(~tf.math.is_finite(log_w)))

    return tf.while_loop(pending, again, (tf.constant(1), draw(k)))[1]

  return finite


class Scorer:
  """Scores image sets under one model, strategy and `K`; its traced step is kept across sets.

  The step (dequantisation draws, the flow, the gather of the replicas'
  results) is a `tf.function` built once per kind of batch (with or without
  labels, latents, images) and traced once: the seed is a tensor argument,
  the batch dimension is left open, and the `K` draws run in a
  `tf.while_loop` (one pass of the flow in the graph for any `K`). So a
  second set, another seed or a last partial batch costs no retracing, and
  score.py's in-distribution, out-of-distribution and training sets share
  the trace of each kind of batch.

  Args:
    model: the trained model (its variables under `strategy`'s scope when
      there are several replicas).
    strategy: a `tf.distribute` strategy (default: the current one); global
      batches are split over its replicas.
    n_dequant_samples: `K >= 1` dequantisation draws per image.
    dequantization: `None` (the model's: `q` for a variational model) or
      `"uniform"`.
    use_labels: condition a class-conditional model on a set's labels
      (else its likelihood is marginalised over the classes).
  """

  def __init__(self, model: model_lib.GlowModel, strategy: Optional[tf.distribute.Strategy] = None,
               n_dequant_samples: int = 1, use_labels: bool = True,
               dequantization: Optional[str] = None):
    self.model = model
    self.dequantization = dequantization
    self.strategy = strategy or tf.distribute.get_strategy()
    self.n_dequant_samples = config_lib.check_n_dequant_samples(n_dequant_samples)
    self.use_labels = use_labels
    self._steps: Dict[tuple, Callable] = {}

  def _log_prob(self, images: tf.Tensor, labels: Optional[tf.Tensor], index: tf.Tensor,
                seed: tf.Tensor, conditioning: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`log P_K(x)` in nats `[B]` of uint8 images `[B, H, W, C]` numbered `index` `[B]`.

    `conditioning`: a conditional model's condition of each image (then
    `log P_K(x | c)`).
    """
    model, cfg = self.model, self.model.config

    def draw(k):  # log p(x + u_k) [B]
      noise = dequantization_noise(index, model.image_shape, seed, k)
      if cfg.ycond and labels is None:  # p(x) = mean_y p(x | y), uniform over the classes
        by_class = [model.log_prob(images, tf.fill(tf.shape(images)[:1], y), noise=noise,
                                   dtype=tf.float64, conditioning=conditioning,
                                   dequantization=self.dequantization)
                    for y in range(cfg.n_classes)]
        return tf.reduce_logsumexp(tf.stack(by_class), 0) - math.log(cfg.n_classes)
      return model.log_prob(images, labels if cfg.ycond else None, noise=noise, dtype=tf.float64,
                            conditioning=conditioning, dequantization=self.dequantization)

    n = self.n_dequant_samples
    if ((self.dequantization or cfg.dequantization) == "variational"
        and cfg.dequant_sampling == "generate"):
      draw = _finite_draws(draw, n)
    if n == 1:
      return draw(0)
    draws = tf.TensorArray(tf.float64, size=n, element_shape=images.shape[:1])
    _, draws = tf.while_loop(lambda k, _: k < n, lambda k, d: (k + 1, d.write(k, draw(k))),
                             (tf.constant(0), draws))
    return tf.reduce_logsumexp(draws.stack(), 0) - math.log(n)

  def _step(self, with_labels: bool, latents: bool, images: bool) -> Callable:
    """The traced `step(distributed batch, seed) -> gathered {"nll", "index", ...}`."""
    key = (with_labels, latents, images)
    if key in self._steps:
      return self._steps[key]
    model, strategy = self.model, self.strategy

    def replica(b, seed):
      labels = b["label"] if with_labels else None
      # A conditional model scores log p(x | c), c built from each image (its label, its
      # attributes) as in training.
      conditioning = model.batch_conditions(b)["conditioning"]
      out = {"nll": -self._log_prob(b["image"], labels, b["index"], seed, conditioning),
             "index": b["index"]}
      if with_labels:
        out["label"] = b["label"]
      if latents:  # encode's mid-bin latents (decode gives the images back exactly)
        encode_labels = labels if model.config.ycond and with_labels else (
            tf.zeros(tf.shape(b["image"])[:1], tf.int32) if model.config.ycond else None)
        out["z"] = model.encode(b["image"], encode_labels, conditioning)
      if images:
        out["image"] = b["image"]
      return out

    @tf.function(autograph=False, reduce_retracing=True)
    def step(batch, seed):
      out = strategy.run(replica, args=(batch, seed))
      return tf.nest.map_structure(lambda v: strategy.gather(v, axis=0), out)

    self._steps[key] = step
    return step

  def score(self, image_set: ImageSet, batch_size: int = 100, seed: int = 0,
            output: Optional[OutputWriter] = None, latents: Optional[LatentWriter] = None,
            progress: Optional[metrics.Progress] = None, png_bits: bool = False) -> ScoreSummary:
    """Scores every image of `image_set` once; streams records to `output` and latents to `latents`.

    Args:
      image_set: what to score.
      batch_size: global batch size (a multiple of the replicas).
      seed: seeds the draws (`dequantization_noise`).
      output, latents: writers (closed by the caller).
      progress: where the progress bar goes.
      png_bits: also measure each image's lossless PNG length in bits per
        dimension (`glow_tf.ood.png_bits_per_dim`), into `summary.png_bits_per_dim`.

    Returns:
      The `ScoreSummary`; its arrays hold every image's nats and bits/dim by index.
    """
    strategy = self.strategy
    config_lib.check_replica_divisible(batch_size, strategy.num_replicas_in_sync, "--batch_size")
    with_labels = self.use_labels and "label" in image_set.dataset.element_spec
    step = self._step(with_labels, latents is not None, latents is not None or png_bits)
    num_dims = self.model.num_dims
    # Every worker reads the set and keeps its share of each global batch (sharding by file
    # would give the workers unequal numbers of batches). No autotuning: an autotuned
    # iterator's tuning thread delays its shut-down after the last batch and takes CPU
    # from the flow.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.autotune.enabled = False
    dist = strategy.experimental_distribute_dataset(
        image_set.dataset.batch(batch_size).prefetch(2).with_options(options))
    start = time.time()  # (the images/s of the summary include a first trace)
    seed_t = tf.constant(seed, tf.int64)
    # Traced for the dataset's spec (batch dimension open): the last, partial batch and the
    # next set of the same kind reuse this trace.
    step.get_concrete_function(dist.element_spec, tf.TensorSpec([], tf.int64))
    nll_all = np.full([image_set.size], np.nan)
    scored = np.zeros([image_set.size], bool)
    png_all = np.full([image_set.size], np.nan) if png_bits else None
    done = 0
    for batch in dist:
      out = step(batch, seed_t)
      index = out["index"].numpy()
      nll = out["nll"].numpy().astype(np.float64)
      labels = out["label"].numpy() if with_labels else None
      if np.any(scored[index]):
        raise RuntimeError("an image was scored twice: the input pipeline repeats examples.")
      scored[index] = True
      nll_all[index] = nll
      if output is not None:
        bits = nll / (num_dims * math.log(2.))
        for j, i in enumerate(index):
          output.write({"index": int(i), "file": image_set.names[i] if image_set.names else None,
                        "label": int(labels[j]) if labels is not None else None,
                        "nats": float(nll[j]), "bits_per_dim": float(bits[j])})
      if latents is not None:
        latents.write(index, out["image"].numpy(), [z.numpy() for z in out["z"]], labels)
      if png_all is not None:
        png_all[index] = ood.png_bits_per_dim(out["image"].numpy())
      done += len(index)
      if progress is not None:
        elapsed = time.time() - start
        progress.update(f"{done}/{image_set.size} images, {done / max(elapsed, 1e-9):.1f} images/s",
                        done / image_set.size)
    if done != image_set.size or not np.all(scored):
      raise RuntimeError(f"scored {done} of {image_set.size} images: the input pipeline lost some.")
    if not np.all(np.isfinite(nll_all)):
      bad = np.flatnonzero(~np.isfinite(nll_all))[:5].tolist()
      raise ValueError(
          f"non-finite likelihoods for images {bad}: the checkpoint may be damaged (NaN "
          "weights), or the model maps these images to latents beyond float32's range "
          "(above ~3.4e38, e.g. a split prior's log-scale below about -88).")
    return ScoreSummary(nll_all / (num_dims * math.log(2.)), nll_all, time.time() - start,
                        image_set.description, png_all)

  def tracing_count(self) -> int:
    """How often the steps have been traced (one per kind of batch after warm-up)."""
    return sum(f.experimental_get_tracing_count() for f in self._steps.values())


def score_images(model: model_lib.GlowModel, image_set: ImageSet,
                 strategy: Optional[tf.distribute.Strategy] = None, batch_size: int = 100,
                 n_dequant_samples: int = 1, seed: int = 0, output: Optional[OutputWriter] = None,
                 latents: Optional[LatentWriter] = None, progress: Optional[metrics.Progress] = None,
                 use_labels: bool = True, png_bits: bool = False) -> ScoreSummary:
  """`Scorer(model, strategy, n_dequant_samples, use_labels).score(image_set, ...)`, once.

  For several sets (or several passes) under one model keep a `Scorer`: it
  traces its step once.
  """
  return Scorer(model, strategy, n_dequant_samples, use_labels).score(
      image_set, batch_size, seed, output, latents, progress, png_bits)


# ---- score.py's job ------------------------------------------------------------------


def _image_set(loaded: sampling.LoadedModel, dataset: Optional[str], data_dir: Optional[str],
               split: str, images: Sequence[str], limit: Optional[int], download: bool,
               flags: str = "") -> ImageSet:
  """The set the flags `--{flags}dataset`, `--{flags}data_dir`, ... name (`flags`: "" or "ood_")."""
  shape = loaded.model.image_shape
  if images:
    return file_images(images, shape)
  own = loaded.config.data
  if dataset is None or dataset == own.dataset:
    data = dataclasses.replace(own, data_dir=data_dir or own.data_dir, train_subset=None,
                               n_test=None, download=download)
  else:
    data = config_lib.DataConfig(dataset=dataset, data_dir=data_dir, image_size=shape[0],
                                 download=download)
  try:
    return dataset_images(data, split, shape, limit)
  except (data_lib.DataError, FileNotFoundError) as e:
    where = (f" (the data directory of --{flags}dataset is --{flags}data_dir)" if flags else "")
    raise data_lib.DataError(f"--{flags}dataset={data.dataset} cannot be read{where}: {e}") from e


def _derived(path: str, suffix: str) -> str:
  stem, ext = os.path.splitext(path)
  return f"{stem}_{suffix}{ext}"


def _score_set(scorer, loaded, image_set, config, progress, output_path, latents_path, png_bits):
  if not distribute.is_chief(scorer.strategy):  # every worker scores its share; the chief writes
    output_path = latents_path = ""
  output = OutputWriter(output_path, config.overwrite) if output_path else None
  latents = (LatentWriter(latents_path, image_set.size, loaded.model.image_shape,
                          loaded.model.glow.latent_shapes, config.overwrite)
             if latents_path else None)
  try:
    summary = scorer.score(image_set, config.batch_size, config.seed, output, latents, progress,
                           png_bits=png_bits)
  except BaseException:
    for writer in (output, latents):
      if writer is not None:
        writer.abort()
    raise
  written = [w.close() for w in (output, latents) if w is not None]
  return summary, written


def _histogram_path(config: config_lib.ScoreConfig) -> str:
  return config.histogram or (os.path.splitext(config.output)[0] + "_hist.png" if config.output
                              else "ood_histogram.png")


def _check_outputs(config: config_lib.ScoreConfig) -> None:
  """Stops before any work if a file the run would write exists (and `--overwrite` is not set)."""
  if config.overwrite:
    return
  planned = [("--output", config.output), ("--latents", config.latents)]
  if config.has_ood:
    planned += [("--output", _derived(config.output, "ood") if config.output else ""),
                ("--latents", _derived(config.latents, "ood") if config.latents else ""),
                ("--histogram", _histogram_path(config))]
  for flag, path in planned:
    if path:
      _refuse_existing(flag, path, overwrite=False)


def run(config: config_lib.ScoreConfig, log: Callable[[str], None] = print) -> Dict[str, object]:
  """Scores the images `config` names (and an out-of-distribution set), writes what it asks.

  Returns:
    `{"in": ScoreSummary, "ood": ScoreSummary or None, "report": the
    `glow_tf.ood.ood_report` of the two sets or None, "files": [paths written]}`.
  """
  _check_outputs(config)
  strategy = distribute.make_strategy(config.strategy)
  if not distribute.is_chief(strategy):  # the other workers score their shares silently
    log = lambda *_: None
  with strategy.scope():
    loaded = sampling.load_model(config.logdir, config.restore_path, config.polyak,
                                 fallback_to_shipped=config.default_logdir
                                 and not config.restore_path)
  if loaded.directory == sampling.SHIPPED_MODEL:
    log(f"no trained model in {config.logdir}: using the model shipped in {sampling.SHIPPED_MODEL}")
  dequantization = config.dequantization or loaded.config.model.dequantization
  log(f"loaded {loaded.checkpoint}: {loaded.weights}; "
      f"{strategy.num_replicas_in_sync} replica(s), K={config.n_dequant_samples}, "
      f"{dequantization} dequantisation" + (" (q as the proposal)"
                                            if dequantization == "variational" else ""))
  progress = metrics.Progress(distribute.is_chief(strategy))
  in_set = _image_set(loaded, config.dataset, config.data_dir, config.split, config.images,
                      config.max_images, config.download)
  ood_set = (_image_set(loaded, config.ood_dataset, config.ood_data_dir, config.ood_split,
                        config.ood_images, config.max_images, config.download, "ood_")
             if config.has_ood else None)
  files = []
  scorer = Scorer(loaded.model, strategy, config.n_dequant_samples,
                  dequantization=config.dequantization or None)
  summary, written = _score_set(scorer, loaded, in_set, config, progress, config.output,
                                config.latents, png_bits=config.has_ood)
  files += written
  progress.log(summary.line())
  result = {"in": summary, "ood": None, "report": None, "files": files}
  if ood_set is None:
    return result
  ood_summary, written = _score_set(
      scorer, loaded, ood_set, config, progress,
      _derived(config.output, "ood") if config.output else "",
      _derived(config.latents, "ood") if config.latents else "", png_bits=True)
  files += written
  progress.log(ood_summary.line())
  m = config.typicality_batch
  train_nats = None
  if min(summary.n, ood_summary.n) >= 2 * m:
    try:
      train_set = _image_set(loaded, None, config.data_dir, "train", (),
                             config.typicality_train_images, config.download)
    except (ValueError, FileNotFoundError) as e:
      log(f"typicality test skipped: the model's training data cannot be read ({e})")
    else:
      train_nats = scorer.score(train_set, config.batch_size, config.seed + 1,
                                progress=progress).nats
  else:
    log(f"typicality test skipped: fewer than {2 * m} images in a set (--typicality_batch={m})")
  report = ood.ood_report(
      summary.bits_per_dim, ood_summary.bits_per_dim, train_nats=train_nats,
      num_dims=None if train_nats is None else loaded.model.num_dims, typicality_batch=m,
      in_png_bits_per_dim=summary.png_bits_per_dim,
      ood_png_bits_per_dim=ood_summary.png_bits_per_dim)
  progress.log(f"out-of-distribution detection, {in_set.description} (positive) vs "
               f"{ood_set.description}:")
  for line in ood.report_table(report):
    progress.log(line)
  histogram = _histogram_path(config)
  if not distribute.is_chief(strategy):
    result.update(ood=ood_summary, report=report, files=files)
    return result
  files.append(ood.save_histogram(histogram, summary.bits_per_dim, ood_summary.bits_per_dim,
                                  in_set.description, ood_set.description,
                                  title=f"{os.path.basename(loaded.directory)}: bits/dim"))
  progress.log(f"wrote {histogram}")
  result.update(ood=ood_summary, report=report, files=files)
  return result
