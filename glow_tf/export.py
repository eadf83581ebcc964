"""A trained Glow as a TensorFlow SavedModel that runs without glow_tf (`export.py`).

`export(ExportConfig(logdir=...))` loads a run's checkpoint (through
`glow_tf.sampling.load_model`: by default the weights, raw or Polyak-averaged,
with the better test bits/dim in the run's latest evaluation) and writes

```none
<output>/
  saved_model.pb, variables/, fingerprint.pb   the SavedModel
  config.json                                  the RunConfig (what glow_tf rebuilds it from)
  export.json                                  where the weights came from, the signatures
```

`tf.saved_model.load(<output>)` then gives, in any TensorFlow program, these
`tf.function`s with fixed input signatures (`B` any batch size, `H, W, C` the
model's image shape; a class-conditional model takes `labels` int32 `[B]`
after `images` or `latents`, and `sample` returns the labels it drew; a
conditional Glow takes `conditioning` float32 `[B] + conditioning_shape`
after those, `sample` last, and draws `n` images per condition,
`[n, B, H, W, C]`):

* `sample(n, temperature, seed)`: int32 `n`, float32 `temperature`, int64
  `seed` `[2]` -> `{"images": uint8 [n, H, W, C]}` (+ `"labels"`); the same
  seed gives the same images, as `GlowModel.sample(n, temperature, seed=seed)`;
* `log_prob(images)` (nats per image) and `bits_per_dim(images)`, uint8
  `[B, H, W, C]` -> float32 `[B]`, with the model's `n_bits_x` reduction and
  mid-bin dequantisation (deterministic); `log_prob(images, seed=seed)` and
  `bits_per_dim(images, seed=seed)` add uniform noise from the stateless seed
  instead, equal to the training objective with that noise
  (`GlowModel.losses(images, noise=tf.random.stateless_uniform(shape, seed))`)
  of a uniformly dequantised model; a model trained with variational
  dequantisation is evaluated the same way, by its flow alone (no `q`);
* `encode(images)` -> a list of float32 latents `[B, h, w, c]`, one per level,
  and `decode(latents)` -> uint8 images: `decode(encode(x))` is `x` at
  `n_bits_x` bits;

a conditional Glow also has `keras_bits_per_dim(inputs)` and
`keras_log_prob(inputs)`, taking one dict `{"images", "conditioning"[,
"labels"]}` (the form a Keras `TFSMLayer` calls an endpoint with);
and the signatures `serving_default` (= `bits_per_dim`), `bits_per_dim`,
`log_prob`, `sample`, `encode`, `decode` for TensorFlow Serving and
`saved_model_cli run` (named inputs, dicts of named outputs). The default is
the deterministic `bits_per_dim` because scoring is what a server does with a
density model, and its input and output are batched along the first axis,
as TensorFlow Serving's request batching needs (`sample`'s inputs are
scalars).

The graphs use TensorFlow's ops only, so nothing of glow_tf is needed where
the export is loaded. The SavedModel's `variables/` is a checkpoint of
the model with the same keys as train.py's: `load_model`, `sample.py`,
`score.py` and `train.py --restore_path` read an export as a run directory.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import model as model_lib
from glow_tf import rundir as rundir_lib
from glow_tf import sampling
from glow_tf import tracing
from glow_tf.config import ExportConfig

__all__ = ["ExportError", "ExportResult", "GlowExport", "SERVING_DEFAULT", "SIGNATURES",
           "check_checkpoint_matches", "export", "export_model"]

SERVING_DEFAULT = "bits_per_dim"  # what `serving_default` computes (see the module docstring)
SIGNATURES = ("bits_per_dim", "log_prob", "sample", "encode", "decode")  # besides serving_default
EXPORT_INFO_FILE = "export.json"


class ExportError(ValueError):
  """The export cannot be made as asked; the message names the path and the fix."""


@dataclasses.dataclass
class ExportResult:
  """What `export` wrote."""
  path: str  # the SavedModel directory
  checkpoint: str  # the checkpoint the weights came from
  polyak: bool  # Polyak-averaged (True) or raw weights
  num_parameters: int
  size_bytes: int  # of everything in `path`


def _dir_size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


@tracing.no_autograph
class GlowExport(tf.Module):
  """What the SavedModel holds: a `GlowModel`'s weights and its serving functions.

  Args:
    model: the `GlowModel` to export (its variables are saved as they are).
  """

  def __init__(self, model: model_lib.GlowModel):
    super().__init__(name="glow_export")
    self.model = model
    cfg = model.config
    self._ycond = cfg.ycond
    self._conditional = cfg.is_conditional
    self._conditioning = (tf.TensorSpec([None] + list(cfg.conditioning_shape), tf.float32,
                                        name="conditioning") if cfg.is_conditional else None)
    self._images = tf.TensorSpec([None] + model.image_shape, tf.uint8, name="images")
    self._labels = tf.TensorSpec([None], tf.int32, name="labels")
    self._seed = tf.TensorSpec([2], tf.int64, name="seed")
    self._latents = [tf.TensorSpec([None] + list(s), tf.float32, name=f"latent_{i}")
                     for i, s in enumerate(cfg.latent_shapes)]
    self.sample = tf.function(self._sample, autograph=False)
    self.log_prob = tf.function(self._log_prob, autograph=False)
    self.bits_per_dim = tf.function(self._bits_per_dim, autograph=False)
    self.encode = tf.function(self._encode, autograph=False)
    self.decode = tf.function(self._decode, autograph=False)
    if self._conditional:  # one dict input, as a Keras TFSMLayer calls an endpoint
      self.keras_bits_per_dim = tf.function(
          lambda inputs: self._bits_per_dim(inputs["images"], *self._given(inputs)),
          autograph=False)
      self.keras_log_prob = tf.function(
          lambda inputs: self._log_prob(inputs["images"], *self._given(inputs)), autograph=False)

  def _given(self, inputs):
    """The conditions (labels, conditioning) of a dict input, in positional order."""
    return [inputs[k] for k in ("labels", "conditioning") if k in inputs]

  def _split(self, extra):
    """`(labels, conditioning)` from the positional conditions after images or latents."""
    extra = list(extra)
    labels = extra.pop(0) if self._ycond else None
    conditioning = extra.pop(0) if self._conditional else None
    return labels, conditioning

  # ---- The functions (traced for the signatures in `trace`) --------------------------

  def _check_labels(self, labels):
    if not self._ycond:
      return []
    n_classes = self.model.config.n_classes
    return [tf.debugging.assert_less(
        labels, n_classes, message=f"labels must be class indices in 0..{n_classes - 1}"),
            tf.debugging.assert_non_negative(
        labels, message=f"labels must be class indices in 0..{n_classes - 1}")]

  def _sample(self, n, temperature, seed, conditioning=None):
    checks = [tf.debugging.assert_non_negative(n, message="sample: n must be >= 0"),
              tf.debugging.assert_non_negative(
                  temperature, message="sample: temperature must be >= 0")]
    with tf.control_dependencies(checks):
      out = {}
      labels = None
      if self._ycond:  # [n], or [n, B]: one per image drawn
        shape = [n] if conditioning is None else [n, tf.shape(conditioning)[0]]
        labels = tf.random.stateless_uniform(shape, seed, 0, self.model.config.n_classes,
                                             tf.int32)
        out["labels"] = labels
      out["images"] = self.model.sample(n, temperature, labels=labels, seed=seed,
                                        conditioning=conditioning)
    return out

  def _log_prob(self, images, *conditions, seed=None):
    labels, conditioning = self._split(conditions)
    with tf.control_dependencies(self._check_labels(labels)):
      return self.model.log_prob(images, labels, noise=0.5 if seed is None else None, seed=seed,
                                 conditioning=conditioning, dequantization="uniform")

  def _bits_per_dim(self, images, *conditions, seed=None):
    labels, conditioning = self._split(conditions)
    with tf.control_dependencies(self._check_labels(labels)):
      return self.model.bits_per_dim(images, labels, noise=0.5 if seed is None else None,
                                     seed=seed, conditioning=conditioning,
                                     dequantization="uniform")

  def _encode(self, images, *conditions):
    labels, conditioning = self._split(conditions)
    with tf.control_dependencies(self._check_labels(labels)):
      return self.model.encode(images, labels, conditioning)

  def _decode(self, latents, *conditions):
    labels, conditioning = self._split(conditions)
    with tf.control_dependencies(self._check_labels(labels)):
      return self.model.decode(latents, labels, conditioning)

  # ---- Tracing ----------------------------------------------------------------------

  def trace(self) -> Dict[str, Any]:
    """Traces every function at its input signatures; returns the serving signatures."""
    images, seed = self._images, self._seed
    cond = self._condition_specs()
    scalar_n = tf.TensorSpec([], tf.int32, name="n")
    scalar_t = tf.TensorSpec([], tf.float32, name="temperature")
    self.sample.get_concrete_function(scalar_n, scalar_t, seed,
                                      *([self._conditioning] if self._conditional else []))
    if self._conditional:
      inputs = dict(zip(("labels", "conditioning") if self._ycond else ("conditioning",), cond))
      inputs["images"] = images
      self.keras_bits_per_dim.get_concrete_function(inputs)
      self.keras_log_prob.get_concrete_function(inputs)
    for fn in (self.log_prob, self.bits_per_dim):
      fn.get_concrete_function(images, *cond)
      fn.get_concrete_function(images, *cond, seed=seed)
    self.encode.get_concrete_function(images, *cond)
    self.decode.get_concrete_function(list(self._latents), *cond)
    return self._signatures()

  def _condition_specs(self):
    """The specs of the conditions after images or latents: labels (`ycond`), then conditioning."""
    return (([self._labels] if self._ycond else [])
            + ([self._conditioning] if self._conditional else []))

  def _signatures(self) -> Dict[str, Any]:
    n_latents = len(self._latents)
    cond = self._condition_specs()

    def bits_per_dim(images, *labels):
      return {"bits_per_dim": self.bits_per_dim(images, *labels)}

    def log_prob(images, *labels):
      return {"log_prob": self.log_prob(images, *labels)}

    def encode(images, *labels):
      return {f"latent_{i}": z for i, z in enumerate(self.encode(images, *labels))}

    def decode(*args):
      return {"images": self.decode(list(args[:n_latents]), *args[n_latents:])}

    def concrete(fn, specs):
      return tf.function(fn, input_signature=specs, autograph=False).get_concrete_function()

    bpd = concrete(bits_per_dim, [self._images] + cond)
    return {
        "serving_default": bpd,
        "bits_per_dim": bpd,
        "log_prob": concrete(log_prob, [self._images] + cond),
        "sample": self.sample.get_concrete_function(
            tf.TensorSpec([], tf.int32, name="n"), tf.TensorSpec([], tf.float32, name="temperature"),
            self._seed, *([self._conditioning] if self._conditional else [])),
        "encode": concrete(encode, [self._images] + cond),
        "decode": concrete(decode, list(self._latents) + cond),
    }


# ---- Checks --------------------------------------------------------------------------


def check_checkpoint_matches(checkpoint: str, run_dir: rundir_lib.RunDir) -> model_lib.GlowModel:
  """Restores `checkpoint` into a model built from `run_dir`'s config.json; every weight must match.

  Returns:
    The model with the checkpoint's (raw) weights.

  Raises:
    ExportError: a weight of the model is missing from the checkpoint or has
      another shape (the message names both files).
  """
  config = run_dir.read_config()
  model = model_lib.GlowModel(config.model)
  try:
    rundir_lib.restore_weights(model, checkpoint)
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    raise ExportError(
        f"{checkpoint} does not match {run_dir.config_path} ({detail}). The config.json beside a "
        "checkpoint must be the one train.py wrote for that run: put the run's own config.json "
        "back, or pass --restore_path=<a checkpoint of the run this config.json describes>. "
        "Nothing was written.") from None
  return model


def _check_output(path: str, overwrite: bool) -> None:
  """Refuses an output that is a file, a non-empty directory (without `overwrite`) or a training run."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ExportError(f"--output {path} is a file: give a directory to write the SavedModel to. "
                      "Nothing was written.")
  if not os.path.isdir(path) or not os.listdir(path):
    return
  if not overwrite:
    raise ExportError(f"--output {path} exists and is not empty: pass --overwrite to replace it, "
                      "or give another --output. Nothing was written.")
  if os.path.isdir(rundir_lib.RunDir(path).checkpoint_dir):
    raise ExportError(f"--output {path} holds a training run (its checkpoints/): --overwrite "
                      "replaces exports only; give another --output. Nothing was written.")


