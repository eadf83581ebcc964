"""The base class of glow_tf's bijectors: one pass gives the output and its log-det.

Every Glow bijector computes its output and its log-det Jacobian together: for a
coupling layer they share the network evaluation, so computing them apart would
run the network twice. `GlowBijector` subclasses implement their maths as
pure functions of their variables on one batch dimension,

    params() -> nested dict of the bijector's tf.Variables ({} without any)
    forward_with(params, x, **kwargs) -> (y, fldj)   # x: [B, H, W, C]
    inverse_with(params, y, **kwargs) -> (x, ildj)   # y: [B, H', W', C']

with the log-dets of shape `[B]` (or scalars when they do not depend on the
batch member), reading no variable except through `params`, so that flow
steps of one kind can share one trace (`glow_tf.tracing.SharedTraces`), and
this base class

* wires them into the TFP contract (`forward`, `inverse`,
  `forward_log_det_jacobian`, `inverse_log_det_jacobian`), using TFP's
  greedy-attribute cache so that `TransformedDistribution.log_prob`, which
  asks for `inverse(y)` and then `inverse_log_det_jacobian(y)`, evaluates the
  bijector once;
* accepts any number of batch dimensions (`[..., H, W, C]`), folding them into
  one for the rank-4 implementation and restoring them after; the batch
  dimensions of conditioning kwargs (`labels`, `conditioning`) broadcast
  against the input's, as TFP's batch shapes do;
* checks static event shapes and raises a `ValueError` naming the problem;
* declares no batched parameters (`_parameter_properties` is empty: the
  variables are created by the bijector, not passed in), so TFP's
  `experimental_batch_shape()` is scalar `[]` for every subclass;
* gives every bijector an `initialize(y)` method for data-dependent
  initialisation in the encoding direction (the identity pass-through here).
"""

from typing import Any, Dict, Optional, Tuple

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

from glow_tf.ops import TensorLike, fold_batch, unfold_batch
from glow_tf.tracing import no_autograph

tfb = tfp.bijectors

__all__ = ["GlowBijector"]


