"""The training and evaluation steps under a `tf.distribute` strategy, and their input noise.

A training step draws one global batch, each replica computes the loss and
the gradients of its shard, the gradients and metric sums are summed across
replicas, and the update is applied only when the loss and every gradient
are finite (checked once, on the loss and the gradients' global norm). The
loss of a replica is its share of the global mean: its sum divided by the
global batch, so that summing over replicas gives the gradient of the mean
over the whole batch on any number of replicas.

Dequantisation noise is drawn in the input pipeline, per global batch, from
`(seed, stream, batch index)`: it does not depend on how the batch is split
over replicas, and a resumed run draws the noise it would have drawn.
"""

from typing import TYPE_CHECKING, Callable, Dict, List, NamedTuple, Optional, Tuple

import tensorflow as tf

if TYPE_CHECKING:  # for annotations only: at run time this module imports nothing of glow_tf
  from glow_tf.model import GlowModel
  from glow_tf.optim import GlowOptimizer
  from glow_tf.spike_guard import SpikeGuard

__all__ = ["StepResult", "TrainStep", "build_eval_step", "build_train_step", "finite_and_norm",
           "with_noise", "TRAIN_NOISE_STREAM", "TEST_NOISE_STREAM"]

TRAIN_NOISE_STREAM = 0
TEST_NOISE_STREAM = 1
_STOP_VOTES = "_stop_votes"


