"""The run directory (`--logdir`): its layout, checkpoint resolution and atomic writes.

`train.py` writes one run into one directory; `sample.py` (and any later
reader of a trained model) reads it back. The layout lives here only:

```none
<logdir>/
  config.json             the RunConfig: what the model is rebuilt from
  checkpoints/ckpt-N.*    the last --keep_checkpoints training checkpoints
  tensorboard/            TensorBoard events
  train.txt, test.txt     the original's JSON-lines logs
  events.txt              notes about the run: stops by a signal, recoveries
  samples_stepNNNNNNNN.png, samples_latest.png   sample grids
  directions/             cached attribute directions of sample.py
  lock                    held by the running train.py: {"host", "pid", "since"}
```

An exported model is a run directory too: `export.py`'s SavedModel (its
`variables/variables` checkpoint beside `config.json`), or weights only
(`model-N.*` beside `config.json`); `latest_checkpoint` finds either.
"""

import glob
import json
import os
import re
import socket
import tempfile
import time
from typing import Any, List, Mapping, Optional, Union

import tensorflow as tf

from glow_tf import config as config_lib

__all__ = ["RunDir", "RunDirLocked", "RunLock", "NoCheckpointError", "atomic_write",
           "checkpoint_exists", "holds_optimizer", "resolve_checkpoint", "restore_weights", "run_dir_of"]

CONFIG_FILE = "config.json"


class NoCheckpointError(FileNotFoundError):
  """No trained model where the user pointed; the message says where we looked and what to run."""


def atomic_write(path: str, data: Union[bytes, str]) -> str:
  """Writes `data` to `path` so that readers see the old file or the new one, never a part.

  The data goes to a temporary file in the same directory, which then
  replaces `path` (`os.replace`, atomic on POSIX and Windows).
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  mode = "wb" if isinstance(data, bytes) else "w"
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def checkpoint_exists(prefix: str) -> bool:
  """Whether `prefix` names a TensorFlow checkpoint (its `.index` file exists)."""
  return tf.io.gfile.exists(prefix + ".index")


def holds_optimizer(prefix: str) -> bool:
  """Whether the checkpoint `prefix` is a training one (optimiser state), not an export's weights alone."""
  keys = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
  return any(k.startswith("optimizer/") for k in keys)


def restore_weights(model: tf.Module, prefix: str) -> None:
  """Restores the weights of `model` from the checkpoint `prefix`, strictly.

  Reads what train.py's checkpoints and export.py's SavedModels both hold
  under `model/`; anything else there (an optimiser) is ignored.

  Raises:
    AssertionError: a variable of `model` is not in the checkpoint.
    ValueError: one has another shape there.
  """
  status = tf.train.Checkpoint(model=model).read(prefix)
  status.assert_existing_objects_matched()
  status.expect_partial()  # (the rest: an optimiser, a save counter)


