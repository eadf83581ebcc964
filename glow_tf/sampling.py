"""Loading trained models and what sample.py draws: temperature grids, reconstructions,
interpolations and attribute manipulation (the original's demo).

Latents here are the flat standard-normal `eps` of `Glow` (all levels,
concatenated), as in the original's `encode`/`decode` demo.
"""

import dataclasses
import hashlib
import io
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import images as images_lib
from glow_tf import metrics
from glow_tf import model as model_lib
from glow_tf import optim
from glow_tf import rundir as rundir_lib
from glow_tf.config import SampleConfig
from glow_tf.ops import TensorLike
from glow_tf.rundir import NoCheckpointError

__all__ = ["LoadedModel", "load_model", "temperature_grid", "conditional_grid", "conditions_grid",
           "reconstruction_grid",
           "interpolation_grid", "attribute_direction", "manipulation_grid",
           "run", "SHIPPED_MODEL"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_MODEL = os.path.join(REPO_ROOT, "pretrained", "fashion_mnist")


@dataclasses.dataclass
class LoadedModel:
  """A model rebuilt from a run directory, with the checkpoint it came from."""
  model: model_lib.GlowModel
  config: config_lib.RunConfig
  checkpoint: str
  polyak: bool
  run_dir: rundir_lib.RunDir  # where config.json lives (directions are cached below it)
  weights: str = ""  # which weights were loaded, and why

  @property
  def directory(self) -> str:
    return self.run_dir.path


def load_model(logdir: str = "./logs", restore_path: str = "", polyak: Optional[bool] = None,
               fallback_to_shipped: bool = False) -> LoadedModel:
  """Rebuilds the model from its saved config and restores its weights.

  Args:
    logdir: a train.py logdir (its `checkpoints/` and `config.json`), or an
      exported model directory.
    restore_path: a checkpoint prefix or directory that takes precedence;
      `"best"`: `logdir`'s kept checkpoint with the best full test bits/dim.
    polyak: `True` for the Polyak-averaged weights of a training checkpoint,
      `False` for the raw ones, `None` (default) for the ones with the better
      test bits/dim in the run's latest evaluation (`weights_choice`).
    fallback_to_shipped: with no checkpoint in `logdir`, load the model
      shipped in `pretrained/fashion_mnist` instead of failing.

  Raises:
    NoCheckpointError: nothing to load; the message says where we looked and
      what command makes a model.
  """
  checkpoint = rundir_lib.resolve_checkpoint(logdir, restore_path)
  if checkpoint is None and fallback_to_shipped and os.path.isdir(SHIPPED_MODEL):
    checkpoint = rundir_lib.RunDir(SHIPPED_MODEL).latest_checkpoint()
  if checkpoint is None:
    run_dir = rundir_lib.RunDir(os.path.abspath(logdir))
    raise NoCheckpointError(
        f"no checkpoint found in {run_dir.path} (looked in {run_dir.checkpoint_dir}). Train "
        f"one with e.g. `python train.py --dataset=fashion_mnist --n_levels=3 --depth=8 "
        f"--width=96 --logdir={logdir}`, or pass --restore_path.")
  run_dir = rundir_lib.run_dir_of(checkpoint)
  config = run_dir.read_config()
  model = model_lib.GlowModel(config.model)
  reader = tf.train.load_checkpoint(checkpoint)
  keys = reader.get_variable_to_shape_map()
  if not any(k.startswith("model/glow/") for k in keys):
    raise NoCheckpointError(f"{checkpoint} holds no glow_tf model weights.")
  if any(k.startswith("optimizer/") for k in keys):  # training: model, optimiser, step
    optimizer = optim.GlowOptimizer(beta2=_polyak_decay(reader, config))
    optimizer.build(list(model.trainable_variables))
    evaluation = metrics.Evaluation()  # stays NaN where the checkpoint has none
    tf.train.Checkpoint(model=model, optimizer=optimizer, evaluation=evaluation
                        ).restore(checkpoint).expect_partial()
    polyak, weights = weights_choice(evaluation, polyak)
    if polyak:
      optimizer.assign_polyak(list(model.trainable_variables))
  else:  # an exported model: weights only (chosen at export)
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    polyak, weights = bool(polyak), "the exported weights"
  return LoadedModel(model, config, checkpoint, polyak, run_dir, weights)


def weights_choice(evaluation: metrics.Evaluation, polyak: Optional[bool] = None
                   ) -> Tuple[bool, str]:
  """Which weights of a training checkpoint to use, and a sentence saying which and why.

  `polyak=None` picks the weights (raw or Polyak-averaged) with the better
  test bits/dim in the run's latest evaluation, which train.py saves in the
  checkpoint (a full one when there was one, else the quick estimate); with
  no evaluation (checkpoints of earlier versions, or before the first epoch
  end) the Polyak averages, glow-tf's earlier default.

  Args:
    evaluation: the checkpoint's `glow_tf.metrics.Evaluation`, restored.
    polyak: `True`/`False` force the averages/the raw weights.

  Returns:
    (use the Polyak averages, the sentence).
  """
  better = evaluation.use_polyak()
  if polyak is None:
    if better is None:
      return True, "the Polyak-averaged weights (the run has no test evaluation to choose by)"
    return better, (f"the {'Polyak-averaged' if better else 'raw'} weights (better "
                    f"{evaluation.describe()})")
  figures = "" if better is None else f"; {evaluation.describe()}"
  return polyak, f"the {'Polyak-averaged' if polyak else 'raw'} weights (as asked{figures})"


_POLYAK_DECAY_KEY = "optimizer/polyak_decay/.ATTRIBUTES/VARIABLE_VALUE"


def _polyak_decay(reader, config: config_lib.RunConfig) -> float:
  """The Polyak averaging decay the run used: saved in its checkpoint (`reader`, `tf.train.load_checkpoint`'s).

  Checkpoints written before the decay was saved (glow-tf's first days)
  get it from the run's schedule, which needs the training set's size when
  the config does not fix `n_train`.
  """
  if reader.has_tensor(_POLYAK_DECAY_KEY):
    return float(reader.get_tensor(_POLYAK_DECAY_KEY))
  n_train = config.train.n_train or data_lib.load(config.data).num_train
  return config.train.schedule(config.model.image_shape[0], 1, n_train).beta2


# ---- Grids -------------------------------------------------------------------------


def zoom_for(image_shape: Sequence[int], min_size: int = 64) -> int:
  """An integer upscaling so that small images are comfortable to look at."""
  return max(1, -(-min_size // image_shape[0]))


def _zoom(images, factor):
  if factor == 1:
    return images
  return np.repeat(np.repeat(images, factor, axis=-3), factor, axis=-2)


def finish_grid(rows: Sequence[np.ndarray], image_shape: Sequence[int], zoom: Optional[int] = None
                ) -> np.ndarray:
  zoom = zoom or zoom_for(image_shape)
  return images_lib.make_grid([_zoom(np.asarray(r), zoom) for r in rows])


def temperature_grid(model: model_lib.GlowModel, temperatures: Sequence[float], n: int,
                     seed: int = 0, labels: Optional[TensorLike] = None) -> List[np.ndarray]:
  """One row of `n` samples per temperature (uint8 `[n, height, width, channels]` rows)."""
  temperatures = [config_lib.check_temperature(t) for t in temperatures]
  return [model.sample(n, t, labels=labels, seed=[seed, i]).numpy()
          for i, t in enumerate(temperatures)]


def condition_pictures(model: model_lib.GlowModel, conditioning: TensorLike) -> np.ndarray:
  """An image condition as uint8 pictures of the model's image shape `[B, H, W, C]`.

  A low-resolution condition is upscaled (each pixel repeated), a gray one
  repeated over the channels.
  """
  c = np.asarray(conditioning, np.float32)
  h, w, channels = model.image_shape
  c = np.repeat(np.repeat(c, h // c.shape[1], axis=1), w // c.shape[2], axis=2)
  if c.shape[-1] != channels:
    c = np.repeat(c, channels, axis=-1)
  return np.clip(np.floor((c + .5) * 256.), 0., 255.).astype(np.uint8)


def conditional_grid(model: model_lib.GlowModel, images: TensorLike, temperatures: Sequence[float],
                     n: int, seed: int = 0, labels: Optional[TensorLike] = None) -> List[np.ndarray]:
  """A conditional model with an image condition (`lowres`, `gray`): one row per image.

  Each row: the image's condition (upscaled), `n` samples given it at each
  temperature (0: the decoded prior means, SRFlow's mean image), the image.
  `labels` `[B]`: a `ycond` model's label of each row.
  """
  c = model.condition(images)
  shown = model.postprocess(model.preprocess(images, noise=0.5)).numpy()
  samples = [model.sample(n, t, labels=labels, seed=[seed, i], conditioning=c).numpy()
             for i, t in enumerate(temperatures)]  # each [n, B, H, W, C]
  pictures = condition_pictures(model, c)
  return [np.concatenate([pictures[b:b + 1]] + [s[:, b] for s in samples] + [shown[b:b + 1]])
          for b in range(len(shown))]


def conditions_grid(model: model_lib.GlowModel, conditioning: TensorLike,
                    temperatures: Sequence[float], seed: int = 0,
                    labels: Optional[TensorLike] = None) -> List[np.ndarray]:
  """A conditional model: one row per temperature, one sample given each condition.

  `conditioning` `[n] + conditioning_shape`: the condition of each column
  (a class or attributes chosen by sample.py, or the conditions of test
  images in train.py's grid); `labels` `[n]`: a `ycond` model's label of
  each column.
  """
  return [model.sample(1, t, labels=labels, seed=[seed, i], conditioning=conditioning).numpy()[0]
          for i, t in enumerate(temperatures)]


def reconstruction_grid(model: model_lib.GlowModel, images: TensorLike, labels: Optional[TensorLike] = None
                        ) -> Tuple[List[np.ndarray], int]:
  """Rows: the images (quantised to the model's bits) and their decode(encode(.)).

  Returns:
    rows, max_abs_difference (0 when the reconstruction is exact).
  """
  shown = model.postprocess(model.preprocess(images, noise=0.5)).numpy()
  recon = model.decode(model.encode(images, labels), labels).numpy()
  return [shown, recon], int(np.abs(shown.astype(int) - recon.astype(int)).max())


def flat_latents(model: model_lib.GlowModel, images: TensorLike, labels: Optional[TensorLike] = None) -> np.ndarray:
  return model.glow.join_latents(model.encode(images, labels)).numpy()


def decode_flat(model: model_lib.GlowModel, eps: np.ndarray, labels: Optional[TensorLike] = None) -> np.ndarray:
  return model.decode(model.glow.split_latent(tf.constant(eps, tf.float32)), labels).numpy()


def interpolation_grid(model: model_lib.GlowModel, pairs: Sequence[Tuple[TensorLike, TensorLike]], n_steps: int,
                       labels: Optional[TensorLike] = None) -> List[np.ndarray]:
  """One row per image pair: linear interpolation of the latents in `n_steps` steps."""
  rows = []
  for a, b in pairs:
    z = flat_latents(model, np.stack([a, b]))
    alphas = np.linspace(0., 1., n_steps)[:, None]
    rows.append(decode_flat(model, (1 - alphas) * z[0] + alphas * z[1], labels))
  return rows


def attribute_direction(model: model_lib.GlowModel, examples: tf.data.Dataset, attribute: Union[str, int],
                        names: Sequence[str], batch_size: int = 100, cache_dir: Optional[str] = None,
                        max_examples: Optional[int] = None, cache_key: str = "") -> np.ndarray:
  """The original's manipulation direction: mean latent with the attribute minus without.

  Args:
    model: a GlowModel.
    examples: unbatched `tf.data` examples with `image` and `attr` (`[40]`
      of +-1) or `label`.
    attribute: an attribute name (CelebA-style), or a class name or index.
    names: the dataset's attribute names, or class names when it has none.
    cache_dir: where the direction is cached as `.npy`, or `None`.
    max_examples: use the first examples only.
    cache_key: identifies the weights (checkpoint and averaging) in the cache name.

  Raises:
    ValueError: unknown attribute (the message lists the available ones).
  """
  key = str(attribute)
  use_attr = "attr" in examples.element_spec
  if key in names:
    index = names.index(key)
  elif not use_attr and key.isdigit() and int(key) < len(names):
    index = int(key)
  else:
    raise ValueError(f"unknown attribute {attribute!r}; available: {', '.join(map(str, names))}.")
  cache = None
  if cache_dir:
    tag = hashlib.sha1(f"{cache_key}|{key}|{max_examples}".encode()).hexdigest()[:12]
    cache = os.path.join(cache_dir, f"direction_{tag}.npy")
    if os.path.exists(cache):
      return np.load(cache)
  sums = {True: 0., False: 0.}
  counts = {True: 0, False: 0}
  ds = examples.take(max_examples) if max_examples else examples
  for batch in ds.batch(batch_size):
    z = flat_latents(model, batch["image"])
    has = (batch["attr"][:, index].numpy() > 0) if use_attr else (batch["label"].numpy() == index)
    for flag in (True, False):
      sums[flag] = sums[flag] + z[has == flag].sum(0)
      counts[flag] += int((has == flag).sum())
  if not counts[True] or not counts[False]:
    raise ValueError(f"attribute {attribute!r} needs examples with and without it; found "
                     f"{counts[True]} with and {counts[False]} without.")
  direction = (sums[True] / counts[True] - sums[False] / counts[False]).astype(np.float32)
  if cache:
    buffer = io.BytesIO()
    np.save(buffer, direction)
    rundir_lib.atomic_write(cache, buffer.getvalue())
  return direction


def manipulation_grid(model: model_lib.GlowModel, images: TensorLike, direction: np.ndarray, scales: Sequence[float]
                      ) -> List[np.ndarray]:
  """One row per image: its latent moved by `scale * direction` for each scale."""
  z = flat_latents(model, images)
  return [decode_flat(model, zi[None] + np.asarray(scales, np.float32)[:, None] * direction[None])
          for zi in z]


# ---- sample.py's job ---------------------------------------------------------------


def _vector_conditions(loaded, config, ds_names):
  """`[n_samples, K]` conditions of a `class` or `attributes` model from --label / --attributes."""
  cfg, n = loaded.config.model, config.n_samples
  if cfg.condition == "class":
    return np.eye(cfg.n_classes, dtype=np.float32)[_class_labels(cfg.n_classes, n, config.label)]
  names = list(ds_names())
  unknown = [a for a in config.attributes if a not in names]
  if unknown:
    raise ValueError(f"--attributes: unknown {', '.join(unknown)}; available: {', '.join(names)}.")
  vector = np.zeros([len(names)], np.float32)
  vector[[names.index(a) for a in config.attributes]] = 1.
  return np.tile(vector, [n, 1])


def _class_labels(n_classes, n, label):
  """`[n]` class indices: `--label` for every one, or with none given the classes in turn."""
  if label is None:
    return np.arange(n) % n_classes
  if str(label).isdigit() and int(label) < n_classes:
    return np.full([n], int(label))
  raise ValueError(f"--label {label!r} is not a class index in 0..{n_classes - 1}.")


def _labels_for(loaded, n, label):
  cfg = loaded.config.model
  if not cfg.ycond:
    if label is not None:
      raise ValueError("--label is for class-conditional models (trained with --ycond or "
                       "--condition=class).")
    return None
  return _class_labels(cfg.n_classes, n, label)


def _dataset(loaded, data_dir):
  cfg = loaded.config.data
  if data_dir:
    cfg = dataclasses.replace(cfg, data_dir=data_dir)
  return data_lib.load(dataclasses.replace(cfg, train_subset=None, n_test=None))


def _input_images(config, loaded, n):
  """Images from --images files, else the first `n` test images of the model's dataset."""
  shape = loaded.model.image_shape
  if config.images:
    return np.stack([images_lib.load_image(p, shape) for p in config.images])
  ds = _dataset(loaded, config.data_dir)
  return next(iter(ds.test_dataset(n)))["image"].numpy()


def run(config: SampleConfig, log: Callable[[str], Any] = print) -> Tuple[str, np.ndarray]:
  """Loads the model, draws what `config.mode` asks for and writes one PNG.

  Returns:
    (path of the PNG, the uint8 grid).
  """
  loaded = load_model(config.logdir, config.restore_path, config.polyak,
                      fallback_to_shipped=config.default_logdir and not config.restore_path)
  model = loaded.model
  shipped = loaded.directory == SHIPPED_MODEL
  if shipped:
    log(f"no trained model in {config.logdir}: using the model shipped in {SHIPPED_MODEL}")
  log(f"loaded {loaded.checkpoint}: {loaded.weights}")
  output = config.output or (f"{config.mode}.png" if shipped
                             else rundir_lib.RunDir(config.logdir).output_path(f"{config.mode}.png"))
  n = config.n_samples
  condition = loaded.config.model.condition
  if (config.mode == "conditional") != loaded.config.model.is_conditional:
    raise ValueError(
        f"--mode=conditional is for conditional models; this one is conditioned on "
        f"{condition!r}." if config.mode == "conditional" else
        f"this model is a conditional Glow (condition {condition!r}): use --mode=conditional.")
  if config.mode == "conditional":
    ycond = loaded.config.model.ycond
    if condition in config_lib.IMAGE_CONDITIONS:
      images = _input_images(config, loaded, config.n_conditions)
      labels = _labels_for(loaded, len(images), config.label) if ycond else None
      rows = conditional_grid(model, images, config.temperatures, n, config.seed, labels)
      log(f"condition {condition!r}: per row the condition, {n} samples at each temperature "
          f"{list(config.temperatures)}, the image")
    else:
      c = _vector_conditions(loaded, config,
                             lambda: _dataset(loaded, config.data_dir).attribute_names or ())
      labels = None
      if ycond:  # the class of the condition, else --label or the classes in turn
        labels = (np.argmax(c, -1) if condition == "class"
                  else _labels_for(loaded, len(c), config.label))
      rows = conditions_grid(model, c, config.temperatures, config.seed, labels)
      log(f"condition {condition!r}: one row per temperature {list(config.temperatures)}")
  elif config.mode == "sample":
    labels = _labels_for(loaded, n, config.label)
    rows = temperature_grid(model, config.temperatures, n, config.seed, labels)
    log(f"temperatures {list(config.temperatures)}: one row each")
  elif config.mode == "reconstruct":
    images = _input_images(config, loaded, n)
    labels = _labels_for(loaded, len(images), config.label)
    rows, diff = reconstruction_grid(model, images, labels)
    log(f"reconstruction: max abs difference {diff} (0 = exact)")
  elif config.mode == "interpolate":
    if config.images:
      pairs = [tuple(_input_images(config, loaded, 2))]
    else:
      images = _input_images(config, loaded, 2 * n)
      pairs = [(images[2 * i], images[2 * i + 1]) for i in range(min(n, len(images) // 2))]
    labels = _labels_for(loaded, config.n_steps, config.label)
    rows = interpolation_grid(model, pairs, config.n_steps, labels)
  else:
    ds = _dataset(loaded, config.data_dir)
    names = ds.attribute_names or ds.class_names
    if not names:
      raise ValueError(f"dataset {loaded.config.data.dataset!r} has neither attributes nor labels.")
    direction = attribute_direction(
        model, ds.labelled_examples("train"), config.attribute, list(names),
        cache_dir=loaded.run_dir.directions_dir if not shipped else None,
        max_examples=config.n_direction_examples,
        cache_key=f"{loaded.checkpoint}|{loaded.polyak}")
    images = _input_images(config, loaded, n)
    rows = manipulation_grid(model, images, direction, config.scales)
    log(f"attribute {config.attribute!r}: scales {list(config.scales)} along each row")
  grid = finish_grid(rows, model.image_shape, config.zoom or None)
  images_lib.save_png(output, grid)
  log(f"wrote {output}")
  return output, grid
