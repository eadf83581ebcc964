"""Actnorm's parameterisation and data-dependent initialisation, written once.

Actnorm (Kingma & Dhariwal, 2018, sec. 3.1) is a per-channel affine map,
in the normalising direction

```none
z = (x + shift) * exp(s),    s = LOGSCALE_FACTOR * log_scale
```

initialised from data so that `z` has zero mean and unit variance per
channel. It appears twice in Glow: as a bijector of every flow step
(`glow_tf.bijectors.ActNorm`, which also fuses it into the 1x1 convolution)
and after the hidden convolutions of the coupling networks
(`glow_tf.nn.EdgeConv2D`, which folds it into its kernel). Both hold their
variables as `{"shift": [C], "log_scale": [C]}` and compute with the
functions here. This module imports nothing from glow_tf.
"""

from typing import Dict, Mapping, Sequence, Tuple, Union

import tensorflow as tf

__all__ = ["LOGSCALE_FACTOR", "global_moments", "data_variable", "make_variables",
           "log_scale", "normalize", "initial_values", "initialize", "ActNormVariables"]

# The original stores log-scales divided by 3 (`logscale_factor=3`), which
# triples their effective learning rate; we keep its parameterisation (for
# actnorm and for the zero-initialised layers, `exp(3 * log_scale)`).
LOGSCALE_FACTOR = 3.0

# `{"shift": [C], "log_scale": [C]}`, as variables or as tensors.
ActNormParams = Mapping[str, Union[tf.Variable, tf.Tensor]]


def global_moments(x: tf.Tensor, axes: Sequence[int]) -> Tuple[tf.Tensor, tf.Tensor]:
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


def data_variable(initial_value: tf.types.experimental.TensorLike, name: str, trainable: bool = True) -> tf.Variable:
  """A variable that may be assigned identically from every replica."""
  return tf.Variable(
      initial_value, name=name, trainable=trainable,
      aggregation=tf.VariableAggregation.MEAN)


def make_variables(num_channels: int, dtype: tf.DType = tf.float32) -> Dict[str, tf.Variable]:
  """New actnorm variables `{"shift": [C], "log_scale": [C]}`, zero: the identity map."""
  return {"shift": data_variable(tf.zeros([num_channels], dtype), "shift"),
          "log_scale": data_variable(tf.zeros([num_channels], dtype), "log_scale")}


def log_scale(params: ActNormParams) -> tf.Tensor:
  """`s = LOGSCALE_FACTOR * log_scale` `[C]`: the normalising direction multiplies by `exp(s)`."""
  return LOGSCALE_FACTOR * params["log_scale"]


def normalize(params: ActNormParams, x: tf.Tensor) -> tf.Tensor:
  """`(x + shift) * exp(s)` for `x` `[..., C]`: the normalising direction."""
  return (x + params["shift"]) * tf.exp(log_scale(params))


def initial_values(x: tf.Tensor) -> Dict[str, tf.Tensor]:
  """The values that normalise `x` `[B, H, W, C]`: `shift = -mean`, `s = -log(std + 1e-6)`.

  Moments over the batch and spatial axes of the global batch (see
  `global_moments`); `log_scale` is `s / LOGSCALE_FACTOR`.
  """
  mean, var = global_moments(x, [0, 1, 2])
  return {"shift": -mean,
          "log_scale": -tf.math.log(tf.sqrt(var) + 1e-6) / LOGSCALE_FACTOR}


def initialize(variables: Mapping[str, tf.Variable], x: tf.Tensor) -> None:
  """Assigns `initial_values(x)` to `variables` (`{"shift", "log_scale"}` of `tf.Variable`s)."""
  values = initial_values(x)
  variables["shift"].assign(values["shift"])
  variables["log_scale"].assign(values["log_scale"])


class ActNormVariables(tf.Module):
  """The actnorm variables `shift`, `log_scale` `[C]` of a layer that applies them itself.

  A layer that folds an actnorm into its own computation (`glow_tf.nn.EdgeConv2D`)
  holds one of these as its `actnorm` attribute; checkpoints name the
  variables `.../actnorm/shift` and `.../actnorm/log_scale`.
  """

  def __init__(self, num_channels: int, dtype: tf.DType = tf.float32, name: str = "actnorm"):
    super().__init__(name=name)
    with self.name_scope:
      variables = make_variables(num_channels, dtype)
    self.shift = variables["shift"]
    self.log_scale = variables["log_scale"]

  def params(self) -> Dict[str, tf.Variable]:
    """`{"shift": ..., "log_scale": ...}`, the argument of this module's functions."""
    return {"shift": self.shift, "log_scale": self.log_scale}
