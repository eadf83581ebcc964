"""The base class of glow_tf's bijectors: one pass gives the output and its log-det.

Every Glow bijector computes its output and its log-det Jacobian together: for a
coupling layer they share the network evaluation, so computing them apart would
run the network twice. `GlowBijector` subclasses implement two rank-4 methods,

    _forward_and_log_det_4d(x, **kwargs) -> (y, fldj)   # x: [B, H, W, C]
    _inverse_and_log_det_4d(y, **kwargs) -> (x, ildj)   # y: [B, H', W', C']

with the log-dets of shape `[B]`, and this base class

* wires them into the TFP contract (`forward`, `inverse`,
  `forward_log_det_jacobian`, `inverse_log_det_jacobian`), using TFP's
  greedy-attribute cache so that `TransformedDistribution.log_prob`, which
  asks for `inverse(y)` and then `inverse_log_det_jacobian(y)`, evaluates the
  bijector once;
* accepts any number of batch dimensions (`[..., H, W, C]`), folding them into
  one for the rank-4 implementation and restoring them after;
* checks static event shapes and raises a `ValueError` naming the problem;
* gives every bijector an `initialize(y)` method for data-dependent
  initialisation in the encoding direction (the identity pass-through here).
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

from glow_tf.bijectors import shared

tfb = tfp.bijectors

__all__ = ["GlowBijector"]


def fold_batch(t, event_ndims):
  """Reshapes `t` `[..., *event]` to `[N, *event]`; returns it and the batch shape."""
  shape = tf.shape(t)
  batch_shape = shape[:-event_ndims] if event_ndims else shape
  event_shape = shape[tf.rank(t) - event_ndims:]
  flat = tf.reshape(t, tf.concat([[-1], event_shape], axis=0))
  static = t.shape[len(t.shape) - event_ndims:] if t.shape.rank is not None else None
  if static is not None:
    flat = tf.ensure_shape(flat, [None] + static.as_list())
  return flat, batch_shape


def unfold_batch(t, batch_shape, event_ndims):
  """Inverse of `fold_batch` for a tensor `[N, *event]` (event_ndims may differ)."""
  event_shape = tf.shape(t)[1:] if event_ndims else tf.constant([], tf.int32)
  return tf.reshape(t, tf.concat([batch_shape, event_shape], axis=0))


@shared.no_autograph
class GlowBijector(tfb.Bijector):
  """A TFP bijector on images `[..., H, W, C]` computed in one fused pass.

  Subclasses set `self._event_shape_in` (forward input, `[H, W, C]` with
  `None` for unknown sizes) through `_set_event_shapes` and implement the two
  rank-4 methods named in the module docstring, plus `_forward_event_shape`
  / `_inverse_event_shape` when the shape changes.
  """

  # Computing the output also yields the log-det; keep both in TFP's cache.
  _cache = cache_util.BijectorCacheWithGreedyAttrs(
      forward_name="_augmented_forward", inverse_name="_augmented_inverse")

  def __init__(self, *, forward_min_event_ndims=3, inverse_min_event_ndims=None,
               is_constant_jacobian=False, validate_args=False, dtype=tf.float32,
               parameters=None, name=None):
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

  # The log-dets they return may be scalars when they do not depend on the
  # batch member (actnorm, 1x1 conv); the public methods broadcast them.

  def _forward_and_log_det_4d(self, x, **kwargs):
    raise NotImplementedError

  def _inverse_and_log_det_4d(self, y, **kwargs):
    raise NotImplementedError

  def _initialize_4d(self, y, **kwargs):
    """Data-dependent init from `y` `[B, H, W, C]`; returns the encoding of `y`."""
    return self._inverse_and_log_det_4d(y, **kwargs)[0]

  def _check_event(self, t, event_shape, what):
    """Raises ValueError when `t`'s static shape cannot hold `event_shape`."""
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
  def num_channels(self):
    """The channel count `C` the bijector was built for (`None`: any)."""
    return getattr(self, "_num_channels", None)

  def _expected_forward_event(self):
    return [None, None, self.num_channels]

  def _expected_inverse_event(self):
    return self._expected_forward_event()

  # ---- Public fused API -------------------------------------------------------

  def forward_and_log_det(self, x, **kwargs):
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

  def inverse_and_log_det(self, y, **kwargs):
    """Returns `(inverse(y), inverse_log_det_jacobian(y))` from one pass."""
    y = tf.convert_to_tensor(y, dtype_hint=self.dtype)
    return self._inverse_and_log_det(y, **kwargs)

  def initialize(self, y, **kwargs):
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
    self._check_event(y, event, "input")
    y4, batch_shape = fold_batch(y, len(event))
    kwargs = self._fold_kwargs(kwargs, batch_shape)
    x4 = self._initialize_4d(y4, **kwargs)
    return unfold_batch(x4, batch_shape, len(self._expected_forward_event()))

  # ---- TFP plumbing -------------------------------------------------------------

  def _fold_kwargs(self, kwargs, batch_shape):
    """Folds the batch dimensions of conditioning tensors like the input's."""
    del batch_shape
    out = {}
    for k, v in kwargs.items():
      if v is None:
        out[k] = None
        continue
      v = tf.convert_to_tensor(v)
      ndims = self._conditioning_event_ndims(k)
      out[k] = fold_batch(v, ndims)[0] if ndims else tf.reshape(v, [-1])
    return out

  def _conditioning_event_ndims(self, name):
    """Event rank of conditioning input `name` (0 for a label)."""
    del name
    return 1

  def _forward_and_log_det(self, x, **kwargs):
    event = self._expected_forward_event()
    self._check_event(x, event, "forward input")
    x4, batch_shape = fold_batch(x, len(event))
    y4, fldj = self._forward_and_log_det_4d(
        x4, **self._fold_kwargs(kwargs, batch_shape))
    y = unfold_batch(y4, batch_shape, len(self._expected_inverse_event()))
    return y, tf.reshape(tf.broadcast_to(fldj, tf.shape(x4)[:1]), batch_shape)

  def _inverse_and_log_det(self, y, **kwargs):
    event = self._expected_inverse_event()
    self._check_event(y, event, "inverse input")
    y4, batch_shape = fold_batch(y, len(event))
    x4, ildj = self._inverse_and_log_det_4d(
        y4, **self._fold_kwargs(kwargs, batch_shape))
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


