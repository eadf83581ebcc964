"""Stopping a run cleanly on SIGTERM and SIGINT (preemption, a scheduler, Ctrl-C).

A signal does not interrupt the step being computed: its handler only records
the request (`StopRequest`), and the training loop looks at it between steps.
Under `tf.distribute` the decision is taken together: each worker's request
travels with the step's all-reduced metrics (`glow_tf.steps`), so every
worker sees the same sum and stops after the same step, then all of them take
part in writing its checkpoint. This is what TensorFlow's
`PreemptionCheckpointHandler` does for `MultiWorkerMirroredStrategy`; doing
it in the step itself also covers one device and `MirroredStrategy`, costs no
extra collective, and keeps glow-tf's own checkpoint layout and resume.

A second signal of the same kind while the checkpoint is written restores the
default handler's behaviour: the process dies at once (the previous checkpoint
is then still there, and a damaged newest one is skipped at restore).
"""

import contextlib
import signal
import threading
from typing import Iterator, Optional, Sequence

__all__ = ["EXIT_CODES", "StopRequest", "stop_on_signals"]

# The exit codes of a run stopped by a signal after writing its checkpoint:
# 75 (EX_TEMPFAIL, "try again") for SIGTERM, so that schedulers restart it;
# 130 (the shell's 128 + SIGINT) for Ctrl-C.
EXIT_CODES = {"SIGTERM": 75, "SIGINT": 130}


class StopRequest:
  """Whether a stop was asked for, and by which signal (`"SIGTERM"`, `"SIGINT"`)."""

  def __init__(self):
    self.signal_name: Optional[str] = None

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def request(self, signal_name: str) -> None:
    if self.signal_name is None:
      self.signal_name = signal_name


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
                    ) -> Iterator[StopRequest]:
  """Within the block, `signals` set the yielded `StopRequest` instead of ending the process.

  Handlers can only be installed from the main thread; elsewhere the
  request simply never fires. The previous handlers come back after the block.
  """
  stop = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield stop
    return
  previous = {}

  def handler(signum, frame):
    name = signal.Signals(signum).name
    if stop.signal_name == name:  # asked twice: die now, as without us
      signal.signal(signum, previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    stop.request(name)

  for s in signals:
    previous[s] = signal.signal(s, handler)
  try:
    yield stop
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
