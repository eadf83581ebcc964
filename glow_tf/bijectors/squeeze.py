"""Squeeze: trading spatial resolution for channels (space-to-depth)."""

from typing import List, Tuple

import tensorflow as tf

from glow_tf.bijectors import base
from glow_tf.ops import Dim
from glow_tf.tracing import no_autograph

__all__ = ["Squeeze", "squeeze", "unsqueeze"]


def squeeze(x: tf.Tensor, factor: int = 2) -> tf.Tensor:
  """`[B, H, W, C]` -> `[B, H/f, W/f, C*f*f]`, the original's `squeeze2d`.

  Output channel `c*f*f + i*f + j` holds input channel `c` at offset `(i, j)`
  of each `f x f` block (the original's layout, channel-major).
  """
  if factor == 1:
    return x
  _, h, w, c = base_shape(x)
  x = tf.reshape(x, [-1, h // factor, factor, w // factor, factor, c])
  x = tf.transpose(x, [0, 1, 3, 5, 2, 4])
  return tf.reshape(x, [-1, h // factor, w // factor, c * factor * factor])


def unsqueeze(x: tf.Tensor, factor: int = 2) -> tf.Tensor:
  """Inverse of `squeeze`: `[B, H, W, C]` -> `[B, H*f, W*f, C/(f*f)]`."""
  if factor == 1:
    return x
  _, h, w, c = base_shape(x)
  x = tf.reshape(x, [-1, h, w, c // (factor * factor), factor, factor])
  x = tf.transpose(x, [0, 1, 4, 2, 5, 3])
  return tf.reshape(x, [-1, h * factor, w * factor, c // (factor * factor)])


def base_shape(x: tf.Tensor) -> List[Dim]:
  """Shape of a rank-4 tensor, static entries where known."""
  dyn = tf.shape(x)
  return [d if d is not None else dyn[i] for i, d in enumerate(x.shape.as_list())]


@no_autograph
class Squeeze(base.GlowBijector):
  """Squeeze of Glow and RealNVP (Dinh et al., 2017): each `f x f` block becomes channels.

  Following TFP's convention (forward = generative direction), the *inverse*
  squeezes and the *forward* un-squeezes:

  ```none
  inverse (encode):   [..., H, W, C]          -> [..., H/f, W/f, C*f*f]
  forward (generate): [..., H/f, W/f, C*f*f]  -> [..., H, W, C]
  log-det 0 (a permutation of the entries)
  ```

  `H` and `W` of the image side must be divisible by `f`.
  """

  def __init__(self, factor: int = 2, dtype: tf.DType = tf.float32, validate_args: bool = False,
               name: str = "squeeze"):
    """Creates the bijector.

    Args:
      factor: Python `int` >= 1, the block size `f`. Default value: `2`.
      dtype: float dtype. Default value: `tf.float32`.
      validate_args: Python `bool`. Default value: `False`.
      name: Python `str`. Default value: `"squeeze"`.
    """
    parameters = dict(locals())
    if not isinstance(factor, int) or factor < 1:
      raise ValueError(f"Squeeze: factor must be a positive int, got {factor!r}.")
    with tf.name_scope(name) as name:
      self._factor = factor
      super().__init__(is_constant_jacobian=True, dtype=dtype,
                       validate_args=validate_args, parameters=parameters, name=name)

  @property
  def factor(self) -> int:
    return self._factor

  def _check_divisible(self, dims, what, divisor):
    for d in dims:
      if d is not None and d % divisor:
        raise ValueError(
            f"Squeeze(factor={self._factor}): {what} {dims} is not divisible by "
            f"{divisor}; crop or pad the image, or use fewer levels.")

  def _check_event(self, t, event_shape, what, image_side=True):
    super()._check_event(t, event_shape, what, image_side)
    if t.shape.rank is None:
      return
    h, w, c = t.shape[-3:]
    f = self._factor
    if image_side:  # the image is squeezed: its height and width split into blocks
      self._check_divisible([h, w], "height/width", f)
    else:
      self._check_divisible([c], "channel count", f * f)

  def forward_with(self, params: dict, z: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    del params  # no variables
    return unsqueeze(z, self._factor), tf.zeros([], z.dtype)

  def inverse_with(self, params: dict, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    del params  # no variables
    return squeeze(x, self._factor), tf.zeros([], x.dtype)

  def _forward_event_shape(self, input_shape):
    h, w, c = tf.TensorShape(input_shape)[-3:].as_list()
    f = self._factor
    mul = lambda d, k: None if d is None else d * k
    div = lambda d, k: None if d is None else d // k
    return tf.TensorShape(input_shape[:-3] + [mul(h, f), mul(w, f), div(c, f * f)])

  def _forward_event_shape_tensor(self, input_shape):
    f = self._factor
    return tf.concat([input_shape[:-3], input_shape[-3:-1] * f,
                      input_shape[-1:] // (f * f)], 0)

  def _inverse_event_shape(self, output_shape):
    h, w, c = tf.TensorShape(output_shape)[-3:].as_list()
    f = self._factor
    mul = lambda d, k: None if d is None else d * k
    div = lambda d, k: None if d is None else d // k
    return tf.TensorShape(output_shape[:-3] + [div(h, f), div(w, f), mul(c, f * f)])

  def _inverse_event_shape_tensor(self, output_shape):
    f = self._factor
    return tf.concat([output_shape[:-3], output_shape[-3:-1] // f,
                      output_shape[-1:] * (f * f)], 0)