def num_pixels(t):
  """H * W of a rank-4 tensor `[B, H, W, C]` (a Python float when static)."""
  h, w = t.shape[1], t.shape[2]
  if h is not None and w is not None:
    return float(h * w)
  shape = tf.shape(t)
  return tf.cast(shape[1] * shape[2], t.dtype)


def static_hw(t):
  """Static `(H, W)` of `[B, H, W, C]` when known, else dynamic."""
  h, w = t.shape[1], t.shape[2]
  if h is None or w is None:
    shape = tf.shape(t)
    return shape[1], shape[2]
  return h, w


def np_dtype(dtype):
  return np.dtype(tf.as_dtype(dtype).as_numpy_dtype)


def matmul_channels(x, kernel, transpose_kernel=False, bias=None, activation=None):
  """`x` `[..., C]` times `kernel` `[C, out]` over the channel axis: `[..., out]`.

  A reshape to a `[N, C]` matrix and one matmul, which is faster on CPU
  than `einsum` or a 1x1 `conv2d` for Glow's shapes (bench/RESULTS.md).
  With `transpose_kernel`, `kernel` is `[out, C]` and the product uses its
  transpose without materialising it. `bias` `[out]` and `activation` (such
  as `tf.nn.relu`) are applied to the `[N, out]` product before it is
  reshaped back, where TensorFlow fuses them into the matmul (`_FusedMatMul`:
  no separate passes over the output).
  """
  c, out = kernel.shape[0], kernel.shape[-1]
  if transpose_kernel:
    c, out = out, c
  shape = x.shape
  y = tf.matmul(tf.reshape(x, [-1, c]), kernel, transpose_b=transpose_kernel)
  if bias is not None:
    y = tf.nn.bias_add(y, bias)
  if activation is not None:
    y = activation(y)
  if shape.is_fully_defined():
    return tf.reshape(y, shape[:-1].as_list() + [out])
  return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [out]], 0))