def _replace_dir(new: str, path: str) -> None:
  """Moves the directory `new` to `path`, replacing what is there only once `new` is complete."""
  old = None
  if os.path.exists(path):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-",
                           dir=os.path.dirname(os.path.abspath(path)))
    os.rmdir(old)
    os.rename(path, old)
  os.rename(new, path)
  if old:
    shutil.rmtree(old, ignore_errors=True)


def _original_checkpoint(run_dir: rundir_lib.RunDir) -> Optional[str]:
  """Where an export's weights first came from, when `run_dir` is an export (its export.json says)."""
  try:
    with open(os.path.join(run_dir.path, EXPORT_INFO_FILE)) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return None
  return info.get("original_checkpoint") or info.get("source_checkpoint")


# ---- Exporting -----------------------------------------------------------------------


def export_model(model: model_lib.GlowModel, path: str, config: config_lib.RunConfig,
                 info: Optional[Dict[str, Any]] = None) -> str:
  """Writes `model` (as it is) to the SavedModel directory `path` (which must not exist), with config.json.

  Returns:
    `path`.
  """
  # A model of its own: its traces (glow_tf.tracing.SharedTraces) are made here, with
  # TensorFlow's ops only; training-only options off.
  export_config = dataclasses.replace(config.model, recompute_gradients=False)
  copy = model_lib.GlowModel(export_config)
  for target, source in zip(copy.variables, model.variables):
    if target.shape != source.shape:
      raise ExportError(f"cannot copy {source.name} {source.shape} into {target.name} {target.shape}.")
    target.assign(source)
  module = GlowExport(copy)
  signatures = module.trace()
  tf.saved_model.save(module, path, signatures=signatures)
  run_dir = rundir_lib.RunDir(path)
  run_dir.write_config(config)
  record = {"serving_default": SERVING_DEFAULT, "signatures": ["serving_default", *SIGNATURES],
            "image_shape": list(config.model.image_shape), "n_bits_x": config.model.n_bits_x,
            "ycond": config.model.ycond, **(info or {})}
  info_path = rundir_lib.atomic_write(os.path.join(path, EXPORT_INFO_FILE),
                                      json.dumps(record, indent=2) + "\n")
  for written in (run_dir.config_path, info_path):
    os.chmod(written, 0o644)  # (atomic_write's temporary files are private) for whoever gets the export
  return path


