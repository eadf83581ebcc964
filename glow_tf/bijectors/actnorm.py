"""Activation normalisation (actnorm): a per-channel affine map with data-dependent init."""

import tensorflow as tf

from glow_tf.bijectors import base
from glow_tf.bijectors.shared import no_autograph, read

__all__ = ["ActNorm", "global_moments", "LOGSCALE_FACTOR"]

# The original stores log-scales divided by 3 (`logscale_factor=3`), which
# triples their effective learning rate; we keep its parameterisation.
LOGSCALE_FACTOR = 3.0


def global_moments(x, axes):
  """Mean and (biased) variance of `x` over `axes`, over the *global* batch.

  In the replica context of a `tf.distribute` strategy with several replicas
  the sums are all-reduced, so every replica gets the statistics of the whole
  global batch; elsewhere (one device, or cross-replica context holding the
  whole batch) they are the plain moments of `x`. The variance is two-pass
  (`mean((x - mean)**2)`), as in the original, to avoid cancellation.

  Args:
    x: float tensor, e.g. `[B, H, W, C]`.
    axes: the axes to reduce, e.g. `[0, 1, 2]`.

  Returns:
    mean, variance: tensors of `x`'s shape with `axes` removed.
  """
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    mean = tf.reduce_mean(x, axes)
    return mean, tf.reduce_mean(tf.square(x - mean), axes)
  sum_ = tf.reduce_sum(x, axes)
  count = tf.cast(tf.size(x) // tf.size(sum_), x.dtype)
  sum_, count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [sum_, count])
  mean = sum_ / count
  sq = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                      tf.reduce_sum(tf.square(x - mean), axes))
  return mean, sq / count


def data_variable(initial_value, name, trainable=True):
  """A variable that may be assigned identically from every replica."""
  return tf.Variable(
      initial_value, name=name, trainable=trainable,
      aggregation=tf.VariableAggregation.MEAN)


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
  `global_moments`).

  Tensors are `[..., H, W, C]`; the log-dets are `[...]`.

  #### Example

  ```python
  actnorm = ActNorm(3)
  z = actnorm.initialize(images)            # z: zero mean, unit variance
  x = actnorm.forward(z)                    # back to `images`
  ```
  """

  def __init__(self, num_channels, dtype=tf.float32, validate_args=False,
               name="actnorm"):
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
      self.shift = data_variable(tf.zeros([num_channels], dtype), "shift")
      self.log_scale = data_variable(tf.zeros([num_channels], dtype), "log_scale")
      super().__init__(dtype=dtype, validate_args=validate_args,
                       parameters=parameters, name=name)

  def _scale_log(self):
    return LOGSCALE_FACTOR * read(self.log_scale)

  def _forward_and_log_det_4d(self, z):
    s = self._scale_log()
    x = z * tf.exp(-s) - read(self.shift)
    return x, -base.num_pixels(z) * tf.reduce_sum(s)

  def _inverse_and_log_det_4d(self, x):
    s = self._scale_log()
    z = (x + read(self.shift)) * tf.exp(s)
    return z, base.num_pixels(x) * tf.reduce_sum(s)

  def _initialize_4d(self, x):
    mean, var = global_moments(x, [0, 1, 2])
    self.shift.assign(-mean)
    self.log_scale.assign(-tf.math.log(tf.sqrt(var) + 1e-6) / LOGSCALE_FACTOR)
    return self._inverse_and_log_det_4d(x)[0]
