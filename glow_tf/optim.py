"""The original's optimisers (Adamax, Adam) with Polyak averaging and learning-rate warmup.

The update rules are those of the original's `optim.py`:

```none
t += 1
beta2 = 1 - 1 / (train_its * polyak_epochs)
alpha_t = lr_t * sqrt(1 - beta2^t) / (1 - beta1^t)
m = beta1 * m + (1 - beta1) * g
adamax:  u = max(beta2 * u, |g|);                w = wd * w - alpha_t * m / (u + 1e-8)
adam:    v = beta2 * v + (1 - beta2) * g^2;      w = wd * w - alpha_t * m / (sqrt(v) + 1e-8)
polyak:  a = beta2 * a + (1 - beta2) * w,  a_0 = 0;   w_avg = a / (1 - beta2^t)
```

(the original's Adamax carries Adam's `sqrt(1 - beta2^t)` correction; we keep
it; `wd` is `--weight_decay`, 1 by default), and the learning rate warms up
linearly as the original's: `lr_t = lr * min(1, (t - 1) / warmup_steps)`, the
anchored images processed *before* the step over `n_train * epochs_warmup`,
so the first update has rate 0 (it still moves the moments).

The Polyak average is where we differ. The original's is TF's
`ExponentialMovingAverage`, whose `zero_debias` applies to tensors only, not
to variables: its averages start at the variables' initial values (drawn
before the data-dependent initialisation) and those keep the weight
`beta2^t`, about 37% after one epoch. Ours starts at zero and is debiased,
so it is the exponentially weighted mean of the weights after each update
and nothing else.

Each variable is updated by TensorFlow's fused kernels (`ResourceApplyAdaMax`,
`ResourceApplyAdam`), one op per variable instead of a dozen, on every
device and under XLA. A step can be skipped inside the traced step
(`apply_if`, train.py's finiteness check) without a branch: the update then
runs with neutral operands (`beta1 = beta2 = 1`, learning rate, Polyak rate,
gradient and the average's step 0, weight decay 1), which leave every weight,
moment and average exactly as they were; an applied step uses the true operands, so it gives the
same bits as an ungated update. The per-variable work is only the fused
kernels and the reads of the Polyak update: the gradients' zeroing on a
skipped step and the Polyak differences are taken on the stacked tensors of
each shape, a few ops per shape, which keeps the traced step small (its
tracing and graph optimisation are most of the time to the first step).
Under `tf.distribute`,
`apply_gradients` is called in replica context with gradients already summed
over replicas; the update then runs once per device copy of each variable,
on its device with that device's gradient, so replicas stay identical.
"""

import contextlib
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import tracing

__all__ = ["GlowOptimizer", "WarmupSchedule", "make_optimizer"]


class WarmupSchedule:
  """`scale * lr * min(1, (step - 1) / warmup_steps)` for the 1-based step; no warmup when 0.

  `step - 1` updates came before: the original's count of images processed
  before the step, in steps, so the first update has rate 0.

  `scale` is an optional float64 variable multiplying the rate (train.py's
  rollback lowers it); it is read at every update, so changing it needs no
  retracing.
  """

  def __init__(self, lr: float, warmup_steps: float, scale: Optional[tf.Variable] = None):
    self.lr = float(lr)
    self.warmup_steps = float(warmup_steps)
    self.scale = scale

  def __call__(self, step: Union[int, float, tf.Tensor]) -> tf.Tensor:
    """`step`: the 1-based number of the update being made."""
    if self.warmup_steps <= 0:
      rate = tf.constant(self.lr, tf.float64)
    else:
      rate = self.lr * tf.minimum(tf.constant(1., tf.float64),
                                  (tf.cast(step, tf.float64) - 1.) / self.warmup_steps)
    return rate if self.scale is None else rate * tf.cast(self.scale, tf.float64)


