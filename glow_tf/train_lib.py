"""The training run: set-up, the loop and its schedule.

`train_and_evaluate(config)` is the whole of `train.py` after flag parsing:

1. pick the `tf.distribute` strategy (`glow_tf.distribute`);
2. load the data, complete the model config from it
   (`config.resolve_for_data`), validate everything, and only then create the
   run directory (`glow_tf.rundir.RunDir`) and write `config.json`;
3. build the model and optimiser under the strategy's scope; restore the
   latest checkpoint (of the run, or `restore_path`) or run the
   data-dependent actnorm initialisation on `n_batch_init` images;
4. run the loop: each step is `glow_tf.steps`' training step (skipped and
   counted when the loss or a gradient is not finite);
5. at epoch ends and on a schedule: evaluate test bits/dim with the raw
   and with the Polyak-averaged weights, keep the checkpoint with the best
   full test bits/dim, draw sample grids at several temperatures with the
   better weights, write checkpoints; reports go through
   `glow_tf.metrics.RunLog`.

The schedule is the original's (`glow_tf.config.Schedule`): batches anchored
at `anchor_size`, epochs of `n_train` anchored images, its warmup and beta2.

Only the chief (worker 0 of a multi-worker run) writes files.
"""

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Dict, Optional, TextIO, Tuple

import numpy as np
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import distribute
from glow_tf import images as images_lib
from glow_tf import metrics
from glow_tf import model as model_lib
from glow_tf import hardware
from glow_tf import optim
from glow_tf import preemption
from glow_tf import rundir as rundir_lib
from glow_tf import sampling
from glow_tf import spike_guard as spike_guard_lib
from glow_tf import steps as steps_lib

__all__ = ["Trainer", "TrainingError", "prepare", "train_and_evaluate", "SAMPLE_TEMPERATURES"]

SAMPLE_TEMPERATURES = (0., .25, .5, .6, .7, .8, .9, 1.)  # the original's grid rows


class TrainingError(RuntimeError):
  """Training cannot go on (e.g. the loss diverged); the message says why and what to do."""


class _Recovery(tf.Module):
  """The rollback state of a run (`--nonfinite_policy=rollback`), checkpointed with it.

  Restored where a checkpoint has it (`Trainer._restore`): checkpoints
  written before it existed still restore.
  """

  def __init__(self):
    super().__init__(name="recovery")
    only_first = tf.VariableAggregation.ONLY_FIRST_REPLICA
    self.lr_scale = tf.Variable(1., dtype=tf.float64, trainable=False, name="lr_scale",
                                aggregation=only_first)
    self.rollbacks = tf.Variable(0, dtype=tf.int64, trainable=False, name="rollbacks",
                                 aggregation=only_first)


