"""Compiled CPU kernels: direct 3x3 convolutions for Glow's thin layers, and the optimiser's update.

TensorFlow's CPU convolutions are built for wide layers. Two of the three
layers of each coupling network are thin, and TF runs them slowly:
- the zero convolution (hidden width in, a few channels out);
- the first convolution (a few channels in, hidden width out), followed by a
  bias map and a ReLU, each a full pass over a large activation.

Three ops in `conv3x3.cc`, each accumulating register tiles with AVX2 fused
multiply-adds:
- `GlowConv3x3` computes `relu(conv2d(x, K, "SAME") + bias)` directly. Each
  tile is a few output pixels by 8-24 output channels, summed over the 9 taps
  and the input channels. The bias map and the ReLU are applied before the
  single store.
- `GlowConv3x3BackpropFilter` and `GlowConv3x3BackpropInput` are the first
  convolution's kernel and input gradients.

Measured on an AMD EPYC (AVX2) against TF's ops (`bench/kernels.py`,
`bench/RESULTS.md`): 1.04-2.0x faster at the shapes where `glow_tf.nn` uses
them; slower at some others, where it uses TF's. The gradient of `conv3x3` is
registered in `glow_tf.nn`. The two gradient ops have no gradients of their
own, so second derivatives through these paths need `GLOW_TF_KERNELS=0`.

`GlowOptimizerUpdate` (`optimizer_update.cc`, `optimizer_update()` here)
applies the original's Adamax or Adam step, weight decay and Polyak
averaging to many variables in one op, with TensorFlow's arithmetic
(`glow_tf.optim`).

Building is explicit: `python -m glow_tf.kernels.build`, which
`scripts/setup.sh` runs. It needs g++ and TensorFlow's headers, which ship
with the pip package. Without the built library, or with
`GLOW_TF_KERNELS=0`, or on a CPU without AVX2 and FMA, or with a GPU
visible, `available()` is False and `glow_tf.nn` uses TensorFlow's ops. Both
paths compute the same function (tested).
"""

import contextlib
import functools
import os
import threading
from typing import Iterator, Optional, Sequence, Set, Union

import tensorflow as tf
from absl import logging

__all__ = ["available", "conv3x3", "disabled", "conv3x3_backprop_filter", "conv3x3_backprop_input",
           "cpu_can_run", "cpu_flags", "library_path", "needs_build", "optimizer_update",
           "unavailable_reason", "wide_vectors"]

LIBRARY_NAME = "_glow_kernels.so"
ENV_SWITCH = "GLOW_TF_KERNELS"

_OPS = ("glow_conv3x3", "glow_conv3x3_backprop_filter", "glow_conv3x3_backprop_input",
        "glow_optimizer_update")  # what the library must hold
_LOCK = threading.Lock()
_state = {"loaded": False, "lib": None, "reason": None, "needs_build": False}


_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = tuple(os.path.join(_HERE, name) for name in ("conv3x3.cc", "optimizer_update.cc"))


def library_path() -> str:
  """Where `python -m glow_tf.kernels.build` writes the library."""
  return os.path.join(_HERE, LIBRARY_NAME)


def cpu_flags(cpuinfo: Optional[str] = None) -> Optional[Set[str]]:
  """The CPU's feature flags (a `set` of `str`), or `None` where unknown.

  Args:
    cpuinfo: the text of `/proc/cpuinfo` (read when `None`).
  """
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      return None
  for line in cpuinfo.splitlines():
    if line.startswith("flags"):
      return set(line.split(":", 1)[1].split())
  return None


def cpu_can_run(flags: Optional[Set[str]] = None) -> bool:
  """Whether a CPU with these flags (`cpu_flags()` when `None`) runs the kernels: AVX2 and FMA."""
  flags = cpu_flags() if flags is None else flags
  return bool(flags) and {"avx2", "fma"} <= flags