class RunDir:
  """One run's directory: where each file of the run lives, and reading and writing them.

  Args:
    path: the directory (`--logdir`); it need not exist yet.
  """

  def __init__(self, path: str):
    if not path:
      raise config_lib.ConfigError("a run directory needs a path (--logdir).")
    self.path = os.path.expanduser(str(path))

  def __repr__(self) -> str:
    return f"RunDir({self.path!r})"

  # ---- Layout --------------------------------------------------------------------

  @property
  def config_path(self) -> str:
    return os.path.join(self.path, CONFIG_FILE)

  @property
  def checkpoint_dir(self) -> str:
    return os.path.join(self.path, "checkpoints")

  @property
  def best_checkpoint_dir(self) -> str:
    """Where the checkpoint with the best full test bits/dim is kept (never rotated)."""
    return os.path.join(self.path, "checkpoints_best")

  @property
  def tensorboard_dir(self) -> str:
    return os.path.join(self.path, "tensorboard")

  @property
  def directions_dir(self) -> str:
    return os.path.join(self.path, "directions")

  def log_path(self, name: str) -> str:
    """A JSON-lines log: `"train"`, `"test"` (the original's `train.txt`, `test.txt`) or `"events"`."""
    if name not in ("train", "test", "events"):
      raise ValueError(f"unknown log {name!r}; the run has train, test and events logs.")
    return os.path.join(self.path, f"{name}.txt")

  def samples_path(self, step: Optional[int] = None) -> str:
    """The sample grid of `step`, or the latest one (`step=None`)."""
    name = "samples_latest.png" if step is None else f"samples_step{int(step):08d}.png"
    return os.path.join(self.path, name)

  def output_path(self, name: str) -> str:
    """Any other file of the run, e.g. sample.py's `<mode>.png`."""
    return os.path.join(self.path, name)

  # ---- Checkpoints ----------------------------------------------------------------

  def latest_checkpoint(self) -> Optional[str]:
    """The newest checkpoint prefix: in `checkpoints/` (training), else an export's.

    An export's is a SavedModel's `variables/variables` (export.py) or a
    weights-only `model-N` beside config.json.
    """
    for d in (self.checkpoint_dir, self.path):
      found = tf.train.latest_checkpoint(d)
      if found:
        return found
    saved_model = os.path.join(self.path, "variables", "variables")
    if os.path.exists(os.path.join(self.path, "saved_model.pb")) and checkpoint_exists(saved_model):
      return saved_model
    return None

  def training_checkpoints(self) -> List[str]:
    """Every training checkpoint prefix in `checkpoints/`, newest (highest step) first.

    Found from the files themselves (`ckpt-N.index`), not from TensorFlow's
    `checkpoint` state file, which a crash can leave behind or remove.
    """
    return _checkpoints_in(self.checkpoint_dir)

  def best_checkpoint(self) -> Optional[str]:
    """The kept checkpoint with the best full test bits/dim (`best_checkpoint_dir`), if any."""
    found = _checkpoints_in(self.best_checkpoint_dir)
    return found[0] if found else None

  def lock(self) -> "RunLock":
    """The run's lock (see `RunLock`)."""
    return RunLock(self)

  # ---- Config and logs -------------------------------------------------------------

  def has_config(self) -> bool:
    return os.path.exists(self.config_path)

  def read_config(self) -> config_lib.RunConfig:
    """The run's `RunConfig` from `config.json`.

    Raises:
      NoCheckpointError: no config.json here.
      ConfigError: the file is not valid JSON or holds unknown fields (named).
    """
    if not self.has_config():
      raise NoCheckpointError(f"no {CONFIG_FILE} in {self.path}: the model is rebuilt from the "
                              "config that train.py writes there.")
    with open(self.config_path) as f:
      return config_lib.RunConfig.from_json(f.read(), where=self.config_path)

  def write_config(self, config: config_lib.RunConfig) -> str:
    """Writes `config.json` atomically."""
    return atomic_write(self.config_path, config.to_json())

  def append_log(self, name: str, record: Mapping[str, Any]) -> None:
    """Appends one JSON line to the `train` or `test` log (one write of one whole line)."""
    os.makedirs(self.path, exist_ok=True)
    with open(self.log_path(name), "a") as f:
      f.write(json.dumps(record) + "\n")

  def make(self) -> "RunDir":
    """Creates the directory (and its parents) if missing."""
    os.makedirs(self.path, exist_ok=True)
    return self


def _checkpoints_in(directory: str) -> List[str]:
  """The checkpoint prefixes `<directory>/ckpt-N`, highest `N` first."""
  found = []
  for index in glob.glob(os.path.join(directory, "ckpt-*.index")):
    match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(index))
    if match:
      found.append((int(match.group(1)), index[:-len(".index")]))
  return [prefix for _, prefix in sorted(found, reverse=True)]


BEST = "best"  # `restore_path` naming the logdir's best checkpoint


