"""Activation normalisation (actnorm): a per-channel affine map with data-dependent init."""

from typing import Tuple

import tensorflow as tf

from glow_tf import normalization
from glow_tf.bijectors import base
from glow_tf.ops import num_pixels
from glow_tf.tracing import no_autograph

__all__ = ["ActNorm"]


@no_autograph
class ActNorm(base.GlowBijector):
  """Actnorm, the first piece of a Glow flow step (Kingma & Dhariwal, 2018, sec. 3.1).

  Written, like the paper's Table 1, in the encoding direction (image side
  `x` to latent side `z`), per channel `c`:

  ```none
  inverse (encode):   z = (x + b) * exp(s)        ildj = H * W * sum_c s_c
  forward (generate): x = z * exp(-s) - b         fldj = -H * W * sum_c s_c
  ```

  with `s = 3 * log_scale` (the original's `logscale_factor=3`). Variables
  start at `b = 0`, `log_scale = 0`: before initialisation the bijector is the
  identity. `initialize(x)` sets `b = -mean(x)` and
  `s = -log(std(x) + 1e-6)` per channel over the batch and spatial axes, so
  the encoding of `x` has zero mean and unit variance per channel. Under
  `tf.distribute` the statistics are those of the global batch (see
  `glow_tf.normalization`, which holds these formulas for this bijector and
  for the coupling networks' actnorms).

  Tensors are `[..., H, W, C]`; the log-dets are `[...]`.

  #### Example

  ```python
  actnorm = ActNorm(3)
  z = actnorm.initialize(images)            # z: zero mean, unit variance
  x = actnorm.forward(z)                    # back to `images`
  ```
  """

  def __init__(self, num_channels: int, dtype: tf.DType = tf.float32, validate_args: bool = False,
               name: str = "actnorm"):
    """Creates the bijector.

    Args:
      num_channels: Python `int`, the number of channels `C`.
      dtype: float dtype of the variables. Default value: `tf.float32`.
      validate_args: Python `bool`. Default value: `False`.
      name: Python `str`. Default value: `"actnorm"`.
    """
    parameters = dict(locals())
    if not isinstance(num_channels, int) or num_channels < 1:
      raise ValueError(f"ActNorm: num_channels must be a positive int, got {num_channels!r}.")
    with tf.name_scope(name) as name:
      self._num_channels = num_channels
      variables = normalization.make_variables(num_channels, dtype)
      self.shift = variables["shift"]
      self.log_scale = variables["log_scale"]
      super().__init__(dtype=dtype, validate_args=validate_args,
                       parameters=parameters, name=name)

  def params(self) -> dict:
    """`{"shift": [C], "log_scale": [C]}`, the variables."""
    return {"shift": self.shift, "log_scale": self.log_scale}

  def forward_with(self, params: dict, z: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    s = normalization.log_scale(params)
    x = z * tf.exp(-s) - params["shift"]
    return x, -num_pixels(z) * tf.reduce_sum(s)

  def inverse_with(self, params: dict, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    s = normalization.log_scale(params)
    return normalization.normalize(params, x), num_pixels(x) * tf.reduce_sum(s)

  def _initialize_4d(self, x):
    normalization.initialize(self.params(), x)
    return self.inverse_with(self.params(), x)[0]