@no_autograph
class GlowBijector(tfb.Bijector):
  """A TFP bijector on images `[..., H, W, C]` computed in one fused pass.

  Subclasses set `self._num_channels` (or override `_expected_forward_event`)
  and implement `params`, `forward_with` and `inverse_with` (the module
  docstring), plus `_forward_event_shape` / `_inverse_event_shape` when the
  shape changes.
  """

  # Computing the output also yields the log-det; keep both in TFP's cache.
  _cache = cache_util.BijectorCacheWithGreedyAttrs(
      forward_name="_augmented_forward", inverse_name="_augmented_inverse")

  def __init__(self, *, forward_min_event_ndims: int = 3, inverse_min_event_ndims: Optional[int] = None,
               is_constant_jacobian: bool = False, validate_args: bool = False, dtype: tf.DType = tf.float32,
               parameters: Optional[Dict[str, Any]] = None, name: Optional[str] = None):
    if inverse_min_event_ndims is None:
      inverse_min_event_ndims = forward_min_event_ndims
    super().__init__(
        forward_min_event_ndims=forward_min_event_ndims,
        inverse_min_event_ndims=inverse_min_event_ndims,
        is_constant_jacobian=is_constant_jacobian,
        validate_args=validate_args,
        dtype=dtype,
        parameters=parameters,
        name=name)

  # ---- Subclass interface ----------------------------------------------------

  def params(self) -> dict:
    """The bijector's variables as a nested dict (attribute name -> variable or sub-dict).

    The argument of `forward_with` and `inverse_with`; built afresh at each
    call (never stored, so checkpoints see each variable once).
    """
    return {}

  def forward_with(self, params: dict, x: tf.Tensor, **kwargs) -> Tuple[tf.Tensor, tf.Tensor]:
    """The forward (generative) map and its log-det, a pure function of `params`.

    Args:
      params: the variables' structure, as `params()` (this bijector's own, or
        another bijector's of the same configuration).
      x: float `[B, H, W, C]` (the forward event with one batch dimension).
      **kwargs: conditioning inputs, if the bijector takes any.

    Returns:
      y: `[B, H', W', C']`; fldj: `[B]`, or a scalar when it does not depend
      on the batch member (the public methods broadcast it).
    """
    raise NotImplementedError

  def inverse_with(self, params: dict, y: tf.Tensor, **kwargs) -> Tuple[tf.Tensor, tf.Tensor]:
    """The inverse (encoding) map and its log-det, a pure function of `params`.

    Like `forward_with`, from `y` `[B, H', W', C']` to `(x, ildj)`.
    """
    raise NotImplementedError

  def _initialize_4d(self, y, **kwargs):
    """Data-dependent init from `y` `[B, H, W, C]`; returns the encoding of `y`."""
    return self.inverse_with(self.params(), y, **kwargs)[0]

  def _check_event(self, t, event_shape, what, image_side=True):
    """Raises ValueError when `t`'s static shape cannot hold `event_shape`.

    Args:
      t: the tensor to check.
      event_shape: the expected event shape (`None` entries: any).
      what: how the message names `t`.
      image_side: whether `t` is on the image side of the bijector (an input
        of `inverse` or `initialize`) rather than the latent side (an input of
        `forward`); subclasses whose checks differ by side (`Squeeze`) read it.
        Default `True`.
    """
    del image_side  # the same checks on both sides here
    ndims = len(event_shape)
    if t.shape.rank is not None and t.shape.rank < ndims:
      raise ValueError(
          f"{self.name}: {what} must have rank >= {ndims} "
          f"([..., {', '.join(['H', 'W', 'C'][-ndims:] if ndims <= 3 else ['...'])}]), "
          f"got shape {t.shape}.")
    if t.shape.rank is None:
      return
    got = t.shape[t.shape.rank - ndims:].as_list()
    for g, e in zip(got, event_shape):
      if g is not None and e is not None and g != e:
        raise ValueError(
            f"{self.name}: {what} has event shape {got}, expected "
            f"{list(event_shape)}.")

  @property
  def num_channels(self) -> Optional[int]:
    """The channel count `C` the bijector was built for (`None`: any)."""
    return getattr(self, "_num_channels", None)

  def _expected_forward_event(self):
    return [None, None, self.num_channels]

  def _expected_inverse_event(self):
    return self._expected_forward_event()

  # ---- Public fused API -------------------------------------------------------

  def forward_and_log_det(self, x: TensorLike, **kwargs) -> Tuple[tf.Tensor, tf.Tensor]:
    """Returns `(forward(x), forward_log_det_jacobian(x))` from one pass.

    Args:
      x: float `[..., H, W, C]` (or the bijector's forward event shape).
      **kwargs: conditioning inputs, if the bijector takes any.

    Returns:
      y: the forward output, same batch dimensions as `x`.
      fldj: `[...]`, the log-det of the forward Jacobian per batch member.
    """
    x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
    return self._forward_and_log_det(x, **kwargs)

  def inverse_and_log_det(self, y: TensorLike, **kwargs) -> Tuple[tf.Tensor, tf.Tensor]:
    """Returns `(inverse(y), inverse_log_det_jacobian(y))` from one pass."""
    y = tf.convert_to_tensor(y, dtype_hint=self.dtype)
    return self._inverse_and_log_det(y, **kwargs)

  def initialize(self, y: TensorLike, **kwargs) -> tf.Tensor:
    """Data-dependent initialisation in the encoding (inverse) direction.

    Sets every data-dependent variable (actnorm statistics) from the batch `y`
    so that the encoding of `y` is normalised, and returns that encoding, so
    initialisation can be chained through a stack of bijectors. Under a
    `tf.distribute` strategy, call it either in cross-replica context on the
    global batch, or in replica context (`strategy.run`) on each replica's
    shard: statistics are then all-reduced over the global batch, so every
    replica ends with identical variables.

    Args:
      y: float `[..., H, W, C]`, image-side batch.
      **kwargs: conditioning inputs, if the bijector takes any.

    Returns:
      The encoding `inverse(y)` computed with the initialised variables.
    """
    y = tf.convert_to_tensor(y, dtype_hint=self.dtype)
    event = self._expected_inverse_event()
    self._check_event(y, event, "input", image_side=True)
    y4, batch_shape, kwargs = self._fold(y, len(event), kwargs)
    x4 = self._initialize_4d(y4, **kwargs)
    return unfold_batch(x4, batch_shape, len(self._expected_forward_event()))

  # ---- TFP plumbing -------------------------------------------------------------

  @classmethod
  def _parameter_properties(cls, dtype):
    # No Tensor-valued constructor argument: a Glow bijector's parameters are
    # variables it creates itself, one set for every batch member. So TFP
    # infers the batch shape `[]` (`experimental_batch_shape()` and
    # `experimental_batch_shape_tensor()`), as for any bijector without
    # batched parameters.
    del dtype
    return {}

  def _get_parameterization(self):
    # TFP's equality, hash and result cache take bijectors with equal
    # `parameters` (constructor arguments) to be the same function. Ours
    # create their own variables, so only the instance itself is: otherwise
    # two Glows of one configuration in one traced function would get each
    # other's cached results. (TFP does the same for bijectors without
    # `parameters`.)
    return id(self)

  def _fold(self, t, event_ndims, kwargs):
    """`t` `[..., *event]` and the conditioning kwargs with their batch dimensions folded into one.

    The batch shapes of `t` and of every conditioning tensor broadcast
    together (right-aligned, as TFP's batch shapes); each is broadcast to the
    result before folding. Returns `(t4, batch_shape, kwargs)`.
    """
    given = {k: tf.convert_to_tensor(v) for k, v in kwargs.items() if v is not None}
    event = _static_event(t, event_ndims)
    if given:
      batch_shape = _batch_of(t, event_ndims)
      for k, v in given.items():
        batch_shape = tf.broadcast_dynamic_shape(
            batch_shape, _batch_of(v, self._conditioning_event_ndims(k)))
      t = _broadcast_batch(t, event_ndims, batch_shape)
      given = {k: _broadcast_batch(v, self._conditioning_event_ndims(k), batch_shape)
               for k, v in given.items()}
    t4, batch_shape = fold_batch(t, event_ndims)
    if given and event is not None:  # (a kwarg of unknown rank leaves the broadcast's rank open)
      t4 = tf.ensure_shape(t4, [None] + event)
    out = {k: None for k in kwargs}
    for k, v in given.items():
      ndims = self._conditioning_event_ndims(k)
      out[k] = fold_batch(v, ndims)[0] if ndims else tf.reshape(v, [-1])
    return t4, batch_shape, out


  def _conditioning_event_ndims(self, name):
    """Event rank of conditioning input `name` (0 for a label)."""
    del name
    return 1

  def _forward_and_log_det(self, x, **kwargs):
    event = self._expected_forward_event()
    self._check_event(x, event, "forward input", image_side=False)
    x4, batch_shape, kwargs = self._fold(x, len(event), kwargs)
    y4, fldj = self.forward_with(self.params(), x4, **kwargs)
    y = unfold_batch(y4, batch_shape, len(self._expected_inverse_event()))
    return y, tf.reshape(tf.broadcast_to(fldj, tf.shape(x4)[:1]), batch_shape)

  def _inverse_and_log_det(self, y, **kwargs):
    event = self._expected_inverse_event()
    self._check_event(y, event, "inverse input", image_side=True)
    y4, batch_shape, kwargs = self._fold(y, len(event), kwargs)
    x4, ildj = self.inverse_with(self.params(), y4, **kwargs)
    x = unfold_batch(x4, batch_shape, len(self._expected_forward_event()))
    return x, tf.reshape(tf.broadcast_to(ildj, tf.shape(y4)[:1]), batch_shape)

  def _augmented_forward(self, x, **kwargs):
    y, fldj = self._forward_and_log_det(x, **kwargs)
    return y, {"ildj": -fldj}

  def _augmented_inverse(self, y, **kwargs):
    x, ildj = self._inverse_and_log_det(y, **kwargs)
    return x, {"ildj": ildj}

  def _forward(self, x, **kwargs):
    return self._forward_and_log_det(x, **kwargs)[0]

  def _inverse(self, y, **kwargs):
    return self._inverse_and_log_det(y, **kwargs)[0]

  def _forward_log_det_jacobian(self, x, **kwargs):
    return self._forward_and_log_det(x, **kwargs)[1]

  def _inverse_log_det_jacobian(self, y, **kwargs):
    return self._inverse_and_log_det(y, **kwargs)[1]



def _batch_of(t, event_ndims):
  """The batch shape (a 1-D int32 tensor) of `t` with `event_ndims` event dimensions."""
  shape = tf.shape(t)
  if t.shape.rank is not None:  # (a static length keeps the broadcast's rank static)
    return shape[:t.shape.rank - event_ndims]
  return shape[:tf.rank(t) - event_ndims]


def _broadcast_batch(t, event_ndims, batch_shape):
  """`t` broadcast to `batch_shape + event shape`, keeping its static event shape."""
  event = _static_event(t, event_ndims)
  shape = tf.shape(t)
  out = tf.broadcast_to(t, tf.concat([batch_shape, shape[tf.rank(t) - event_ndims:]], 0))
  if event is not None and batch_shape.shape[0] is not None:
    out = tf.ensure_shape(out, [None] * batch_shape.shape[0] + event)
  return out


def _static_event(t, event_ndims):
  """The static event shape of `t` (a list, `None` where unknown), or `None` for an unknown rank."""
  if t.shape.rank is None:
    return None
  return t.shape[t.shape.rank - event_ndims:].as_list()
