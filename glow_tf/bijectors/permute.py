"""The fixed channel permutations of the original: reverse and shuffle."""

from typing import Any, Callable, Dict, Tuple

import numpy as np
import tensorflow as tf

from glow_tf.bijectors import base
from glow_tf.tracing import no_autograph

__all__ = ["Reverse", "Shuffle"]


@no_autograph
class _ChannelPermutation(base.GlowBijector):
  """Permutes the channels of `[..., H, W, C]` by a fixed permutation; log-det 0.

  In the encoding direction `z[..., c] = x[..., perm[c]]`; the forward
  (generative) direction applies the inverse permutation.
  """

  def __init__(self, num_channels: int, make_permutation: Callable[[int], np.ndarray], dtype: tf.DType,
               validate_args: bool, parameters: Dict[str, Any], name: str):
    if not isinstance(num_channels, int) or num_channels < 1:
      raise ValueError(
          f"{type(self).__name__}: num_channels must be a positive int, got {num_channels!r}.")
    with tf.name_scope(name) as name:
      self._num_channels = num_channels
      self._perm = np.asarray(make_permutation(num_channels), np.int32)
      self._inv_perm = np.argsort(self._perm).astype(np.int32)
      super().__init__(is_constant_jacobian=True, dtype=dtype,
                       validate_args=validate_args, parameters=parameters, name=name)

  @property
  def permutation(self) -> np.ndarray:
    """The encoding permutation, a numpy int array `[C]`."""
    return self._perm.copy()

  def forward_with(self, params: dict, z: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    del params  # no variables
    return (tf.gather(z, self._inv_perm, axis=-1),
            tf.zeros([], z.dtype))

  def inverse_with(self, params: dict, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    del params  # no variables
    return (tf.gather(x, self._perm, axis=-1),
            tf.zeros([], x.dtype))


@no_autograph
class Reverse(_ChannelPermutation):
  """Reverses the channel order (`--flow_permutation=0`, the original's `reverse_features`).

  ```none
  inverse (encode) and forward (generate):  z = x[..., ::-1]     log-det 0
  ```
  """

  def __init__(self, num_channels: int, dtype: tf.DType = tf.float32, validate_args: bool = False,
               name: str = "reverse"):
    """Args: num_channels: Python `int` `C`; dtype; validate_args; name."""
    parameters = dict(locals())
    super().__init__(num_channels, lambda c: np.arange(c)[::-1],
                     dtype, validate_args, parameters, name)

  def forward_with(self, params: dict, z: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    del params  # no variables
    return tf.reverse(z, [-1]), tf.zeros([], z.dtype)

  def inverse_with(self, params: dict, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    del params  # no variables
    return tf.reverse(x, [-1]), tf.zeros([], x.dtype)


@no_autograph
class Shuffle(_ChannelPermutation):
  """A fixed random channel permutation (`--flow_permutation=1`, the original's `shuffle_features`).

  The permutation is drawn once from `numpy.random.RandomState(seed)`, so the
  same seed rebuilds the same bijector (it holds no variables).

  ```none
  inverse (encode):   z = x[..., perm]       forward: x = z[..., argsort(perm)]
  log-det 0
  ```
  """

  def __init__(self, num_channels: int, seed: int = 0, dtype: tf.DType = tf.float32,
               validate_args: bool = False, name: str = "shuffle"):
    """Args: num_channels: Python `int` `C`; seed: Python `int`; dtype; validate_args; name."""
    parameters = dict(locals())
    super().__init__(num_channels, np.random.RandomState(seed).permutation,
                     dtype, validate_args, parameters, name)