def wide_vectors(flags: Optional[Set[str]] = None) -> bool:
  """Whether TensorFlow's own CPU kernels run 16-float vectors here (AVX-512), twice this library's 8.

  `glow_tf.nn` then uses fewer of the compiled convolution kernels: on such
  CPUs TensorFlow's oneDNN convolutions win at more of Glow's shapes
  (`bench/kernels.py`, `bench/RESULTS.md`).

  Args:
    flags: the CPU's flags (`cpu_flags()` when `None`).
  """
  flags = _this_cpu_flags() if flags is None else flags
  return bool(flags) and "avx512f" in flags


@functools.lru_cache(maxsize=1)
def _this_cpu_flags():
  """`cpu_flags()`, read once (the kernel rules ask for every convolution they trace)."""
  return cpu_flags()


def _newer_source(path):
  """A source file changed after the library at `path` was built, or `None`."""
  for source in SOURCES:
    if os.path.exists(source) and os.path.getmtime(source) > os.path.getmtime(path):
      return source
  return None


def _load():
  """Loads the library once; records why not where it cannot."""
  if _state["loaded"]:
    return _state["lib"]
  with _LOCK:
    if not _state["loaded"]:
      _decide()
      _state["loaded"] = True
  return _state["lib"]


def _decide():
  """Sets `_state`'s lib, reason and needs_build."""
  path = library_path()
  if os.environ.get(ENV_SWITCH, "1") == "0":
    _state["reason"] = f"{ENV_SWITCH}=0"
  elif not cpu_can_run():
    _state["reason"] = "this CPU lacks AVX2 and FMA (or /proc/cpuinfo is unreadable)"
  elif tf.config.list_physical_devices("GPU"):
    _state["reason"] = "a GPU is visible (the kernels are CPU-only)"
  elif not os.path.exists(path):
    _state["reason"] = (f"{path} is not built; run `python -m glow_tf.kernels.build` "
                        "(scripts/setup.sh does) for faster CPU training")
    _state["needs_build"] = True
    logging.info("glow_tf: %s. Using TensorFlow's convolutions.", _state["reason"])
  elif newer := _newer_source(path):
    _state["reason"] = (f"{path} is older than {newer}; rebuild it with "
                        "`python -m glow_tf.kernels.build`")
    _state["needs_build"] = True
  else:
    try:
      lib = tf.load_op_library(path)
    except Exception as e:  # pylint: disable=broad-except
      # NotFoundError/OSError for a broken file or another TF's ABI, OpError for clashing ops.
      _state["reason"] = (f"{path} does not load ({e}); rebuild it with "
                          "`python -m glow_tf.kernels.build` (after a TensorFlow upgrade, say)")
      _state["needs_build"] = True
    else:
      missing = [op for op in _OPS if not hasattr(lib, op)]
      if missing:
        _state["reason"] = (f"{path} is out of date (no {', '.join(missing)}); rebuild it "
                            "with `python -m glow_tf.kernels.build`")
        _state["needs_build"] = True
      else:
        _state["lib"] = lib
  if _state["needs_build"] and os.path.exists(path):  # built, but unusable
    logging.warning("glow_tf: %s. Using TensorFlow's convolutions.", _state["reason"])


def available() -> bool:
  """Whether `conv3x3` can run here (see the module docstring)."""
  return _load() is not None


def needs_build() -> bool:
  """True where the kernels could run but their library is missing, broken or out of date."""
  _load()
  return _state["needs_build"]


def unavailable_reason() -> Optional[str]:
  """`None` when `available()`, else why not (a sentence naming the fix)."""
  _load()
  return _state["reason"]


def _library():
  """The loaded library; raises `RuntimeError` with the reason where there is none."""
  lib = _load()
  if lib is None:
    raise RuntimeError(f"glow_tf's compiled kernels are unavailable: {_state['reason']}.")
  return lib


def conv3x3(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, relu: bool = False) -> tf.Tensor:
  """`relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias)` in one pass (float32, CPU).

  Differentiable (the gradient is registered by `glow_tf.nn`).

  Args:
    x: `[batch, height, width, channels]` float32.
    kernel: `[3, 3, channels, out]` float32.
    bias: `[height, width, out]` float32, added to every image.
    relu: Python `bool`: apply `max(., 0)` last.
  Returns:
    `[batch, height, width, out]`.
  Raises:
    RuntimeError: if not `available()`, with the reason.
  """
  return _library().glow_conv3x3(x, kernel, bias, relu=relu)