@tracing.no_autograph
class GlowOptimizer(tf.Module):
  """Adamax or Adam exactly as the original's `optim.py`, plus Polyak averages of the weights.

  Slots (`m`, `u`, `polyak`) are created by `build(variables)` and are
  checkpointed with the optimiser. Call it before the first `tf.function`
  step (after the data-dependent initialisation): slots created inside a
  function's first call make TensorFlow trace it twice. It is the optimiser
  to use with glow_tf's bijectors in any TFP model (`polyak=False` for plain
  Adam/Adamax): one fused kernel per variable, so a step traces quickly
  and the update costs little beside the backward pass (figures in
  docs/performance.md). `polyak_values(variables)` are the
  averaged weights; `with optimizer.averaged_weights(variables):` evaluates
  and samples with them and restores the raw weights exactly afterwards.
  """

  def __init__(self, kind: str = "adamax",
               learning_rate: Union[float, Callable[[tf.Tensor], tf.Tensor]] = 1e-3,
               beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8, polyak: bool = True,
               weight_decay: float = 1., name: str = "glow_optimizer"):
    """Creates the optimiser.

    Args:
      kind: `"adamax"` (the original's default) or `"adam"`.
      learning_rate: a float or a callable of the 1-based step (`WarmupSchedule`).
      beta1, beta2, epsilon: Adam's; `beta2` is also the Polyak decay.
      polyak: keep Polyak averages of the weights. `False` makes it plain
        Adam/Adamax (no `polyak` slots; `polyak_values` are the weights).
      weight_decay: the original's: each update starts from
        `weight_decay * w` (1: none).
      name: Python `str`.
    """
    super().__init__(name=name)
    self.use_polyak = bool(polyak)
    self.kind = config_lib.check_optimizer(kind)
    self.schedule = learning_rate if callable(learning_rate) else WarmupSchedule(learning_rate, 0)
    self.beta1 = float(beta1)
    self.beta2 = float(beta2)
    self.epsilon = float(epsilon)
    self.weight_decay = config_lib.check_weight_decay(weight_decay)
    self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations",
                                  aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    # Checkpointed so that a restored optimiser debiases its averages correctly.
    self.polyak_decay = tf.Variable(self.beta2, dtype=tf.float64, trainable=False,
                                    name="polyak_decay")
    self.m, self.u, self.polyak = [], [], []
    self._index = {}
    self._strategy = tf.distribute.get_strategy()  # slots are created in the same scope

  @property
  def learning_rate(self) -> tf.Tensor:
    """The learning rate of the next update."""
    return self.schedule(self.iterations + 1)

  def build(self, variables: Sequence[tf.Variable]) -> None:
    """Creates the slots of `variables` (once; later calls check they match)."""
    if self._index:
      if len(self._index) != len(variables):
        raise ValueError("GlowOptimizer was built for other variables.")
      return
    strategy = self._strategy
    for i, var in enumerate(variables):
      self._index[var.ref()] = i
      name = var.name.split(":")[0]
      with strategy.scope(), strategy.extended.colocate_vars_with(var):
        self.m.append(tf.Variable(tf.zeros_like(var), trainable=False, name=f"{name}/m"))
        self.u.append(tf.Variable(tf.zeros_like(var), trainable=False, name=f"{name}/u"))
        if self.use_polyak:
          self.polyak.append(tf.Variable(tf.zeros_like(var), trainable=False,
                                         name=f"{name}/polyak"))

  def _slots(self, var):
    i = self._index[var.ref()]
    return self.m[i], self.u[i], self.polyak[i] if self.use_polyak else None

  def apply_gradients(self, grads_and_vars: Iterable[Tuple[tf.Tensor, tf.Variable]],
                      apply_if: Optional[tf.Tensor] = None) -> Union[tf.Tensor, tf.Variable]:
    """Applies one update. Gradients must already be summed over replicas.

    Args:
      grads_and_vars: pairs of a gradient and its variable.
      apply_if: optional bool scalar (in replica context, this replica's):
        where False nothing changes, not even `iterations` (a skipped step,
        decided inside the traced step; train.py's finiteness check).
    """
    grads_and_vars = [(g, v) for g, v in grads_and_vars]
    self.build([v for _, v in grads_and_vars])
    if tf.distribute.in_cross_replica_context():
      return self._apply(tf.distribute.get_strategy(), grads_and_vars, apply_if)
    return tf.distribute.get_replica_context().merge_call(
        self._apply, args=(grads_and_vars, apply_if))

  def _apply(self, strategy, grads_and_vars, apply_if=None):
    t = tf.cast(self.iterations + 1, tf.float64)  # scalars in float64, cast per variable
    lr = self.schedule(t)
    beta1_power = tf.pow(tf.constant(self.beta1, tf.float64), t)
    beta2_power = tf.pow(tf.constant(self.beta2, tf.float64), t)
    # Adamax's kernel divides by (1 - beta1^t) only; add the original's sqrt(1 - beta2^t).
    lr_adamax = lr * tf.sqrt(1. - beta2_power)
    scalars = {}

    def hyper(dtype, device, apply):
      # The scalar operands, made once per dtype and device rather than once
      # per variable: a few hundred variables would otherwise add thousands of
      # Const and Cast ops to the traced step. Where `apply` is False, the
      # neutral operands that leave every variable as it is (module docstring).
      key = (dtype, device)
      if key not in scalars:
        with tf.device(device):
          c = lambda x: tf.cast(x, dtype)
          h = dict(beta1_power=c(beta1_power), beta2_power=c(beta2_power), lr=c(lr),
                   lr_adamax=c(lr_adamax), beta1=c(self.beta1), beta2=c(self.beta2),
                   epsilon=c(self.epsilon), polyak_rate=c(1. - self.beta2),
                   weight_decay=c(self.weight_decay))
          if apply is not None:
            apply = tf.convert_to_tensor(apply)
            neutral = dict(lr=0., lr_adamax=0., beta1=1., beta2=1., polyak_rate=0.,
                           weight_decay=1.)
            for name, value in neutral.items():
              h[name] = tf.where(apply, h[name], tf.constant(value, dtype))
            h["apply"] = apply
            h["zero"] = tf.zeros([], dtype)
          scalars[key] = h
      return scalars[key]

    # Each device copy of each variable is updated on its device, with that
    # device's gradient and `apply_if` (one value of either serves every copy).
    applies = ((None,) if apply_if is None
               else strategy.experimental_local_results(apply_if))
    updates = []  # (slots, gradient, scalar operands) of each device copy
    for grad, var in grads_and_vars:
      m, u, avg = self._slots(var)
      copies = strategy.experimental_local_results(var)
      grads = strategy.experimental_local_results(grad)
      for i, copy in enumerate(copies):
        g = grads[i if len(grads) > 1 else 0]
        if not isinstance(g, tf.Tensor):
          raise ValueError(f"GlowOptimizer needs dense gradients; {var.name}'s is {type(g).__name__}.")
        slots = {"var": copy, "m": _on_device_of(m, copy), "u": _on_device_of(u, copy)}
        if avg is not None:
          slots["avg"] = _on_device_of(avg, copy)
        updates.append((slots, g, hyper(copy.dtype, copy.device, applies[i if len(applies) > 1 else 0])))
    if apply_if is not None:
      updates = _zero_skipped_gradients(updates)
    for slots, g, h in updates:
      with tf.device(slots["var"].device):
        self._update_one(slots, g, h)
    if self.use_polyak:
      _update_averages(updates)
    if apply_if is None:
      return self.iterations.assign_add(1)
    return self.iterations.assign_add(tf.cast(applies[0], tf.int64))

  def _update_one(self, slots: dict, grad: tf.Tensor, h: dict) -> None:
    """Updates one variable and its moments (`slots["var"]`, `["m"]`, `["u"]`) by `grad`.

    `h`: the scalar operands of `_apply`. (A skipped step's gradient is
    already 0 here, and the Polyak averages follow in `_update_averages`.)
    """
    var, m, u = slots["var"], slots["m"], slots["u"]
    read = lambda v: tf.raw_ops.ReadVariableOp(resource=v.handle, dtype=v.dtype)
    if self.weight_decay != 1.:  # w <- wd * w, then the update (the gradient is w's)
      tf.raw_ops.AssignVariableOp(resource=var.handle,
                                  value=tf.raw_ops.Mul(x=read(var), y=h["weight_decay"]))
    if self.kind == "adamax":
      tf.raw_ops.ResourceApplyAdaMax(
          var=var.handle, m=m.handle, v=u.handle, beta1_power=h["beta1_power"],
          lr=h["lr_adamax"], beta1=h["beta1"], beta2=h["beta2"], epsilon=h["epsilon"],
          grad=grad)
    else:
      tf.raw_ops.ResourceApplyAdam(
          var=var.handle, m=m.handle, v=u.handle, beta1_power=h["beta1_power"],
          beta2_power=h["beta2_power"], lr=h["lr"], beta1=h["beta1"], beta2=h["beta2"],
          epsilon=h["epsilon"], grad=grad)

  def polyak_values(self, variables: Sequence[tf.Variable]) -> List[tf.Tensor]:
    """The (debiased) Polyak averages of `variables`, in order; the weights before any update."""
    t = tf.cast(self.iterations, tf.float64)
    if int(self.iterations.numpy()) == 0 or not self.use_polyak:
      return [tf.identity(v) for v in variables]
    debias = 1. - tf.pow(tf.convert_to_tensor(self.polyak_decay), t)
    return [self._slots(v)[2] / tf.cast(debias, v.dtype) for v in variables]

  def assign_polyak(self, variables: Sequence[tf.Variable]) -> None:
    """Overwrites `variables` with their Polyak averages (cross-replica context)."""
    for var, value in zip(variables, self.polyak_values(variables)):
      var.assign(value)

  @contextlib.contextmanager
  def averaged_weights(self, variables: Sequence[tf.Variable]) -> Iterator[None]:
    """Swaps the Polyak averages in for the block; restores the raw weights exactly after."""
    backup = [tf.identity(v) for v in variables]
    self.assign_polyak(variables)
    try:
      yield
    finally:
      for var, value in zip(variables, backup):
        var.assign(value)