def export(config: ExportConfig, log: Callable[[str], Any] = print) -> ExportResult:
  """Exports the checkpoint `config` names as a SavedModel in `config.output_dir`.

  Everything is checked before anything is written; the SavedModel is built
  in a temporary directory beside the output and moved into place whole.

  Raises:
    NoCheckpointError: nothing to export (the message says where we looked).
    ExportError: the output is in the way, or the checkpoint does not match
      its config.json.
  """
  output = os.path.abspath(os.path.expanduser(config.output_dir))
  _check_output(output, config.overwrite)
  checkpoint = rundir_lib.resolve_checkpoint(config.logdir, config.restore_path)
  if checkpoint is None:
    # (load_model's message: where it looked, and the command that trains a model)
    sampling.load_model(config.logdir, config.restore_path)
  run_dir = rundir_lib.run_dir_of(checkpoint)
  check_checkpoint_matches(checkpoint, run_dir)
  loaded = sampling.load_model(config.logdir, config.restore_path, config.polyak)
  info = {"source_checkpoint": loaded.checkpoint, "weights": "polyak" if loaded.polyak else "raw",
          "original_checkpoint": _original_checkpoint(run_dir) or loaded.checkpoint}
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.export-", dir=parent)
  try:
    staged = os.path.join(tmp, "saved_model")
    export_model(loaded.model, staged, loaded.config, info)
    _replace_dir(staged, output)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  result = ExportResult(output, loaded.checkpoint, loaded.polyak, loaded.model.num_parameters(),
                        _dir_size(output))
  log(f"exported {loaded.checkpoint} ({loaded.weights}; "
      f"{result.num_parameters:,} parameters) -> {output} ({result.size_bytes / 1e6:.1f} MB); "
      f"signatures: serving_default (= {SERVING_DEFAULT}), {', '.join(SIGNATURES)}")
  return result