def conv3x3_backprop_filter(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
  """The gradient of `conv3x3`'s (or `tf.nn.conv2d`'s 3x3 "SAME") kernel for output gradient `dy`.

  Args:
    x: `[batch, height, width, channels]` float32, the convolution's input.
    dy: `[batch, height, width, out]` float32 (after the ReLU's gradient).
  Returns:
    `[3, 3, channels, out]`.
  Raises:
    RuntimeError: if not `available()`, with the reason.
  """
  return _library().glow_conv3x3_backprop_filter(x, dy)


def conv3x3_backprop_input(dy: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
  """The gradient of `conv3x3`'s (or `tf.nn.conv2d`'s 3x3 "SAME") input for output gradient `dy`.

  Args:
    dy: `[batch, height, width, out]` float32 (after the ReLU's gradient).
    kernel: `[3, 3, channels, out]` float32.
  Returns:
    `[batch, height, width, channels]`.
  Raises:
    RuntimeError: if not `available()`, with the reason.
  """
  return _library().glow_conv3x3_backprop_input(dy, kernel)


def optimizer_update(kind: str, variables: Sequence[tf.Variable], m: Sequence[tf.Variable],
                     u: Sequence[tf.Variable], averages: Sequence[tf.Variable],
                     grads: Sequence[tf.Tensor], lr: tf.Tensor, beta1_power: tf.Tensor,
                     beta2_power: tf.Tensor, beta1: tf.Tensor, beta2: tf.Tensor, epsilon: tf.Tensor,
                     polyak_rate: tf.Tensor, weight_decay: tf.Tensor,
                     apply: Union[bool, tf.Tensor] = True) -> tf.Operation:
  """One Adamax or Adam step of all `variables`, with weight decay and Polyak averages, in one op.

  The arithmetic of TensorFlow's `ResourceApplyAdaMax` / `ResourceApplyAdam`
  (`lr` is the one each would take) and `ResourceApplyGradientDescent` for
  the averages, element by element in float32, so the result has the same
  bits as those per-variable ops (see `optimizer_update.cc` and
  `glow_tf.optim`). All variables float32 on this CPU, unpartitioned.

  Args:
    kind: `"adamax"` or `"adam"`.
    variables, m, u: the weights and their two moments, equal shapes pairwise.
    averages: the weights' Polyak averages, or `[]` for none.
    grads: float32 tensors of the weights' shapes.
    lr, beta1_power, beta2_power, beta1, beta2, epsilon, polyak_rate, weight_decay:
      float32 scalars.
    apply: a bool scalar: where False the op changes nothing (a skipped step).
  Returns:
    The op (no outputs).
  Raises:
    RuntimeError: if not `available()`, with the reason.
  """
  handles = lambda vs: [v.handle for v in vs]
  return _library().glow_optimizer_update(
      var=handles(variables), m=handles(m), u=handles(u), avg=handles(averages), grad=list(grads),
      lr=lr, beta1_power=beta1_power, beta2_power=beta2_power, beta1=beta1, beta2=beta2,
      epsilon=epsilon, polyak_rate=polyak_rate, weight_decay=weight_decay,
      apply=tf.convert_to_tensor(apply, tf.bool), kind=kind)


@contextlib.contextmanager
def disabled(reason: str = "switched off for this block") -> Iterator[None]:
  """Within the block `available()` is False: what is traced there uses TensorFlow's ops only.

  For graphs that leave this process, e.g. a SavedModel loaded where
  glow_tf (and so this op library) is not importable (`glow_tf.export`).
  """
  _load()
  with _LOCK:
    saved = dict(_state)
    _state.update(lib=None, reason=reason, needs_build=False)
  try:
    yield
  finally:
    with _LOCK:
      _state.update(saved)


def _reset_for_tests():
  """Forget the loading decision (tests change `GLOW_TF_KERNELS`)."""
  _state.update(loaded=False, lib=None, reason=None, needs_build=False)