def resolve_checkpoint(logdir: str, restore_path: str = "") -> Optional[str]:
  """The checkpoint prefix to load: `restore_path` (a prefix or directory), else `logdir`'s latest.

  `restore_path="best"` names `logdir`'s best checkpoint (by full test
  bits/dim, `RunDir.best_checkpoint`).

  Returns:
    A checkpoint prefix, or `None` when `logdir` holds none (and no
    `restore_path` is given).

  Raises:
    NoCheckpointError: `restore_path` is given but holds no checkpoint.
  """
  if restore_path == BEST:
    found = RunDir(logdir).best_checkpoint()
    if found:
      return found
    raise NoCheckpointError(
        f"no best checkpoint in {RunDir(logdir).best_checkpoint_dir}: train.py keeps one at "
        "each full test evaluation that improves test bits/dim (every --epochs_full_valid "
        "epochs and at the end of a run). Drop --restore_path=best to use the latest.")
  if restore_path:
    if os.path.isdir(restore_path):
      found = RunDir(restore_path).latest_checkpoint()
      if found:
        return found
      raise NoCheckpointError(
          f"no checkpoint in --restore_path {restore_path!r} (looked in it and in "
          f"{os.path.join(restore_path, 'checkpoints')}).")
    if checkpoint_exists(restore_path):
      return restore_path
    raise NoCheckpointError(f"--restore_path {restore_path!r} does not exist: give a checkpoint "
                            "prefix (e.g. logs/checkpoints/ckpt-1200) or a logdir written by "
                            "train.py.")
  return RunDir(logdir).latest_checkpoint()


def run_dir_of(checkpoint: str) -> RunDir:
  """The run directory a checkpoint belongs to: where its config.json is.

  A training checkpoint sits in `<logdir>/checkpoints/`, an exported one in
  the export directory itself.

  Raises:
    NoCheckpointError: neither directory holds a config.json.
  """
  d = os.path.dirname(checkpoint)
  for candidate in (d, os.path.dirname(d)):
    if RunDir(candidate or ".").has_config():
      return RunDir(candidate or ".")
  raise NoCheckpointError(f"no {CONFIG_FILE} beside {checkpoint} or its parent directory: "
                          "the model is rebuilt from the config train.py writes.")


# ---- The lock: one trainer per run directory -----------------------------------------


class RunDirLocked(RuntimeError):
  """Another live process holds the run directory's lock; the message names it."""


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


class RunLock:
  """The run directory's lock file, `<logdir>/lock`: `{"host", "pid", "since"}` of its holder.

  `acquire()` creates it exclusively (`O_CREAT | O_EXCL`, atomic on local
  file systems). A lock whose holder ran on this host and is gone (a
  `kill -9`, a crash) is stale: it is taken over and `acquire` returns a
  note saying so. A lock held by a live process, or by another host (whose
  processes cannot be checked from here), raises `RunDirLocked` naming the
  holder. `release()` removes the file if this process holds it.
  """

  def __init__(self, run_dir: "RunDir"):
    self.path = os.path.join(run_dir.path, "lock")
    self._held = False

  def holder(self) -> Optional[dict]:
    """The holder recorded in the lock file, or `None` when there is none (or it is unreadable)."""
    try:
      with open(self.path) as f:
        return json.loads(f.read() or "null")
    except (OSError, ValueError):
      return None

  def _create(self) -> bool:
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                          "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
    self._held = True
    return True

  def acquire(self) -> Optional[str]:
    """Takes the lock; returns a note when a stale lock was taken over, else `None`.

    Raises:
      RunDirLocked: a live process (or one on another host) holds it.
    """
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    if self._create():
      return None
    holder = self.holder()
    here = socket.gethostname()
    if holder and holder.get("host") == here and holder.get("pid") == os.getpid():
      self._held = True  # this process already holds it
      return None
    stale = (holder is None or (holder.get("host") == here
                                and not _process_alive(int(holder.get("pid", -1)))))
    if not stale:
      raise RunDirLocked(
          f"{os.path.dirname(self.path)} is in use by another train.py (pid {holder.get('pid')} "
          f"on {holder.get('host')}, since {holder.get('since')}): wait for it, stop it, or "
          f"use another --logdir. If that process is gone, delete {self.path}.")
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass
    if not self._create():  # another trainer took it over first
      return self.acquire()
    what = (f"pid {holder.get('pid')} on {holder.get('host')} is gone" if holder
            else "unreadable")
    return f"took over a stale lock on {os.path.dirname(self.path)} ({what})"

  def release(self) -> None:
    if not self._held:
      return
    holder = self.holder()
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
    self._held = False
