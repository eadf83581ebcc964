"""Loading trained models and what sample.py draws: temperature grids, reconstructions,
interpolations and attribute manipulation (the original's demo).

Latents here are the flat standard-normal `eps` of `Glow` (all levels,
concatenated), as in the original's `encode`/`decode` demo.
"""

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from glow_tf import images as images_lib
from glow_tf import model as model_lib
from glow_tf import optim

__all__ = ["LoadedModel", "load_model", "temperature_grid", "reconstruction_grid",
           "interpolation_grid", "attribute_direction", "manipulation_grid",
           "export_model", "SHIPPED_MODEL", "NoCheckpointError"]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_MODEL = os.path.join(REPO_ROOT, "pretrained", "fashion_mnist")


class NoCheckpointError(FileNotFoundError):
  """No trained model where the user pointed; the message says where we looked and what to run."""


@dataclasses.dataclass
class LoadedModel:
  model: model_lib.GlowModel
  config: object  # train_lib.GlowConfig
  checkpoint: str
  polyak: bool
  directory: str  # where config.json lives (directions are cached below it)


def _config_path_for(checkpoint):
  d = os.path.dirname(checkpoint)
  for candidate in (d, os.path.dirname(d)):
    path = os.path.join(candidate, "config.json")
    if os.path.exists(path):
      return path
  raise NoCheckpointError(f"no config.json beside {checkpoint} or its parent directory: "
                          "sample.py rebuilds the model from the config train.py writes.")


def find_checkpoint(logdir, restore_path=""):
  """The checkpoint prefix to load: `restore_path` (prefix or directory) or `logdir`'s latest."""
  if restore_path:
    if os.path.isdir(restore_path):
      for d in (restore_path, os.path.join(restore_path, "checkpoints")):
        found = tf.train.latest_checkpoint(d)
        if found:
          return found
      raise NoCheckpointError(f"no checkpoint in --restore_path {restore_path!r} "
                              f"(looked in it and in {os.path.join(restore_path, 'checkpoints')}).")
    if tf.io.gfile.exists(restore_path + ".index"):
      return restore_path
    raise NoCheckpointError(f"--restore_path {restore_path!r} does not exist: give a checkpoint "
                            "prefix (e.g. logs/checkpoints/ckpt-1200) or a directory.")
  for d in (os.path.join(logdir, "checkpoints"), logdir):
    found = tf.train.latest_checkpoint(d)
    if found:
      return found
  return None


def load_model(logdir="./logs", restore_path="", polyak=True, fallback_to_shipped=False):
  """Rebuilds the model from its saved config and restores its weights.

  Args:
    logdir: a train.py logdir (its `checkpoints/` and `config.json`), or an
      exported model directory.
    restore_path: a checkpoint prefix or directory that takes precedence.
    polyak: use the Polyak-averaged weights when the checkpoint has them.
    fallback_to_shipped: with no checkpoint in `logdir`, load the model
      shipped in `pretrained/fashion_mnist` instead of failing.

  Raises:
    NoCheckpointError: nothing to load; the message says where we looked and
      what command makes a model.
  """
  from glow_tf import train_lib  # pylint: disable=import-outside-toplevel
  checkpoint = find_checkpoint(logdir, restore_path)
  if checkpoint is None and fallback_to_shipped and os.path.isdir(SHIPPED_MODEL):
    checkpoint = find_checkpoint(SHIPPED_MODEL)
  if checkpoint is None:
    raise NoCheckpointError(
        f"no checkpoint found in {os.path.abspath(logdir)} (looked in "
        f"{os.path.join(os.path.abspath(logdir), 'checkpoints')}). Train one with e.g. "
        f"`python train.py --dataset=fashion_mnist --n_levels=3 --depth=8 --width=96 "
        f"--logdir={logdir}`, or pass --restore_path.")
  config_path = _config_path_for(checkpoint)
  config = train_lib.GlowConfig.load(config_path)
  model = model_lib.GlowModel(config.model)
  keys = {k.split("/")[0] for k, _ in tf.train.list_variables(checkpoint)}
  if "optimizer" in keys:  # a training checkpoint: model, optimiser (with Polyak), step
    optimizer = optim.GlowOptimizer(beta2=_polyak_decay_of(checkpoint, config))
    optimizer.build(list(model.trainable_variables))
    tf.train.Checkpoint(model=model, optimizer=optimizer).restore(checkpoint).expect_partial()
    if polyak:
      optimizer.assign_polyak(list(model.trainable_variables))
  else:  # an exported model: weights only (already averaged)
    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
  _check_restored(model, checkpoint)
  return LoadedModel(model, config, checkpoint, polyak, os.path.dirname(config_path))


