"""The spike guard: skip a training step whose loss or gradient norm is far outside the run's recent ones.

One finite but enormous batch loss (an image to which a split prior gives a
tiny log-scale) can send every weight far away in one update; the check of
non-finite steps does not see it. The guard keeps running statistics of the
steps it let through: exponential moving averages (decay `decay`, a plain
mean over the first `1 / (1 - decay)` steps) of the batch's mean loss in
bits/dim and of the log of the gradients' global norm, each with the moving
average of its absolute deviation from that mean. After `warmup` such
steps, a step is a spike when

```none
loss           > mean_loss + threshold * max(deviation_loss, min_loss_deviation)     or
log(grad_norm) > mean_log_norm + threshold * max(deviation_log_norm, min_log_norm_deviation)
```

and its update is skipped exactly as a non-finite step's (train.py counts,
logs and rolls back the same way). Statistics are updated only by steps
that are applied. They are computed from the replica-summed loss and
gradients and kept in mirrored variables updated in cross-replica context,
so every replica and every worker decides the same; the guard is
checkpointed with the run. A run without spikes is unchanged by it: the guard
only ever withholds an update.
"""

import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import tracing

__all__ = ["SpikeGuard"]


@tracing.no_autograph
class SpikeGuard(tf.Module):
  """Running statistics of applied steps and the spike test (module docstring)."""

  def __init__(self, threshold: float = 10., warmup: int = 50, decay: float = 0.99,
               min_loss_deviation: float = 0.05, min_log_norm_deviation: float = 0.3,
               name: str = "spike_guard"):
    """Creates the guard (in the strategy's scope, like the model's variables).

    Args:
      threshold: how many (clamped) mean absolute deviations above the mean
        a step's loss or log gradient norm must lie to be a spike.
      warmup: applied steps before the guard skips anything.
      decay: the moving averages' decay per applied step, in (0, 1).
      min_loss_deviation, min_log_norm_deviation: the smallest deviations the
        test uses (bits/dim; natural-log units of the gradient norm), so that
        a run whose figures barely move does not call ordinary noise a spike:
        by default at least 0.5 bits/dim above the mean loss, and a gradient
        norm at least e^3 (about 20) times the running geometric mean.
      name: Python `str`.
    """
    super().__init__(name=name)
    self.threshold, self.warmup = config_lib.check_spike_guard(threshold, warmup)
    if not 0 < decay < 1 or not min_loss_deviation > 0 or not min_log_norm_deviation > 0:
      raise ValueError(
          "SpikeGuard needs 0 < decay < 1 and positive minimum deviations; got "
          f"{decay!r}, {min_loss_deviation!r}, {min_log_norm_deviation!r}.")
    self.decay = float(decay)
    self.min_deviations = (float(min_loss_deviation), float(min_log_norm_deviation))
    only_first = tf.VariableAggregation.ONLY_FIRST_REPLICA
    with self.name_scope:
      self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count",
                               aggregation=only_first)  # applied steps seen
      self.spikes = tf.Variable(0, dtype=tf.int64, trainable=False, name="spikes",
                                aggregation=only_first)  # steps skipped as spikes
      # [mean, deviation] of the loss and of the log gradient norm, float64.
      self.loss = tf.Variable([0., 0.], dtype=tf.float64, trainable=False, name="loss",
                              aggregation=only_first)
      self.log_norm = tf.Variable([0., 0.], dtype=tf.float64, trainable=False, name="log_norm",
                                  aggregation=only_first)

  def _figures(self, loss, grad_norm):
    return tf.cast(loss, tf.float64), tf.math.log(tf.cast(grad_norm, tf.float64))

  def limits(self) -> tf.Tensor:
    """The largest loss (bits/dim) and log gradient norm a step may have and not be a spike: float64 `[2]`."""
    return tf.stack([
        stats[0] + self.threshold * tf.maximum(stats[1], floor)
        for stats, floor in zip((tf.convert_to_tensor(self.loss), tf.convert_to_tensor(self.log_norm)),
                                self.min_deviations)])

  def is_spike(self, loss: tf.Tensor, grad_norm: tf.Tensor) -> tf.Tensor:
    """Whether a step of this mean batch `loss` (bits/dim) and gradient norm is a spike: bool scalar.

    False during the warm-up, and for figures that are not finite (the
    finiteness check's business).
    """
    loss, log_norm = self._figures(loss, grad_norm)
    finite = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(log_norm))
    loss_limit, log_norm_limit = tf.unstack(self.limits())
    armed = self.count >= max(self.warmup, 1)  # (statistics of at least one step)
    return tf.logical_and(tf.logical_and(armed, finite),
                          tf.logical_or(loss > loss_limit, log_norm > log_norm_limit))

  def update(self, loss: tf.Tensor, grad_norm: tf.Tensor, applied: tf.Tensor,
             spike: tf.Tensor) -> None:
    """Adds an applied step's figures to the statistics (nothing where `applied` is False); counts a `spike`."""
    loss, log_norm = self._figures(loss, grad_norm)
    # (An applied step's gradient norm of exactly 0 has a log of -inf: not counted.)
    applied = tf.logical_and(applied, tf.logical_and(tf.math.is_finite(loss),
                                                     tf.math.is_finite(log_norm)))
    count = tf.cast(self.count, tf.float64)
    # A plain mean at first, then the moving average.
    rate = tf.maximum(1. / (count + 1.), 1. - self.decay)
    rate = tf.where(applied, rate, tf.constant(0., tf.float64))
    for value, stats in ((loss, self.loss), (log_norm, self.log_norm)):
      old = tf.convert_to_tensor(stats)
      value = tf.where(applied, value, old[0])  # (a skipped step's figure may be inf)
      mean = old[0] + rate * (value - old[0])
      # The first step has no deviation to measure: it keeps 0.
      deviation = old[1] + tf.where(count > 0, rate, 0.) * (tf.abs(value - old[0]) - old[1])
      stats.assign(tf.stack([mean, deviation]))
    self.count.assign_add(tf.cast(applied, tf.int64))
    self.spikes.assign_add(tf.cast(spike, tf.int64))
