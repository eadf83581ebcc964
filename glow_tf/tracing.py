"""How glow_tf's code is traced: no AutoGraph, XLA detection, and traces shared by flow steps.

Trace sharing: a Glow of `L` levels and depth `K` has `L * K` flow steps but
only `L` distinct kinds (static configuration and input shape). Traced
naively, a training step builds the graph of every flow step separately, and
tracing dominates the time to the first step. A `SharedTraces` cache, owned
by one model, holds one `tf.function` per kind of step: a pure function of
`(params, x)` where `params` is the nested structure of the step's variables,
passed as an argument. `tf.function` treats variables in its arguments as
inputs, so every step of a kind calls the same trace with its own variables
and gradients reach each step's variables. A function that read a variable
missing from `params` (from its closure) would capture it, and every step
would silently use that one variable: `SharedTraces` checks every trace it
makes and raises instead. (A closure read of a variable that is also in
`params` is the same input of the trace: TensorFlow binds it to the
argument.)

The shared functions are marked not to be inlined: TensorFlow would otherwise
paste a copy of the body into the training graph for every flow step before
grappler optimises it, and grappler's time grows with that copy count. Not
inlined, each body (and its gradient) is optimised once per kind of step.

This module imports nothing from glow_tf.
"""

import inspect
from typing import Any, Callable, Hashable, TypeVar

import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

__all__ = ["no_autograph", "in_xla_context", "SharedTraces"]

_Class = TypeVar("_Class", bound=type)


def no_autograph(cls: _Class) -> _Class:
  """Class decorator: AutoGraph never converts the class's public methods and `__call__`.

  A user's `@tf.function` (AutoGraph on by default) converts every Python
  function it calls outside TensorFlow's and TFP's own modules, rewriting its
  source and wrapping each call: for a training step that calls our
  optimiser and model, that tripled the tracing time. Our code has no
  tensor-dependent Python control flow, so conversion only costs time.
  """
  for name, attr in list(vars(cls).items()):
    if inspect.isfunction(attr) and (not name.startswith("_") or name == "__call__"):
      setattr(cls, name, tf.autograph.experimental.do_not_convert(attr))
  return cls


def in_xla_context() -> bool:
  """Whether the function being traced will be compiled by XLA (`jit_compile=True`)."""
  graph = tf.compat.v1.get_default_graph()
  return control_flow_util.GraphOrParentsInXlaContext(graph)


def _local(variable):
  """This replica's copy of a mirrored variable (what the replica's tape watches)."""
  if isinstance(variable, tf.distribute.DistributedValues):
    return variable._get_on_device_or_primary()  # pylint: disable=protected-access
  return variable


class SharedTraces:
  """`tf.function`s shared by every call of the same kind, traced once each.

  Owned by one model (a `glow_tf.Glow`) and released with it. Not a
  `tf.Module` attribute that checkpoints see: it holds no variables.
  """

  def __init__(self):
    self._functions = {}

  def __len__(self) -> int:
    """The number of shared functions (kinds of calls) made so far."""
    return len(self._functions)

  def call(self, key: Hashable, fn: Callable[..., Any], params: Any,
           x: tf.Tensor, *more: tf.Tensor) -> Any:
    """`fn(params, x, *more)`, through the function shared by every call with `key`.

    Args:
      key: hashable static configuration; calls with equal keys must pass
        functions computing the same function of `(params, x)`, with `params`
        of the same structure. The first call's `fn` is traced.
      fn: a pure function of `params` and `x`: it must read no variable
        missing from `params`.
      params: nested structure (dicts, lists) of `tf.Variable`s.
      x: the input tensor.
      *more: further input tensors (a conditional flow step's features).

    Returns:
      What `fn` returns.

    Raises:
      ValueError: if the trace captures a variable (or any resource) instead
        of reading it from `params`: every call would use that variable.
    """
    function = self._functions.get(key)
    if function is None:
      function = self._functions[key] = tf.function(
          fn, autograph=False,
          # Not inlined: grappler then optimises one body per kind of step
          # instead of every step's copy, which cut the first run of a training
          # step by a third (docs/performance.md); a call costs microseconds.
          experimental_attributes={"_noinline": True})
    params = tf.nest.map_structure(_local, params)
    captured = [t for t in function.get_concrete_function(params, x, *more).captured_inputs
                if t.dtype == tf.resource]
    if captured:
      raise ValueError(
          f"the shared trace of {key!r} captures {len(captured)} resource(s) "
          f"({', '.join(t.name for t in captured if hasattr(t, 'name')) or 'eager handles'}): "
          "a variable read other than through the function's `params` would be the "
          "same variable for every call sharing the trace.")
    return function(params, x, *more)