def _polyak_decay_of(checkpoint, config):
  """The averaging decay: saved in the checkpoint, else derived from the run's config."""
  names = {n for n, _ in tf.train.list_variables(checkpoint)}
  if any(n.startswith("optimizer/polyak_decay") for n in names):
    return 0.999  # restored from the checkpoint over this placeholder
  import math  # pylint: disable=import-outside-toplevel
  from glow_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  n_train = config.train.n_train or data_lib.load(config.data).num_train
  steps = max(1, math.ceil(n_train / config.train.n_batch_train))
  return optim.polyak_decay(steps, config.train.polyak_epochs)


def _check_restored(model, checkpoint):
  names = {name for name, _ in tf.train.list_variables(checkpoint)}
  if not any(n.startswith("model/glow/") for n in names):
    raise NoCheckpointError(f"{checkpoint} holds no glow_tf model weights.")


def export_model(loaded, out_dir):
  """Writes the (Polyak-averaged) weights alone plus config.json to `out_dir`."""
  os.makedirs(out_dir, exist_ok=True)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=loaded.model), out_dir,
                                       max_to_keep=1, checkpoint_name="model")
  path = manager.save()
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    f.write(loaded.config.to_json())
  return path


# ---- Grids -------------------------------------------------------------------------


def zoom_for(image_shape, min_size=64):
  """An integer upscaling so that small images are comfortable to look at."""
  return max(1, -(-min_size // image_shape[0]))


def _zoom(images, factor):
  if factor == 1:
    return images
  return np.repeat(np.repeat(images, factor, axis=-3), factor, axis=-2)


def finish_grid(rows, image_shape, zoom=None):
  zoom = zoom or zoom_for(image_shape)
  return images_lib.make_grid([_zoom(np.asarray(r), zoom) for r in rows])


def temperature_grid(model, temperatures, n, seed=0, labels=None):
  """One row of `n` samples per temperature (uint8 rows)."""
  rows = []
  for i, t in enumerate(temperatures):
    if t < 0:
      raise ValueError(f"temperature must be >= 0, got {t}.")
    rows.append(model.sample(n, t, labels=labels, seed=[seed, i]).numpy())
  return rows


def reconstruction_grid(model, images, labels=None):
  """Rows: the images (quantised to the model's bits) and their decode(encode(.)).

  Returns:
    rows, max_abs_difference (0 when the reconstruction is exact).
  """
  shown = model.postprocess(model.preprocess(images, noise=0.5)).numpy()
  recon = model.decode(model.encode(images, labels), labels).numpy()
  return [shown, recon], int(np.abs(shown.astype(int) - recon.astype(int)).max())


def flat_latents(model, images, labels=None):
  return model.glow.join_latents(model.encode(images, labels)).numpy()


def decode_flat(model, eps, labels=None):
  return model.decode(model.glow.split_latent(tf.constant(eps, tf.float32)), labels).numpy()


def interpolation_grid(model, pairs, n_steps, labels=None):
  """One row per image pair: linear interpolation of the latents in `n_steps` steps."""
  rows = []
  for a, b in pairs:
    z = flat_latents(model, np.stack([a, b]))
    alphas = np.linspace(0., 1., n_steps)[:, None]
    rows.append(decode_flat(model, (1 - alphas) * z[0] + alphas * z[1], labels))
  return rows


def attribute_direction(model, examples, attribute, names, batch_size=100, cache_dir=None,
                        max_examples=None, cache_key=""):
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
    os.makedirs(cache_dir, exist_ok=True)
    np.save(cache + ".tmp.npy", direction)
    os.replace(cache + ".tmp.npy", cache)
  return direction


def manipulation_grid(model, images, direction, scales):
  """One row per image: its latent moved by `scale * direction` for each scale."""
  z = flat_latents(model, images)
  return [decode_flat(model, zi[None] + np.asarray(scales, np.float32)[:, None] * direction[None])
          for zi in z]


# ---- sample.py's job ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """What sample.py draws (see `flags/sample_flags.py` for the meaning of each field)."""
  mode: str = "sample"
  logdir: str = "./logs"
  restore_path: str = ""
  temperatures: tuple = (0.7,)
  n_samples: int = 8
  seed: int = 0
  output: str = ""
  label: object = None
  images: tuple = ()
  n_steps: int = 9
  attribute: object = None
  scales: tuple = (-1.5, -1., -.5, 0., .5, 1., 1.5)
  n_direction_examples: int = 2000
  data_dir: object = None
  polyak: bool = True
  zoom: int = 0
  default_logdir: bool = False  # the user did not choose --logdir: fall back to the shipped model

  def __post_init__(self):
    if self.mode not in ("sample", "reconstruct", "interpolate", "manipulate"):
      raise ValueError(f"unknown mode {self.mode!r}.")
    for t in self.temperatures:
      if not t >= 0:
        raise ValueError(f"--temperature must be >= 0, got {t}.")
    if self.n_samples < 1 or self.n_steps < 2:
      raise ValueError("--n_samples must be >= 1 and --n_steps >= 2.")
    if self.mode == "manipulate" and self.attribute is None:
      raise ValueError("--mode=manipulate needs --attribute (e.g. Smiling, or a class name).")
    if self.mode == "interpolate" and self.images and len(self.images) != 2:
      raise ValueError(f"--mode=interpolate takes two --images, got {len(self.images)}.")


def _labels_for(loaded, n, label):
  cfg = loaded.config.model
  if not cfg.ycond:
    if label is not None:
      raise ValueError("--label is for class-conditional models (trained with --ycond).")
    return None
  if label is None:
    return np.arange(n) % cfg.n_classes
  if str(label).isdigit() and int(label) < cfg.n_classes:
    return np.full([n], int(label))
  raise ValueError(f"--label {label!r} is not a class index in 0..{cfg.n_classes - 1}.")


def _dataset(loaded, data_dir):
  from glow_tf import data as data_lib  # pylint: disable=import-outside-toplevel
  cfg = loaded.config.data
  if data_dir:
    cfg = dataclasses.replace(cfg, data_dir=data_dir)
  return data_lib.load(dataclasses.replace(cfg, n_train=None, n_test=None))


def _input_images(config, loaded, n):
  """Images from --images files, else the first `n` test images of the model's dataset."""
  shape = loaded.model.image_shape
  if config.images:
    return np.stack([images_lib.load_image(p, shape) for p in config.images])
  ds = _dataset(loaded, config.data_dir)
  return next(iter(ds.test_dataset(n)))["image"].numpy()


def run(config, log=print):
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
  log(f"loaded {loaded.checkpoint} ({'Polyak-averaged' if config.polyak else 'raw'} weights)")
  output = config.output or os.path.join("." if shipped else config.logdir, f"{config.mode}.png")
  n = config.n_samples
  if config.mode == "sample":
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
        cache_dir=os.path.join(loaded.directory, "directions") if not shipped else None,
        max_examples=config.n_direction_examples,
        cache_key=f"{loaded.checkpoint}|{loaded.polyak}")
    images = _input_images(config, loaded, n)
    rows = manipulation_grid(model, images, direction, config.scales)
    log(f"attribute {config.attribute!r}: scales {list(config.scales)} along each row")
  grid = finish_grid(rows, model.image_shape, config.zoom or None)
  images_lib.save_png(output, grid)
  log(f"wrote {output}")
  return output, grid
