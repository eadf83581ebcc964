"""Training and evaluation: strategies, the step, checkpoints, logs, samples.

`train_and_evaluate(config)` is the whole of `train.py` after flag parsing:

1. pick the `tf.distribute` strategy (`make_strategy`);
2. load the data, complete and validate the model config, and only then
   create the log directory and write `config.json`;
3. build the model and optimiser under the strategy's scope; restore the
   latest checkpoint (from `logdir`, or `restore_path`) or run the
   data-dependent actnorm initialisation on `n_batch_init` images;
4. run the custom training loop: each step draws a global batch, each
   replica computes the loss and gradients of its shard, the gradients are
   summed across replicas, and the update is applied only when the loss and
   every gradient are finite (else the step is skipped and counted);
5. log (TensorBoard scalars, the original's `train.txt`/`test.txt` JSON
   lines, a progress bar or plain lines), evaluate test bits/dim with the
   Polyak-averaged weights, draw sample grids at several temperatures and
   write checkpoints (atomically, a bounded number) on a schedule.

Only the chief (worker 0 of a multi-worker run) writes files.
"""

import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import images as images_lib
from glow_tf import kernels
from glow_tf import model as model_lib
from glow_tf import nn
from glow_tf import optim

__all__ = ["TrainConfig", "GlowConfig", "make_strategy", "train_and_evaluate",
           "Trainer", "TrainingError", "STRATEGIES"]

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
SAMPLE_TEMPERATURES = (0., .25, .5, .6, .7, .8, .9, 1.)  # the original's grid rows


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. the loss diverged); the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, schedule and output settings (defaults from the original's `train.py`).

  Attributes:
    logdir: output directory: checkpoints, logs, samples, config.json.
    restore_path: a checkpoint (prefix or directory) to start from; when
      empty, training resumes from the latest checkpoint in `logdir` if any.
    optimizer: "adamax" or "adam".
    lr: base learning rate. beta1: Adam(ax) beta1.
    epochs: number of epochs to train; an epoch is `n_train` images.
    epochs_warmup: epochs of linear learning-rate warmup.
    polyak_epochs: sets beta2 and the Polyak averaging decay
      (`1 - 1/(steps_per_epoch * polyak_epochs)`).
    n_train: images per epoch; `None`: the size of the training set.
    n_batch_train: global training batch (all replicas together).
    n_batch_test: global test batch.
    n_batch_init: images for the data-dependent actnorm initialisation.
    epochs_full_valid: epochs between evaluations on the full test set.
    epochs_full_sample: epochs between sample grids.
    n_sample: samples per temperature (columns of the sample grid).
    seed: seeds data order, dequantisation noise and initialisation.
    strategy: "auto", "default", "mirrored" or "multi_worker".
    jit_compile: XLA-compile the per-replica loss and gradient computation.
    max_steps: stop after this many steps in total (`None`: no limit).
    time_budget_minutes: stop after this much training time in this run.
    checkpoint_every_minutes: minutes between checkpoints (also at epoch
      ends and at the end of the run).
    keep_checkpoints: checkpoints to keep.
    log_every_steps: steps between log lines / TensorBoard points.
    quick_valid_batches: test batches for the quick estimate logged every epoch.
    max_nonfinite_steps: consecutive skipped (non-finite) steps before stopping.
  """
  logdir: str = "./logs"
  restore_path: str = ""
  optimizer: str = "adamax"
  lr: float = 0.001
  beta1: float = 0.9
  epochs: int = 1000000
  epochs_warmup: float = 10.
  polyak_epochs: float = 1.
  n_train: Optional[int] = None
  n_batch_train: int = 64
  n_batch_test: int = 50
  n_batch_init: int = 256
  epochs_full_valid: int = 50
  epochs_full_sample: int = 50
  n_sample: int = 8
  seed: int = 0
  strategy: str = "auto"
  jit_compile: bool = False
  max_steps: Optional[int] = None
  time_budget_minutes: Optional[float] = None
  checkpoint_every_minutes: float = 10.
  keep_checkpoints: int = 3
  log_every_steps: int = 50
  quick_valid_batches: int = 10
  max_nonfinite_steps: int = 20

  def __post_init__(self):
    if self.optimizer not in ("adamax", "adam"):
      raise ValueError(f"optimizer must be 'adamax' or 'adam', got {self.optimizer!r}.")
    if self.strategy not in STRATEGIES:
      raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}.")
    for name in ("epochs", "n_batch_train", "n_batch_test", "n_batch_init",
                 "epochs_full_valid", "epochs_full_sample", "n_sample",
                 "keep_checkpoints", "log_every_steps", "max_nonfinite_steps"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    for name in ("n_train", "max_steps"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or unset, got {value!r}.")
    if not self.lr > 0:
      raise ValueError(f"lr must be > 0, got {self.lr!r}.")
    if not 0 <= self.beta1 < 1:
      raise ValueError(f"beta1 must be in [0, 1), got {self.beta1!r}.")
    if self.epochs_warmup < 0 or self.polyak_epochs <= 0:
      raise ValueError("epochs_warmup must be >= 0 and polyak_epochs > 0, got "
                       f"{self.epochs_warmup!r} and {self.polyak_epochs!r}.")
    if self.quick_valid_batches < 0:
      raise ValueError(f"quick_valid_batches must be >= 0, got {self.quick_valid_batches!r}.")
    if not self.logdir:
      raise ValueError("logdir must be a directory path.")


@dataclasses.dataclass(frozen=True)
class GlowConfig:
  """Everything a run needs: data, model and training settings."""
  data: data_lib.DataConfig
  model: config_lib.ModelConfig
  train: TrainConfig

  def to_dict(self):
    return {"data": dataclasses.asdict(self.data), "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train)}

  def to_json(self):
    return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=list)

  @classmethod
  def from_dict(cls, d):
    def build(kind, values):
      names = {f.name for f in dataclasses.fields(kind)}
      return kind(**{k: v for k, v in values.items() if k in names})
    model = dict(d["model"])
    model["image_shape"] = tuple(model["image_shape"])
    return cls(build(data_lib.DataConfig, d["data"]),
               build(config_lib.ModelConfig, model), build(TrainConfig, d["train"]))

  @classmethod
  def load(cls, path):
    with open(path) as f:
      return cls.from_dict(json.load(f))


# ---- Strategy ------------------------------------------------------------------------


def _num_workers_in_tf_config():
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  cluster = tf_config.get("cluster", {})
  return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def make_strategy(name="auto"):
  """The `tf.distribute` strategy for `name`.

  * "default": the default strategy (one device).
  * "mirrored": `MirroredStrategy` over all local GPUs (or the CPU).
  * "multi_worker": `MultiWorkerMirroredStrategy` configured by `TF_CONFIG`.
  * "auto": multi_worker when `TF_CONFIG` names several workers, mirrored
    when there are several GPUs, else default.
  """
  if name not in STRATEGIES:
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
  if name == "auto":
    if _num_workers_in_tf_config() > 1:
      name = "multi_worker"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "default"
  if name == "multi_worker":
    if _num_workers_in_tf_config() < 1:
      raise ValueError("strategy=multi_worker needs TF_CONFIG describing the cluster "
                       "(see the README's multi-host section).")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def _is_chief(strategy):
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                  "chief" not in resolver.cluster_spec().as_dict())


# ---- Logging -----------------------------------------------------------------------


class _Progress:
  """A progress bar on a terminal, plain log lines otherwise."""

  def __init__(self, enabled, stream=None):
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self.tty = self.stream.isatty()
    self._open_line = False

  def update(self, text, fraction):
    if not self.enabled:
      return
    if self.tty:
      width = 24
      filled = int(width * min(max(fraction, 0.), 1.))
      self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K")
      self.stream.flush()
      self._open_line = True

  def log(self, text):
    if not self.enabled:
      return
    if self._open_line:
      self.stream.write("\n")
      self._open_line = False
    self.stream.write(text + "\n")
    self.stream.flush()


def _json_line(path, record):
  with open(path, "a") as f:
    f.write(json.dumps(record) + "\n")


def weights_digest(variables):
  """SHA-256 of the variables' values (to compare replicas and workers)."""
  h = hashlib.sha256()
  for v in variables:
    h.update(np.ascontiguousarray(v.numpy()).tobytes())
  return h.hexdigest()


# ---- The trainer ------------------------------------------------------------------------


class Trainer:
  """Owns the strategy, data, model, optimiser and checkpoint of one run."""

  def __init__(self, config, strategy=None, dataset=None, stream=None):
    self.config = config
    cfg = config.train
    self.strategy = strategy or make_strategy(cfg.strategy)
    self.num_replicas = self.strategy.num_replicas_in_sync
    if cfg.n_batch_train % self.num_replicas:
      raise ValueError(
          f"n_batch_train={cfg.n_batch_train} is not divisible by the {self.num_replicas} "
          "replicas; use a multiple of the number of devices.")
    self.dataset = dataset or data_lib.load(config.data)
    model_cfg = dataclasses.replace(
        config.model, image_shape=tuple(self.dataset.image_shape),
        n_classes=self.dataset.n_classes if config.model.ycond else config.model.n_classes)
    if model_cfg.ycond and not self.dataset.n_classes:
      raise ValueError(f"--ycond needs labels, and dataset {config.data.dataset!r} has none.")
    self.config = config = dataclasses.replace(config, model=model_cfg)
    self.is_chief = _is_chief(self.strategy)
    self.progress = _Progress(self.is_chief, stream)

    n_train = cfg.n_train or self.dataset.num_train
    self.steps_per_epoch = max(1, math.ceil(n_train / cfg.n_batch_train))
    with self.strategy.scope():
      self.model = model_lib.GlowModel(model_cfg)
      self.optimizer = optim.make_optimizer(
          cfg.optimizer, cfg.lr, cfg.beta1, self.steps_per_epoch, cfg.epochs_warmup,
          cfg.polyak_epochs)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.initialized = tf.Variable(False, trainable=False, name="initialized",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.variables = list(self.model.trainable_variables)
    self.checkpoint = tf.train.Checkpoint(
        model=self.model, optimizer=self.optimizer, step=self.step,
        initialized=self.initialized)
    self._ckpt_dir = os.path.join(cfg.logdir, "checkpoints")
    self._train_fn = None
    self._eval_fn = None
    self._saved_step = None

  # ---- Set-up ---------------------------------------------------------------------

  def _write_dir(self):
    """Where this worker writes: the logdir for the chief, a scratch dir otherwise."""
    if self.is_chief:
      return self._ckpt_dir
    return tempfile.mkdtemp(prefix="glow_worker_ckpt_")

  def restore_or_initialize(self):
    """Restores the latest checkpoint, or initialises actnorms and builds the optimiser."""
    cfg = self.config.train
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, self._write_dir(), max_to_keep=cfg.keep_checkpoints)
    latest = tf.train.latest_checkpoint(self._ckpt_dir)
    source = latest or cfg.restore_path or None
    if source and os.path.isdir(source):
      found = tf.train.latest_checkpoint(source) or tf.train.latest_checkpoint(
          os.path.join(source, "checkpoints"))
      if not found:
        raise FileNotFoundError(
            f"no checkpoint in {source!r}: pass a checkpoint prefix "
            "(.../checkpoints/ckpt-N) or a logdir of train.py.")
      source = found
    if source:
      self.optimizer.build(self.variables)
      self.checkpoint.restore(source).assert_existing_objects_matched()
      self.progress.log(f"restored {source} at step {int(self.step.numpy())}")
      return source
    batch = self.dataset.init_batch(cfg.n_batch_init)
    self.model.initialize(batch["image"], batch.get("label") if self.config.model.ycond else None,
                          seed=[cfg.seed, 1])
    self.optimizer.build(self.variables)  # Polyak averages start at the initialised weights
    self.initialized.assign(True)
    self.progress.log(f"initialised actnorm on {batch['image'].shape[0]} images")
    return None

  # ---- Step functions ------------------------------------------------------------------

  def _labels(self, batch):
    return batch.get("label") if self.config.model.ycond else None

  def _build_train_fn(self):
    cfg = self.config.train
    model, variables, optimizer = self.model, self.variables, self.optimizer
    global_batch = cfg.n_batch_train

    def loss_and_grads(images, labels, noise):
      with tf.GradientTape() as tape:
        out = model.losses(images, labels, noise=noise)
        loss = tf.reduce_sum(out["loss"]) / global_batch
      grads = tape.gradient(loss, variables)
      sums = {k: tf.reduce_sum(v) for k, v in out.items()}
      return grads, sums

    compute = tf.function(loss_and_grads, jit_compile=cfg.jit_compile, autograph=False)

    def replica_compute(batch):
      grads, sums = compute(batch["image"], self._labels(batch), batch["noise"])
      ctx = tf.distribute.get_replica_context()
      grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, sums)
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]
                             + [tf.math.is_finite(sums["loss"])])
      return grads, sums, finite

    def replica_apply(grads):
      optimizer.apply_gradients(zip(grads, variables))

    strategy = self.strategy

    @tf.function(autograph=False)
    def compute_step(iterator):
      batch = next(iterator)
      grads, sums, finite = strategy.run(replica_compute, args=(batch,))
      # Every replica holds the same reduced values: read the first.
      finite = strategy.experimental_local_results(finite)[0]
      sums = {k: strategy.experimental_local_results(v)[0] for k, v in sums.items()}
      grad_norm = tf.linalg.global_norm(strategy.experimental_local_results(grads)[0])
      self.step.assign_add(1)
      return grads, sums, finite, grad_norm

    @tf.function(autograph=False)
    def apply_step(grads):
      strategy.run(replica_apply, args=(grads,))

    self.compiled_functions = (compute_step, apply_step)

    def train_step(iterator):
      """One step; the update is applied only when loss and gradients are finite.

      The decision is taken in Python between two functions: a `tf.cond`
      around per-device updates cannot be placed across devices.
      """
      grads, sums, finite, grad_norm = compute_step(iterator)
      finite = bool(finite)
      if finite:
        apply_step(grads)
      return sums, finite, grad_norm

    return train_step

  def _build_eval_fn(self):
    model, strategy = self.model, self.strategy

    def replica_eval(batch):
      out = model.losses(batch["image"], self._labels(batch), noise=batch["noise"])
      count = tf.cast(tf.shape(batch["image"])[0], tf.float32)
      return {k: tf.reduce_sum(v) for k, v in out.items()}, count

    @tf.function(autograph=False)
    def eval_step(batch):
      sums, count = strategy.run(replica_eval, args=(batch,))
      sums = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
              for k, v in sums.items()}
      return sums, strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None)

    return eval_step

  # ---- Data ------------------------------------------------------------------------------

  def _with_noise(self, dataset, stream):
    """Adds dequantisation noise drawn per global batch from (seed, stream, batch index).

    Drawing it in the input pipeline, on the global batch, makes the noise
    independent of how the batch is split over replicas.
    """
    seed = self.config.train.seed

    def add(index, batch):
      batch = dict(batch)
      batch["noise"] = tf.random.stateless_uniform(
          tf.shape(batch["image"]), tf.stack([tf.cast(seed, tf.int64) * 1000 + stream, index]))
      return batch

    return dataset.enumerate().map(add, num_parallel_calls=tf.data.AUTOTUNE)

  def _train_iterator(self):
    step = int(self.step.numpy())
    ds = self.dataset.train_dataset(self.config.train.n_batch_train, self.strategy)
    ds = self._with_noise(ds, stream=0).skip(step)  # resume at the same data position
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return iter(self.strategy.experimental_distribute_dataset(ds))

  def evaluate(self, max_batches=None):
    """Mean test metrics (bits/dim etc.) over the test set, or its first `max_batches` batches."""
    if self._eval_fn is None:
      self._eval_fn = self._build_eval_fn()
    ds = self._with_noise(self.dataset.test_dataset(self.config.train.n_batch_test), stream=1)
    if max_batches:
      ds = ds.take(max_batches)
    totals, count = None, 0.
    for batch in self.strategy.experimental_distribute_dataset(ds):
      sums, n = self._eval_fn(batch)
      sums = {k: float(v) for k, v in sums.items()}
      totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
      count += float(n)
    return {k: v / count for k, v in totals.items()}, int(count)

  # ---- Outputs ------------------------------------------------------------------------------

  def sample_grid(self, path, temperatures=SAMPLE_TEMPERATURES):
    """Writes a PNG grid: one row of `n_sample` samples per temperature."""
    n = self.config.train.n_sample
    labels = (np.arange(n) % self.config.model.n_classes) if self.config.model.ycond else None
    rows = [self.model.sample(n, t, labels=labels, seed=[self.config.train.seed, i]).numpy()
            for i, t in enumerate(temperatures)]
    grid = images_lib.make_grid(rows)
    if self.is_chief:
      images_lib.save_png(path, grid)
    return grid

  def save_checkpoint(self):
    """Writes a checkpoint unless a variable is non-finite (then raises)."""
    for v in self.variables:
      if not np.all(np.isfinite(v.numpy())):
        raise TrainingError(f"refusing to checkpoint non-finite weights ({v.name}).")
    self._saved_step = int(self.step.numpy())
    return self.manager.save(checkpoint_number=self._saved_step)

  # ---- The loop -------------------------------------------------------------------------------

  def train(self):
    """Runs the training loop to `epochs` (or `max_steps` / the time budget)."""
    cfg = self.config.train
    logdir = cfg.logdir
    writer = (tf.summary.create_file_writer(os.path.join(logdir, "tensorboard"))
              if self.is_chief else tf.summary.create_noop_writer())
    if self._train_fn is None:
      self._train_fn = self._build_train_fn()
    iterator = self._train_iterator()
    total_steps = cfg.epochs * self.steps_per_epoch
    if cfg.max_steps:
      total_steps = min(total_steps, cfg.max_steps)
    step = int(self.step.numpy())
    start = time.time()
    last_ckpt = time.time()
    window = {"loss": 0., "bits_x": 0., "n": 0, "t0": time.time(), "images": 0}
    nonfinite_in_a_row = 0
    self.progress.log(
        f"training {self.model.num_parameters():,} parameters on {self.num_replicas} "
        f"replica(s), {self.steps_per_epoch} steps/epoch, from step {step} to {total_steps}")
    while step < total_steps:
      if cfg.time_budget_minutes and time.time() - start > 60 * cfg.time_budget_minutes:
        self.progress.log(f"time budget of {cfg.time_budget_minutes} min reached at step {step}")
        break
      sums, finite, grad_norm = self._train_fn(iterator)
      step += 1
      if not bool(finite):
        nonfinite_in_a_row += 1
        self.progress.log(f"step {step}: non-finite loss or gradient, update skipped "
                          f"({nonfinite_in_a_row} in a row)")
        if nonfinite_in_a_row >= cfg.max_nonfinite_steps:
          raise TrainingError(
              f"{nonfinite_in_a_row} consecutive steps had a non-finite loss or gradient "
              f"(last at step {step}); the last good checkpoint in {self._ckpt_dir} is kept. "
              "Lower --lr, increase --epochs_warmup, or check the data.")
        continue
      nonfinite_in_a_row = 0
      bits_x = float(sums["bits_x"]) / cfg.n_batch_train
      window["loss"] += float(sums["loss"]) / cfg.n_batch_train
      window["bits_x"] += bits_x
      window["n"] += 1
      window["images"] += cfg.n_batch_train
      epoch = step / self.steps_per_epoch
      elapsed = time.time() - window["t0"]
      ips = window["images"] / max(elapsed, 1e-9)
      self.progress.update(
          f"epoch {epoch:.2f} step {step}/{total_steps} {bits_x:.3f} bits/dim {ips:.1f} img/s",
          step / total_steps)
      if step % cfg.log_every_steps == 0 or step == total_steps:
        record = {"epoch": round(epoch, 4), "step": step,
                  "n_processed": step * cfg.n_batch_train,
                  "train_time": round(time.time() - start, 1),
                  "loss": window["loss"] / window["n"], "bits_x": window["bits_x"] / window["n"],
                  "lr": float(self.optimizer.learning_rate), "grad_norm": float(grad_norm),
                  "images_per_sec": ips}
        if "bits_y" in sums:
          record["bits_y"] = float(sums["bits_y"]) / cfg.n_batch_train
          record["pred_loss"] = float(sums["classification_error"]) / cfg.n_batch_train
        if self.is_chief:
          _json_line(os.path.join(logdir, "train.txt"), record)
          with writer.as_default(step=step):
            for key in ("loss", "bits_x", "lr", "grad_norm", "images_per_sec"):
              tf.summary.scalar(f"train/{key}", record[key])
        self.progress.log(
            f"step {step} epoch {epoch:.2f}: {record['bits_x']:.4f} bits/dim, "
            f"{ips:.1f} images/s, lr {record['lr']:.2e}")
        window = {"loss": 0., "bits_x": 0., "n": 0, "t0": time.time(), "images": 0}
      epoch_end = step % self.steps_per_epoch == 0
      if epoch_end:
        self._end_of_epoch(step // self.steps_per_epoch, step, writer, start)
      if epoch_end or time.time() - last_ckpt > 60 * cfg.checkpoint_every_minutes:
        self.save_checkpoint()
        last_ckpt = time.time()
    if step % self.steps_per_epoch:  # the run stopped mid-epoch: final evaluation
      self._end_of_epoch(step / self.steps_per_epoch, step, writer, start, final=True)
    if self._saved_step != step:
      self.save_checkpoint()
    writer.flush()
    return step

  def _end_of_epoch(self, epoch, step, writer, start, final=False):
    cfg = self.config.train
    whole = isinstance(epoch, int)
    full_valid = final or (whole and epoch % cfg.epochs_full_valid == 0)
    full_sample = final or (whole and (epoch in (1, 10) or epoch % cfg.epochs_full_sample == 0))
    with self.optimizer.averaged_weights(self.variables):  # evaluate and sample with them
      quick, n = self.evaluate(None if full_valid else cfg.quick_valid_batches)
      record = {"epoch": round(float(epoch), 4), "step": step, "n_processed": step * cfg.n_batch_train,
                "train_time": round(time.time() - start, 1), "n_images": n,
                "full": bool(full_valid), **quick}
      if self.is_chief:
        _json_line(os.path.join(cfg.logdir, "test.txt"), record)
        with writer.as_default(step=step):
          tf.summary.scalar("test/bits_x" if full_valid else "test/bits_x_quick", quick["bits_x"])
      self.progress.log(
          f"{'test' if full_valid else 'quick test'} ({n} images) at epoch {float(epoch):.2f}: "
          f"{quick['bits_x']:.4f} bits/dim")
      if full_sample:
        path = os.path.join(cfg.logdir, f"samples_step{step:08d}.png")
        grid = self.sample_grid(path)
        if self.is_chief:
          images_lib.save_png(os.path.join(cfg.logdir, "samples_latest.png"), grid)
          with writer.as_default(step=step):
            tf.summary.image("samples", grid[None], step=step)



def prepare(config, strategy=None, stream=None):
  """Builds a Trainer after validating everything; creates the logdir only then."""
  trainer = Trainer(config, strategy=strategy, stream=stream)
  if config.model.precision == "mixed_bfloat16" and nn.native_bfloat16() is False:
    trainer.progress.log(
        "warning: --precision=mixed_bfloat16 on a CPU without AVX-512 BF16 or AMX and no GPU: "
        "bfloat16 is emulated here and trains slower than float32 (2-4x measured); use "
        "--precision=float32.")
  if config.model.precision == "float32" and kernels.needs_build():
    trainer.progress.log(f"note: glow_tf's compiled CPU kernels: {kernels.unavailable_reason()}.")
  if config.train.restore_path and not (
      os.path.exists(config.train.restore_path)
      or tf.io.gfile.glob(config.train.restore_path + ".index")):
    raise FileNotFoundError(
        f"--restore_path {config.train.restore_path!r} does not exist: give a checkpoint "
        "prefix (e.g. logs/checkpoints/ckpt-1200) or a logdir written by train.py.")
  if trainer.is_chief:
    os.makedirs(config.train.logdir, exist_ok=True)
    with open(os.path.join(config.train.logdir, "config.json.tmp"), "w") as f:
      f.write(trainer.config.to_json())
    os.replace(os.path.join(config.train.logdir, "config.json.tmp"),
               os.path.join(config.train.logdir, "config.json"))
  trainer.restore_or_initialize()
  return trainer


def train_and_evaluate(config, strategy=None, stream=None):
  """Trains and evaluates as configured; returns the Trainer."""
  trainer = prepare(config, strategy, stream)
  trainer.train()
  # Every worker reports, so that multi-worker runs can be checked for agreement.
  message = (f"done at step {int(trainer.step.numpy())}; weights sha256 "
             f"{weights_digest(trainer.variables)}")
  if trainer.is_chief:
    trainer.progress.log(message)
  else:
    print(f"[worker {trainer.strategy.cluster_resolver.task_id}] {message}", flush=True)
  return trainer
