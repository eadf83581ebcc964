"""What a run reports: the progress line, the JSON-lines logs, TensorBoard, running averages.

`RunLog` is the one writer of a run's reports. On the chief it appends the
original's `train.txt`/`test.txt` records (through the `RunDir`), writes
TensorBoard scalars and images and prints; on other workers it stays quiet.
"""

import hashlib
import sys
import time
from typing import Any, Dict, Iterable, Optional, TextIO

import numpy as np
import tensorflow as tf

from glow_tf.rundir import RunDir

__all__ = ["Evaluation", "Progress", "RunLog", "TrainWindow", "weights_digest"]


def weights_digest(variables: Iterable[tf.Variable]) -> str:
  """SHA-256 of the variables' values (to compare replicas and workers)."""
  h = hashlib.sha256()
  for v in variables:
    h.update(np.ascontiguousarray(v.numpy()).tobytes())
  return h.hexdigest()


class Progress:
  """A progress bar on a terminal, plain log lines otherwise; silent when not `enabled`."""

  def __init__(self, enabled: bool, stream: Optional[TextIO] = None):
    self.enabled = enabled
    self.stream = stream or sys.stdout
    self.tty = self.stream.isatty()
    self._open_line = False

  def update(self, text: str, fraction: float) -> None:
    """Redraws the bar (terminals only) at `fraction` in [0, 1] with `text`."""
    if not self.enabled or not self.tty:
      return
    width = 24
    filled = int(width * min(max(fraction, 0.), 1.))
    self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\033[K")
    self.stream.flush()
    self._open_line = True

  def log(self, text: str) -> None:
    """Prints one line (ending an open progress bar first)."""
    if not self.enabled:
      return
    if self._open_line:
      self.stream.write("\n")
      self._open_line = False
    self.stream.write(text + "\n")
    self.stream.flush()


class TrainWindow:
  """Running means of the training metrics and the images/s since the last log line."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.loss = 0.
    self.bits_x = 0.
    self.steps = 0
    self.images = 0
    self.start = time.time()

  def add(self, loss: float, bits_x: float, images: int) -> None:
    self.loss += loss
    self.bits_x += bits_x
    self.steps += 1
    self.images += images

  def images_per_sec(self) -> float:
    return self.images / max(time.time() - self.start, 1e-9)

  def means(self) -> Dict[str, float]:
    n = max(self.steps, 1)
    return {"loss": self.loss / n, "bits_x": self.bits_x / n}


class RunLog:
  """The run's reports: progress on the console, JSON lines and TensorBoard on the chief.

  Args:
    run_dir: the run directory; `None` on workers that write nothing.
    progress: the console output.
  """

  TRAIN_SCALARS = ("loss", "bits_x", "lr", "grad_norm", "images_per_sec")

  def __init__(self, run_dir: Optional[RunDir], progress: Progress):
    self.run_dir = run_dir
    self.progress = progress
    self._writer = None

  @property
  def writes_files(self) -> bool:
    return self.run_dir is not None

  def _summary_writer(self):
    if self._writer is None:
      self._writer = (tf.summary.create_file_writer(self.run_dir.tensorboard_dir)
                      if self.run_dir is not None else tf.summary.create_noop_writer())
    return self._writer

  def info(self, text: str) -> None:
    self.progress.log(text)

  def train_record(self, record: Dict[str, Any]) -> None:
    """One `train.txt` line and its TensorBoard scalars (`train/<key>`)."""
    if self.run_dir is None:
      return
    self.run_dir.append_log("train", record)
    with self._summary_writer().as_default(step=record["step"]):
      for key in self.TRAIN_SCALARS:
        tf.summary.scalar(f"train/{key}", record[key])

  def test_record(self, record: Dict[str, Any]) -> None:
    """One `test.txt` line and its scalars (`test/bits_x`, `test/polyak_bits_x`, their medians).

    The scalars of quick estimates get the suffix `_quick`.
    """
    if self.run_dir is None:
      return
    self.run_dir.append_log("test", record)
    suffix = "" if record["full"] else "_quick"
    with self._summary_writer().as_default(step=record["step"]):
      for key in ("bits_x", "polyak_bits_x", "bits_x_median", "polyak_bits_x_median"):
        if key in record:
          tf.summary.scalar(f"test/{key}{suffix}", record[key])

  def event(self, text: str, step: int) -> None:
    """A note about the run itself (a stop, a recovery) in `events.txt`, with the time."""
    if self.run_dir is None:
      return
    self.run_dir.append_log("events", {"step": step, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                       "event": text})

  def image(self, name: str, image: np.ndarray, step: int) -> None:
    """A uint8 `[height, width, channels]` image in TensorBoard."""
    if self.run_dir is None:
      return
    with self._summary_writer().as_default(step=step):
      tf.summary.image(name, image[None], step=step)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()


class Evaluation(tf.Module):
  """The latest test bits/dim of the raw and of the Polyak-averaged weights, checkpointed with them.

  train.py records one at every evaluation; `glow_tf.sampling.load_model`
  restores it with the weights to pick the better ones (`use_polyak`).
  `full` says whether the figures are of the whole test set (a quick
  estimate never replaces a full one); `best` is the best full figure so
  far, which the kept best checkpoint has. NaN: not evaluated yet.
  """

  def __init__(self):
    super().__init__(name="evaluation")
    only_first = tf.VariableAggregation.ONLY_FIRST_REPLICA
    var = lambda value, name, dtype=tf.float64: tf.Variable(
        value, dtype=dtype, trainable=False, name=name, aggregation=only_first)
    self.raw_bits = var(float("nan"), "raw_bits")
    self.polyak_bits = var(float("nan"), "polyak_bits")
    self.full = var(False, "full", tf.bool)
    self.step = var(-1, "step", tf.int64)
    self.best = var(float("inf"), "best")

  def record(self, raw: float, polyak: float, full: bool, step: int) -> bool:
    """Stores an evaluation; returns whether it is a new best full test figure."""
    if not full and bool(self.full.numpy()):
      return False
    self.raw_bits.assign(raw)
    self.polyak_bits.assign(polyak)
    self.full.assign(full)
    self.step.assign(step)
    if full and min(raw, polyak) < float(self.best.numpy()):
      self.best.assign(min(raw, polyak))
      return True
    return False

  def use_polyak(self) -> Optional[bool]:
    """Whether the Polyak averages did better (`None`: not evaluated yet, or not in the checkpoint)."""
    raw, polyak = float(self.raw_bits.numpy()), float(self.polyak_bits.numpy())
    if np.isnan(raw) or np.isnan(polyak):
      return None
    return polyak < raw

  def describe(self) -> str:
    """The latest figures in words: `test at step N: P bits/dim with the Polyak averages, R raw`."""
    kind = "test" if bool(self.full.numpy()) else "quick test estimate"
    return (f"{kind} at step {int(self.step.numpy())}: {float(self.polyak_bits.numpy()):.4f} "
            f"bits/dim with the Polyak averages, {float(self.raw_bits.numpy()):.4f} raw")