class Trainer:
  """One training run: its data, model, optimiser, checkpoints and loop.

  Args:
    config: the run's `RunConfig`; its model part is completed from the data.
    strategy: a `tf.distribute` strategy (default: `config.train.strategy`).
    dataset: an `ImageDataset` (default: loaded from `config.data`).
    stream: where progress goes (default: stdout).
  """

  def __init__(self, config: config_lib.RunConfig, strategy: Optional[tf.distribute.Strategy] = None,
               dataset: Optional[data_lib.ImageDataset] = None, stream: Optional[TextIO] = None):
    train = config.train
    self.strategy = strategy or distribute.make_strategy(train.strategy)
    self.num_replicas = self.strategy.num_replicas_in_sync
    if config.data.image_size:  # fails before any data is read
      train.schedule(config.data.image_size, self.num_replicas, num_train_examples=1)
    self.dataset = dataset or data_lib.load(config.data)
    model_config = config_lib.resolve_for_data(
        config.model, self.dataset.image_shape, self.dataset.n_classes,
        f"dataset {config.data.dataset!r}", self.dataset.attribute_names)
    self.notes = []
    if model_config.precision == "auto":  # the hardware's choice, saved in config.json
      precision, why = hardware.resolve_precision("auto")
      model_config = dataclasses.replace(model_config, precision=precision)
      self.notes.append(f"precision: auto -> {precision} ({why})")
    self.config = config = config_lib.RunConfig(config.data, model_config, train)
    self.is_chief = distribute.is_chief(self.strategy)
    self.run_dir = rundir_lib.RunDir(train.logdir)
    self.log = metrics.RunLog(self.run_dir if self.is_chief else None,
                              metrics.Progress(self.is_chief, stream))
    self.schedule = train.schedule(
        self.dataset.image_shape[0], self.num_replicas,
        self.dataset.num_train if train.n_train is None else None)
    self.steps_per_epoch = self.schedule.steps_per_epoch
    with self.strategy.scope():
      self.model = model_lib.GlowModel(model_config)
      self.recovery = _Recovery()
      self.spike_guard = (spike_guard_lib.SpikeGuard(train.spike_threshold,
                                                     train.spike_warmup_steps)
                          if train.spike_guard else None)
      self.evaluation = metrics.Evaluation()
      self.optimizer = optim.make_optimizer(
          train.optimizer, train.lr, train.beta1, self.schedule.warmup_steps, self.schedule.beta2,
          train.weight_decay, lr_scale=self.recovery.lr_scale)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.variables = list(self.model.trainable_variables)
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                          step=self.step, **self._run_state())
    self.manager = None
    self.best_manager = None
    self.stopped_by: Optional[str] = None  # the signal that ended train(), if one did
    self._lock: Optional[rundir_lib.RunLock] = None
    self._train_step = None
    self._eval_step = None
    self._saved_step = None
    self._unsaved_start = False  # a new run's starting state, not yet checkpointed
    self._scratch: Optional[str] = None  # a non-chief worker's checkpoint directory

  # ---- Set-up ---------------------------------------------------------------------

  def take_lock(self) -> None:
    """Takes the run directory's lock (`RunLock`); raises `RunDirLocked` if another trainer has it."""
    self._lock = self.run_dir.lock()
    note = self._lock.acquire()
    if note:
      self.log.info(f"note: {note}")
      self.log.event(note, int(self.step.numpy()))

  def release_lock(self) -> None:
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  def close(self) -> None:
    """Releases the run's lock and removes a non-chief worker's scratch checkpoints."""
    self.release_lock()
    if self._scratch is not None:
      shutil.rmtree(self._scratch, ignore_errors=True)
      self._scratch = None

  def restore_or_initialize(self) -> Optional[str]:
    """Restores the run's latest checkpoint (or `restore_path`), else initialises.

    Initialising runs the data-dependent actnorm pass on `n_batch_init`
    training images and then creates the optimiser's slots, so that the
    Polyak averages start at the initialised weights.

    Returns:
      The checkpoint restored, or `None` after initialisation.
    """
    train = self.config.train
    # Workers other than the chief write their (identical) checkpoints to a
    # scratch directory, removed by `close`: every worker must take part in saving.
    if self.is_chief:
      directory, best_directory = self.run_dir.checkpoint_dir, self.run_dir.best_checkpoint_dir
    else:
      self._scratch = self._scratch or tempfile.mkdtemp(prefix="glow_worker_checkpoints_")
      directory, best_directory = (os.path.join(self._scratch, d) for d in ("latest", "best"))
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory,
                                              max_to_keep=train.keep_checkpoints)
    self.best_manager = tf.train.CheckpointManager(self.checkpoint, best_directory, max_to_keep=1)
    candidates = self.run_dir.training_checkpoints()
    if candidates:  # resume: the newest checkpoint that can be read
      return self._restore_first_readable(candidates)
    if train.restore_path:  # start from another run's checkpoint, or an export's weights
      prefix = rundir_lib.resolve_checkpoint(train.logdir, train.restore_path)
      try:
        restored = (self._restore(prefix) if rundir_lib.holds_optimizer(prefix)
                    else self._restore_weights(prefix))
      except Exception as e:  # pylint: disable=broad-except
        raise TrainingError(
            f"cannot restore --restore_path {prefix} into this model ({type(e).__name__}: "
            f"{str(e).strip()[:300]}). It must hold a checkpoint or an export of the same "
            "architecture (compare its run's config.json with these flags).") from None
      self._unsaved_start = True
      return restored
    batch = self.dataset.init_batch(self.schedule.init_images, train.seed)
    self.model.initialize(batch["image"], seed=[train.seed, 1],
                          **self.model.batch_conditions(batch))
    self.optimizer.build(self.variables)
    self._unsaved_start = True
    self.log.info(f"initialised actnorm on {batch['image'].shape[0]} training images drawn "
                  "uniformly from the whole training set")
    return None

  def _run_state(self) -> Dict[str, tf.Module]:
    """The run's state beside model, optimiser and step: rollbacks, evaluation, spike statistics."""
    state = {"recovery": self.recovery, "evaluation": self.evaluation}
    if self.spike_guard is not None:
      state["spike_guard"] = self.spike_guard
    return state

  def _restore(self, prefix: str) -> str:
    self.optimizer.build(self.variables)
    # Model, optimiser and step must all be there; the run state where the
    # checkpoint has it (checkpoints written before a part of it existed).
    # (expect_partial: the run state is restored below; without it TensorFlow warns of it.)
    tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step).restore(
        prefix).assert_existing_objects_matched().expect_partial()
    tf.train.Checkpoint(**self._run_state()).restore(prefix).expect_partial()
    self.log.info(f"restored {prefix} at step {int(self.step.numpy())}")
    return prefix

  def _restore_weights(self, prefix: str) -> str:
    """Starts from the model weights of an export (no optimiser state): no actnorm initialisation.

    The optimiser starts afresh (step 0, warmup, Polyak averages from these weights).
    """
    rundir_lib.restore_weights(self.model, prefix)
    self.optimizer.build(self.variables)
    self.log.info(f"restored the weights of {prefix} (an export: the optimiser starts afresh)")
    return prefix

  def _restore_first_readable(self, candidates) -> str:
    """Restores the newest of `candidates` that can be read, saying which ones could not."""
    damaged = []
    for prefix in candidates:
      try:
        self._restore(prefix)
      except Exception as e:  # pylint: disable=broad-except  # any unreadable file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        damaged.append(f"{prefix} ({type(e).__name__}: {reason[:200]})")
        continue
      if damaged:
        self.log.info(f"warning: could not read {'; '.join(damaged)}; resumed from {prefix} "
                      f"at step {int(self.step.numpy())} instead")
      return prefix
    raise TrainingError(
        f"none of the checkpoints in {self.run_dir.checkpoint_dir} can be read: "
        f"{'; '.join(damaged)}. Restore them from a backup, or train into a new --logdir "
        "(nothing was changed in this one).")

  # ---- Data and evaluation -----------------------------------------------------------

  def _train_iterator(self):
    train = self.config.train
    step = int(self.step.numpy())  # resume at the same data and noise
    ds = self.dataset.train_dataset(self.schedule.images_per_step, train.seed, start_step=step)
    ds = steps_lib.with_noise(ds, train.seed, steps_lib.TRAIN_NOISE_STREAM, first_batch=step)
    return iter(self.strategy.experimental_distribute_dataset(ds.prefetch(tf.data.AUTOTUNE)))

  def train_step(self) -> steps_lib.TrainStep:
    """The run's training step (built on first use)."""
    if self._train_step is None:
      self._train_step = steps_lib.build_train_step(
          self.model, self.optimizer, self.strategy, self.schedule.images_per_step,
          self.step, jit_compile=self.config.train.jit_compile, spike_guard=self.spike_guard)
    return self._train_step

  def evaluate(self, max_batches: Optional[int] = None) -> Tuple[Dict[str, float], int]:
    """Mean test metrics (bits/dim etc.) over the test set, or its first `max_batches` batches.

    Returns:
      (metric means and `bits_x_median`, the median of the images' bits/dim,
      number of test images).
    """
    train = self.config.train
    if self._eval_step is None:
      self._eval_step = steps_lib.build_eval_step(self.model, self.strategy)
    ds = steps_lib.with_noise(self.dataset.test_dataset(train.n_batch_test), train.seed,
                              steps_lib.TEST_NOISE_STREAM)
    if max_batches:
      ds = ds.take(max_batches)
    totals, count, per_image = None, 0., []
    for batch in self.strategy.experimental_distribute_dataset(ds):
      sums, n, bits_x = self._eval_step(batch)
      sums = {k: float(v) for k, v in sums.items()}
      totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
      count += float(n)
      per_image.append(bits_x.numpy())
    means = {k: v / count for k, v in totals.items()}
    # One broken image moves the mean, not the median; a broken model moves both.
    means["bits_x_median"] = float(np.median(np.concatenate(per_image)))
    return means, int(count)

  # ---- Outputs ------------------------------------------------------------------------

  def sample_grid(self, step: int) -> np.ndarray:
    """Writes the sample grid of `step`: one row of `n_sample` images per temperature.

    A conditional model draws one image for the condition of each of the
    first `n_sample` test images.
    """
    n, model_config, seed = self.config.train.n_sample, self.config.model, self.config.train.seed
    if model_config.is_conditional:  # given the conditions (and labels) of the first test images
      conditions = self.model.batch_conditions(next(iter(self.dataset.test_dataset(n))))
      rows = sampling.conditions_grid(self.model, conditions["conditioning"],
                                      SAMPLE_TEMPERATURES, seed, conditions["labels"])
    else:
      labels = (np.arange(n) % model_config.n_classes) if model_config.ycond else None
      rows = sampling.temperature_grid(self.model, SAMPLE_TEMPERATURES, n, seed, labels)
    grid = images_lib.make_grid(rows)
    if self.log.writes_files:
      images_lib.save_png(self.run_dir.samples_path(step), grid)
      images_lib.save_png(self.run_dir.samples_path(), grid)
      self.log.image("samples", grid, step)
    return grid

  def save_checkpoint(self) -> str:
    """Writes a checkpoint unless a variable is non-finite (then raises)."""
    for v in self.variables:
      if not np.all(np.isfinite(v.numpy())):
        raise TrainingError(f"refusing to checkpoint non-finite weights ({v.name}).")
    self._saved_step = int(self.step.numpy())
    self._unsaved_start = False
    return self.manager.save(checkpoint_number=self._saved_step)

  # ---- The loop -------------------------------------------------------------------------

  def total_steps(self) -> int:
    """Where the run stops: `epochs` epochs, or `max_steps` when smaller."""
    train = self.config.train
    total = train.epochs * self.steps_per_epoch
    return min(total, train.max_steps) if train.max_steps else total

  def train(self, stop: Optional[preemption.StopRequest] = None) -> int:
    """Runs the training loop to `epochs` (or `max_steps` / the time budget); returns the step.

    Args:
      stop: a `StopRequest` (see `glow_tf.preemption`): when it is set (on
        any worker), the loop ends after the current step and writes its
        checkpoint; `stopped_by` then names the signal.
    """
    train = self.config.train
    step_fn = self.train_step()
    iterator = self._train_iterator()
    total_steps = self.total_steps()
    step = int(self.step.numpy())
    start = last_ckpt = time.time()
    window = metrics.TrainWindow()
    nonfinite_in_a_row = 0
    self.log.info(
        f"training {self.model.num_parameters():,} parameters on {self.num_replicas} "
        f"replica(s), {self.steps_per_epoch} steps/epoch, from step {step} to {total_steps}")
    if self._unsaved_start:
      # A new run's starting state (initialised, or from --restore_path; every
      # worker alike): a divergence before the first periodic checkpoint can
      # roll back to it instead of ending the run.
      self.save_checkpoint()
    while step < total_steps:
      if train.time_budget_minutes and time.time() - start > 60 * train.time_budget_minutes:
        self.log.info(f"time budget of {train.time_budget_minutes} min reached at step {step}")
        break
      result = step_fn(iterator, stop is not None and stop.requested)
      step += 1
      if result.applied:
        nonfinite_in_a_row = 0
        self._after_step(step, total_steps, result.sums, result.grad_norm, window, start)
      else:
        nonfinite_in_a_row += 1
        what = ("non-finite loss or gradient" if not result.finite else
                f"loss spike ({float(result.sums['loss']) / self.schedule.images_per_step:.4g} "
                f"bits/dim, gradient norm {float(result.grad_norm):.4g})")
        self.log.info(f"step {step}: {what}, update skipped ({nonfinite_in_a_row} in a row)")
        if result.finite:
          self.log.event(f"step {step}: {what}, update skipped", step)
        if nonfinite_in_a_row >= train.max_nonfinite_steps:
          step = self._nonfinite_limit(step, nonfinite_in_a_row)  # raises, or rolls back
          iterator = self._train_iterator()
          nonfinite_in_a_row = 0
          continue
      if result.stop:
        return self._stop(step, stop)
      if not result.applied:  # no checkpoint of a state that is being skipped
        continue
      epoch_end = step % self.steps_per_epoch == 0
      if epoch_end:
        self._end_of_epoch(step // self.steps_per_epoch, step, start, final=False)
      if epoch_end or time.time() - last_ckpt > 60 * train.checkpoint_every_minutes:
        self.save_checkpoint()
        last_ckpt = time.time()
    if step % self.steps_per_epoch:  # the run stopped mid-epoch: final evaluation
      self._end_of_epoch(step / self.steps_per_epoch, step, start, final=True)
    if self._saved_step != step:
      self.save_checkpoint()
    self.log.flush()
    return step

  def _nonfinite_limit(self, step: int, in_a_row: int) -> int:
    """`max_nonfinite_steps` in a row: stop, or roll back to the last checkpoint (the policy).

    Returns:
      The step training goes on from after a rollback.
    """
    train = self.config.train
    what = (f"{in_a_row} consecutive steps had a non-finite or spiking loss or gradient (last "
            f"at step {step})")
    # The run's newest checkpoint, the same for every worker (a non-chief
    # worker's own manager writes to a scratch directory).
    last = next(iter(self.run_dir.training_checkpoints()), None)
    rollbacks = int(self.recovery.rollbacks.numpy())
    if train.nonfinite_policy != "rollback" or last is None or rollbacks >= train.max_rollbacks:
      if train.nonfinite_policy != "rollback":
        why, fix = "", "pass --nonfinite_policy=rollback, "
      elif last is None:
        why, fix = " and there is no checkpoint to roll back to", ""
      else:
        why, fix = f" after {rollbacks} rollbacks (--max_rollbacks)", "raise --max_rollbacks, "
      kept = (f"the last good checkpoint in {self.run_dir.checkpoint_dir} is kept" if last
              else "no checkpoint was written")
      raise TrainingError(
          f"{what}{why}; {kept}. Lower --lr, increase --epochs_warmup, {fix}or check the data.")
    lr_scale = float(self.recovery.lr_scale.numpy()) * train.rollback_lr_factor
    self._restore(last)  # (restores the recovery state of then: set it after)
    self.recovery.rollbacks.assign(rollbacks + 1)
    self.recovery.lr_scale.assign(lr_scale)
    restored = int(self.step.numpy())
    message = (f"{what}: rolled back to {last} (step {restored}) with the learning rate "
               f"multiplied by {float(self.recovery.lr_scale.numpy()):g} (rollback "
               f"{rollbacks + 1} of at most {train.max_rollbacks})")
    self.log.info(message)
    self.log.event(message, restored)
    return restored

  def _stop(self, step: int, stop: Optional[preemption.StopRequest]) -> int:
    """Ends the run after `step` on a stop request: checkpoint, logs, the note."""
    self.stopped_by = (stop.signal_name if stop is not None and stop.requested
                       else "a signal to another worker")
    if self._saved_step != step:
      self.save_checkpoint()
    self.log.flush()
    message = f"stopped by {self.stopped_by} at step {step}, checkpoint written"
    self.log.info(message)
    self.log.event(message, step)
    return step

  def _after_step(self, step, total_steps, sums, grad_norm, window, start):
    """Progress after a finished step; a log record every `log_every_steps`."""
    batch = self.schedule.images_per_step
    bits_x = float(sums["bits_x"]) / batch
    window.add(float(sums["loss"]) / batch, bits_x, batch)
    epoch = step / self.steps_per_epoch
    ips = window.images_per_sec()
    self.log.progress.update(
        f"epoch {epoch:.2f} step {step}/{total_steps} {bits_x:.3f} bits/dim {ips:.1f} img/s",
        step / total_steps)
    if step % self.config.train.log_every_steps and step != total_steps:
      return
    record = {"epoch": round(epoch, 4), "step": step, **self._processed(step),
              "train_time": round(time.time() - start, 1), **window.means(),
              "lr": float(self.optimizer.learning_rate), "grad_norm": float(grad_norm),
              "images_per_sec": ips}
    if "bits_y" in sums:
      record["bits_y"] = float(sums["bits_y"]) / batch
      record["pred_loss"] = float(sums["classification_error"]) / batch
    self.log.train_record(record)
    self.log.info(f"step {step} epoch {epoch:.2f}: {record['bits_x']:.4f} bits/dim, "
                  f"{ips:.1f} images/s, lr {record['lr']:.2e}")
    window.reset()

  def _processed(self, step: int) -> Dict[str, int]:
    """The original's counts after `step` steps: anchored images (`n_processed`) and images."""
    return {"n_processed": step * self.schedule.anchored_batch,
            "n_images": step * self.schedule.images_per_step}

  def _end_of_epoch(self, epoch, step, start, final):
    """Evaluation (full or quick) of the raw and the Polyak-averaged weights, the best checkpoint, samples.

    `epoch`: the epochs done, whole at an epoch's end. `final`: the run
    stops here (then the evaluation is full and a grid is drawn). The grid
    is drawn with the weights that did better in the latest evaluation.
    """
    train = self.config.train
    full_valid = final or epoch % train.epochs_full_valid == 0
    full_sample = final or epoch in (1, 10) or epoch % train.epochs_full_sample == 0
    batches = None if full_valid else train.quick_valid_batches
    raw, n = self.evaluate(batches)
    with self.optimizer.averaged_weights(self.variables):
      polyak, _ = self.evaluate(batches)
    best = self.evaluation.record(raw["bits_x"], polyak["bits_x"], full_valid, step)
    self.log.test_record({
        "epoch": round(float(epoch), 4), "step": step, **self._processed(step),
        "train_time": round(time.time() - start, 1), "n_test_images": n, "full": bool(full_valid),
        "dequantization": self.config.model.dequantization,
        **raw, **{f"polyak_{k}": v for k, v in polyak.items()}, "best": best})
    self.log.info(f"{'test' if full_valid else 'quick test'} ({n} images) at epoch "
                  f"{float(epoch):.2f}: {raw['bits_x']:.4f} bits/dim raw (median "
                  f"{raw['bits_x_median']:.4f}), {polyak['bits_x']:.4f} with the Polyak averages "
                  f"(median {polyak['bits_x_median']:.4f}){' (best so far: kept)' if best else ''}")
    if best:
      self.best_manager.save(checkpoint_number=step)
    if full_sample:
      if self.evaluation.use_polyak():
        with self.optimizer.averaged_weights(self.variables):
          self.sample_grid(step)
      else:
        self.sample_grid(step)


def _warnings(config: config_lib.RunConfig):
  """Notes about this machine for the run's precision (printed by `prepare`)."""
  if config.model.precision == "mixed_bfloat16" and hardware.fast_bfloat16() is False:
    yield ("warning: --precision=mixed_bfloat16 where bfloat16 is not native and fast (a CPU "
           "without AMX, a GPU older than compute capability 8.0): it may train slower than "
           "float32 here (docs/performance.md); consider --precision=float32.")


def _data_notes(trainer: Trainer):
  """What the run trains on and how it augments (printed by `prepare`)."""
  data = trainer.config.data
  level = config_lib.augmentation_level(data.dataset, data.dal)
  augmentation = ("none" if level == 0 else "random shifts (--dal=1)" if level == 1 else
                  "shifts, flips, rotations, zoom and shear (--dal=2)")
  if level == 0 and data.dal > 0:
    augmentation += f" (the original augments only {', '.join(config_lib.AUGMENTED_DATASETS)})"
  yield (f"data: {trainer.dataset.source}, {trainer.dataset.image_shape[0]}x"
         f"{trainer.dataset.image_shape[1]}, augmentation: {augmentation}")


def _check_resume(trainer: Trainer) -> None:
  """A resume must keep the run's architecture, data and optimisation (`RESUMABLE_FIELDS`)."""
  run_dir = trainer.run_dir
  if not (run_dir.has_config() and run_dir.training_checkpoints()):
    return
  saved = run_dir.read_config()
  differences = config_lib.resume_differences(saved, trainer.config)
  if differences:
    listed = "; ".join(f"{name}: {old!r} in config.json, {new!r} now"
                       for name, old, new in differences)
    raise config_lib.ConfigError(
        f"{run_dir.path} holds a run with other settings ({listed}). To resume it, pass the "
        "same flags as before (its config.json has them); to train the new settings, use "
        "a new --logdir; to start the new settings from its weights, pass "
        f"--restore_path={run_dir.path} with a new --logdir. Nothing was written.")


def prepare(config: config_lib.RunConfig, strategy: Optional[tf.distribute.Strategy] = None,
            stream: Optional[TextIO] = None) -> Trainer:
  """Builds a Trainer after validating everything, then takes the run directory.

  Nothing is written until every check has passed: the flags, the data, a
  resume's agreement with the run's `config.json`, and the run's lock (the
  chief takes it; a second trainer on the same directory stops here).
  """
  if config.train.restore_path:  # fails here, before anything is written
    rundir_lib.resolve_checkpoint(config.train.logdir, config.train.restore_path)
  trainer = Trainer(config, strategy=strategy, stream=stream)
  for message in trainer.notes + list(_warnings(trainer.config)):
    trainer.log.info(message)
  for message in _data_notes(trainer):
    trainer.log.info(message)
  trainer.log.info(trainer.schedule.describe())
  if trainer.is_chief:
    _check_resume(trainer)
    trainer.take_lock()
  try:
    trainer.restore_or_initialize()  # reads only: a failure leaves the directory as it was
    if trainer.is_chief:
      trainer.run_dir.write_config(trainer.config)
  except BaseException:
    trainer.close()
    raise
  return trainer


def train_and_evaluate(config: config_lib.RunConfig, strategy: Optional[tf.distribute.Strategy] = None,
                       stream: Optional[TextIO] = None) -> Trainer:
  """Trains and evaluates as configured; returns the Trainer.

  SIGTERM and SIGINT end the run cleanly after the current step (see
  `glow_tf.preemption`); `trainer.stopped_by` then names the signal.
  """
  # The strategy first: MultiWorkerMirroredStrategy's coordination service
  # installs a SIGTERM handler of its own, which ours must replace.
  strategy = strategy or distribute.make_strategy(config.train.strategy)
  with preemption.stop_on_signals() as stop:
    trainer = prepare(config, strategy, stream)
    try:
      trainer.train(stop)
    finally:
      trainer.close()
  # Every worker reports, so that multi-worker runs can be checked for agreement.
  step = int(trainer.step.numpy())
  what = f"stopped by {trainer.stopped_by}" if trainer.stopped_by else "done"
  message = f"{what} at step {step}; weights sha256 {metrics.weights_digest(trainer.variables)}"
  if trainer.is_chief:
    trainer.log.info(message)
  else:
    resolver = getattr(trainer.strategy, "cluster_resolver", None)
    print(f"[worker {getattr(resolver, 'task_id', '?')}] {message}", flush=True)
  return trainer
