"""Tracing each distinct flow step once: shared `tf.function`s with parameter substitution.

A Glow of `L` levels and depth `K` has `L * K` flow steps but only `L`
distinct shapes. Traced naively, a training step builds the graph of every
flow step separately, and tracing dominates the time to the first step. Here
the first step of each kind (its static configuration and input shape) is the
*template* of a `tf.function`; every step of that kind calls it with its own
variables as arguments (`tf.function` treats variables as inputs, so the
trace is reused and gradients reach each step's variables). While the template
is traced, `read(v)` maps the template's variables to the arguments.

The shared functions are marked not to be inlined: TensorFlow would otherwise
paste a copy of the body into the training graph for every flow step before
grappler optimises it, and grappler's time grows with that copy count. Not
inlined, each body (and its gradient) is optimised once per kind of step.
"""

import contextlib
import inspect
import threading

import tensorflow as tf
from tensorflow.python.ops import control_flow_util  # pylint: disable=g-direct-tensorflow-import

__all__ = ["read", "substitute", "shared_call", "in_xla_context", "no_autograph"]


def no_autograph(cls):
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


def in_xla_context():
  """Whether the function being traced will be compiled by XLA (`jit_compile=True`)."""
  graph = tf.compat.v1.get_default_graph()
  return control_flow_util.GraphOrParentsInXlaContext(graph)

_STATE = threading.local()
_FUNCTIONS = {}


def read(variable):
  """`variable`, or what it is substituted with while a shared function is traced."""
  mapping = getattr(_STATE, "mapping", None)
  if mapping:
    return mapping.get(variable.ref(), variable)
  return variable


@contextlib.contextmanager
def substitute(mapping):
  previous = getattr(_STATE, "mapping", None)
  _STATE.mapping = mapping
  try:
    yield
  finally:
    _STATE.mapping = previous


def _variables(module):
  """The variables of `module` in a deterministic (attribute path) order."""
  items = module._flatten(with_path=True,  # pylint: disable=protected-access
                          predicate=lambda v: isinstance(v, tf.Variable))
  return [v for _, v in sorted(items, key=lambda pv: [str(p) for p in pv[0]])]


def shared_call(module, method_name, key, x):
  """Calls `module.<method_name>(x)` through a function shared by all modules with `key`.

  Args:
    module: a `tf.Module` whose math reads its variables through `read`.
    method_name: the method computing the result from `x`.
    key: hashable static configuration; modules with equal keys must compute
      the same function of `(x, their variables)`.
    x: the input tensor.
  """
  full_key = (key, method_name)
  entry = _FUNCTIONS.get(full_key)
  if entry is None:
    template = module
    template_vars = _variables(template)

    def body(x, args):
      mapping = {tv.ref(): a for tv, a in zip(template_vars, args)}
      with substitute(mapping):
        return getattr(template, method_name)(x)

    entry = _FUNCTIONS[full_key] = tf.function(
        body, autograph=False,
        # Not inlined: grappler then optimises one body per kind of step
        # instead of every step's copy, which cut the first run of a training
        # step by a third (bench/RESULTS.md); a call costs microseconds.
        experimental_attributes={"_noinline": True})
  return entry(x, [_local(v) for v in _variables(module)])


def _local(variable):
  """This replica's copy of a mirrored variable (what the replica's tape watches)."""
  if isinstance(variable, tf.distribute.DistributedValues):
    return variable._get_on_device_or_primary()  # pylint: disable=protected-access
  return variable