def _zero_skipped_gradients(updates):
  """`updates` with each gradient 0 where its step is skipped (it may be inf or NaN).

  The gradients of one device, dtype and shape are stacked, selected and
  unstacked together: three ops per shape rather than one per variable keeps
  the traced step small.
  """
  groups = {}
  for index, (slots, g, _) in enumerate(updates):
    groups.setdefault((slots["var"].device, g.dtype, tuple(g.shape)), []).append(index)
  updates = list(updates)
  for (device, _, _), indices in groups.items():
    h = updates[indices[0]][2]
    with tf.device(device):
      stacked = tf.stack([updates[i][1] for i in indices])
      zeroed = tf.raw_ops.SelectV2(condition=h["apply"], t=stacked, e=h["zero"])
      for i, g in zip(indices, tf.unstack(zeroed, num=len(indices))):
        updates[i] = (updates[i][0], g, updates[i][2])
  return updates


def _update_averages(updates):
  """`avg <- avg - (1 - beta2) * (avg - var)` for each update's Polyak average, after its variable's update.

  Like `_zero_skipped_gradients`, by device, dtype and shape: the differences
  are taken and, where the step is skipped, zeroed (`0 * (avg - var)` is not
  0 where a weight itself is not finite) a few ops per shape.
  """
  read = lambda v: tf.raw_ops.ReadVariableOp(resource=v.handle, dtype=v.dtype)
  groups = {}
  for slots, _, h in updates:
    groups.setdefault((slots["var"].device, slots["var"].dtype, tuple(slots["var"].shape)),
                      []).append((slots, h))
  for (device, _, _), members in groups.items():
    h = members[0][1]
    with tf.device(device):
      # (The reads follow the variables' updates: automatic control dependencies order them.)
      delta = (tf.stack([read(slots["avg"]) for slots, _ in members])
               - tf.stack([read(slots["var"]) for slots, _ in members]))
      if "apply" in h:
        delta = tf.raw_ops.SelectV2(condition=h["apply"], t=delta, e=h["zero"])
      for (slots, _), d in zip(members, tf.unstack(delta, num=len(members))):
        tf.raw_ops.ResourceApplyGradientDescent(var=slots["avg"].handle,
                                                alpha=h["polyak_rate"], delta=d)


def _on_device_of(slot, var):
  """The component of a (possibly mirrored) slot that lives with `var`'s component."""
  if not isinstance(slot, tf.distribute.DistributedValues):
    return slot
  for component in slot.values:
    if component.device == var.device:
      return component
  raise ValueError(f"no copy of {slot.name} on {var.device}")


def make_optimizer(kind: str, lr: float, beta1: float, warmup_steps: float, beta2: float,
                   weight_decay: float = 1., lr_scale: Optional[tf.Variable] = None) -> GlowOptimizer:
  """The original's optimiser set-up from its flags and schedule (`glow_tf.config.Schedule`).

  Args:
    kind: `"adamax"` or `"adam"`.
    lr: base learning rate (`--lr`).
    beta1: `--beta1`.
    warmup_steps: `Schedule.warmup_steps`.
    beta2: `Schedule.beta2`, also the Polyak decay.
    weight_decay: `--weight_decay`.
    lr_scale: optional float64 variable multiplying the learning rate.
  """
  return GlowOptimizer(kind, WarmupSchedule(lr, warmup_steps, lr_scale), beta1=beta1,
                       beta2=beta2, weight_decay=weight_decay)