def finite_and_norm(loss: tf.Tensor, grads: List[tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
  """(whether `loss` and every gradient are finite: bool scalar, the gradients' global norm).

  One check on the global norm instead of one per gradient: the norm is
  finite exactly when every gradient is, and when none is so large (above
  about 1e19) that its square overflows, which counts as non-finite too. A
  step that sees False skips its update (`GlowOptimizer.apply_gradients`'s
  `apply_if`).
  """
  # Gradients of one shape are stacked and reduced by one op: a few ops per
  # shape rather than one per variable keeps the traced step small.
  by_shape = {}
  for g in grads:
    by_shape.setdefault((g.dtype, tuple(g.shape)), []).append(g)
  squares = [tf.cast(tf.nn.l2_loss(group[0] if len(group) == 1 else tf.stack(group)), tf.float32)
             for group in by_shape.values()]
  grad_norm = tf.sqrt(2. * tf.add_n(squares))
  return tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(grad_norm)), grad_norm


def with_noise(dataset: tf.data.Dataset, seed: int, stream: int, first_batch: int = 0
               ) -> tf.data.Dataset:
  """Adds `noise`, uniform in `[0, 1)` and shaped like `image`, to each batch of `dataset`.

  The noise of batch `i` is `stateless_uniform(seed=[seed * 1000 + stream, i])`;
  the first batch of `dataset` is batch `first_batch` (a resumed pipeline).
  """
  def add(index, batch):
    batch = dict(batch)
    batch["noise"] = tf.random.stateless_uniform(
        tf.shape(batch["image"]), tf.stack([tf.cast(seed, tf.int64) * 1000 + stream, index]))
    return batch

  return dataset.enumerate(start=first_batch).map(add, num_parallel_calls=tf.data.AUTOTUNE)



class StepResult(NamedTuple):
  """What one training step reports."""
  sums: Dict[str, tf.Tensor]  # metric sums over the global batch (`GlowModel.losses` keys)
  finite: bool  # the loss and every gradient were finite
  spike: bool  # finite, but far outside the run's recent steps (`glow_tf.spike_guard`)
  grad_norm: tf.Tensor  # global norm of the summed gradients
  stop: bool  # some worker asked to stop after this step (all workers agree)

  @property
  def applied(self) -> bool:
    """Whether the step's update was applied (finite and no spike)."""
    return self.finite and not self.spike


class TrainStep:
  """One training step: `step(iterator, stop_requested) -> StepResult`.

  Built by `build_train_step`: one `tf.function` that draws the batch,
  computes the loss and gradients, sums them over replicas and applies the
  update only where the loss and all gradients are finite and, with a spike
  guard, not far outside the run's recent steps (the optimiser skips the
  step inside the graph, `GlowOptimizer.apply_gradients(apply_if=)`).
  `stop_requested` is this worker's vote to stop after the step
  (`glow_tf.preemption`); the votes of all workers are summed with the
  metrics, so every worker reads the same `stop`.
  """

  def __init__(self, step: Callable):
    self._step = step

  def __call__(self, iterator: tf.distribute.DistributedIterator, stop_requested: bool = False) -> StepResult:
    sums, finite, spike, grad_norm = self._step(
        iterator, tf.constant(1. if stop_requested else 0., tf.float32))
    sums = dict(sums)
    stop = float(sums.pop(_STOP_VOTES)) > 0
    return StepResult(sums, bool(finite), bool(spike), grad_norm, stop)

  def tracing_count(self) -> int:
    """How often the step's function has been traced (1 after warm-up)."""
    return self._step.experimental_get_tracing_count()


def build_train_step(model: "GlowModel", optimizer: "GlowOptimizer", strategy: tf.distribute.Strategy,
                     global_batch: int, step_counter: tf.Variable, jit_compile: bool = False,
                     spike_guard: Optional["SpikeGuard"] = None) -> TrainStep:
  """The training step of `model` (a `GlowModel`) with `optimizer` (a `GlowOptimizer`).

  Args:
    model: the model; its `losses` give the objective.
    optimizer: applies the replica-summed gradients.
    strategy: the strategy whose scope holds the variables.
    global_batch: images per step over all replicas (`n_batch_train`).
    step_counter: int64 variable incremented by every step (skipped ones too).
    jit_compile: XLA-compile the per-replica loss and gradient computation.
    spike_guard: `None`, or a `SpikeGuard` (created in `strategy`'s scope)
      that skips steps far outside the run's recent ones and learns from the
      applied ones.

  Returns:
    A `TrainStep` taking an iterator over distributed batches of
    `{'image', 'label', 'noise'}` (see `with_noise`).
  """
  variables = list(model.trainable_variables)

  def loss_and_grads(images, labels, noise, conditioning):
    with tf.GradientTape() as tape:
      out = model.losses(images, labels, noise=noise, conditioning=conditioning)
      loss = tf.reduce_sum(out["loss"]) / global_batch
    grads = tape.gradient(loss, variables)
    return grads, {k: tf.reduce_sum(v) for k, v in out.items()}

  compute = tf.function(loss_and_grads, jit_compile=jit_compile, autograph=False)

  def replica_compute(batch, stop_vote):
    conditions = model.batch_conditions(batch)
    grads, sums = compute(batch["image"], conditions["labels"], batch["noise"],
                          conditions["conditioning"])
    # (Computed here, on the replica's device: the collectives of
    # MultiWorkerMirroredStrategy reduce only values placed on a device.)
    sums[_STOP_VOTES] = tf.zeros_like(sums["loss"]) + stop_vote
    if strategy.num_replicas_in_sync > 1:  # (with one replica the sums are the values)
      ctx = tf.distribute.get_replica_context()
      grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, sums)
    # Every replica computes them from the same summed values.
    finite, grad_norm = finite_and_norm(sums["loss"], grads)
    spike = (tf.constant(False) if spike_guard is None
             else spike_guard.is_spike(sums["loss"] / global_batch, grad_norm))
    return grads, sums, finite, spike, grad_norm

  def replica_step(batch, stop_vote):
    grads, sums, finite, spike, grad_norm = replica_compute(batch, stop_vote)
    optimizer.apply_gradients(zip(grads, variables),
                              apply_if=tf.logical_and(finite, tf.logical_not(spike)))
    return sums, finite, spike, grad_norm

  # Every replica holds the same reduced values: read the first.
  first = lambda v: strategy.experimental_local_results(v)[0]

  @tf.function(autograph=False)
  def train_step(iterator, stop_vote):
    sums, finite, spike, grad_norm = strategy.run(replica_step, args=(next(iterator), stop_vote))
    sums, finite, spike, grad_norm = (tf.nest.map_structure(first, x)
                                      for x in (sums, finite, spike, grad_norm))
    if spike_guard is not None:
      spike_guard.update(sums["loss"] / global_batch, grad_norm,
                         tf.logical_and(finite, tf.logical_not(spike)), spike)
    step_counter.assign_add(1)
    return sums, finite, spike, grad_norm

  return TrainStep(train_step)


def build_eval_step(model: "GlowModel", strategy: tf.distribute.Strategy) -> Callable:
  """`eval_step(distributed batch) -> (metric sums over the batch, number of images, bits_x [n])`.

  The per-image `bits_x` of the whole batch are gathered from every replica
  and worker (for the test median).
  """

  def replica_eval(batch):
    out = model.losses(batch["image"], noise=batch["noise"], **model.batch_conditions(batch))
    count = tf.cast(tf.shape(batch["image"])[0], tf.float32)
    return {k: tf.reduce_sum(v) for k, v in out.items()}, count, out["bits_x"]

  @tf.function(autograph=False)
  def eval_step(batch):
    sums, count, bits_x = strategy.run(replica_eval, args=(batch,))
    total = lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
    return ({k: total(v) for k, v in sums.items()}, total(count),
            strategy.gather(bits_x, axis=0))

  return eval_step
