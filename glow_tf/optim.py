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

The slots of the variables of one dtype and shape are rows of stacked
variables, and a step updates each stack with a few ops on the stacked
gradients (the formulas above), on every device and under XLA; per variable
there remain only the read and the write of its value. This keeps the
traced step small: its tracing and graph optimisation are most of the time
to the first step. Checkpoints still hold one slot per variable
(`optimizer/m/<i>`, `u/<i>`, `polyak/<i>`), so they restore whichever way
the slots are stored. A step can be skipped inside the traced step
(`apply_if`, train.py's finiteness check) without a branch: the update then
runs with neutral operands (`beta1 = beta2 = 1`, learning rate, Polyak rate
and gradient 0, weight decay 1), which leave every weight, moment and
average exactly as they were; an applied step uses the true operands, so it
gives the same bits as an ungated update.

Under `tf.distribute`, `apply_gradients` is called in replica context with
gradients already summed over replicas; the update then runs once per
device copy of each stack, on its device with that device's gradients, so
replicas stay identical.
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
  Adam/Adamax): the slots of variables of one shape are updated together,
  so a step traces quickly and the update costs little beside the backward
  pass (figures in docs/performance.md). `polyak_values(variables)` are the
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
    self.m, self.u, self.polyak = [], [], []  # per variable: the checkpoint's keys (`_Slot`)
    self._index = None  # variable -> (its `_SlotStack`, its row), made by `build`
    self._strategy = tf.distribute.get_strategy()  # slots are created in the same scope

  def _trackable_children(self, save_type="checkpoint", **kwargs):
    # A SavedModel of an object holding the optimiser (a tf_keras model.save) keeps the
    # stacked slot variables themselves: the per-variable checkpoint rows read them
    # eagerly, which a SavedModel's graph cannot capture.
    children = super()._trackable_children(save_type, **kwargs)
    if save_type == "savedmodel":
      children = {k: v for k, v in children.items() if k not in ("m", "u", "polyak")}
      children.update({f"slot_stack_{i}": v
                       for i, v in enumerate(getattr(self, "_slot_variables", []))})
    return children

  @property
  def learning_rate(self) -> tf.Tensor:
    """The learning rate of the next update."""
    return self.schedule(self.iterations + 1)

  @tf.__internal__.tracking.no_automatic_dependency_tracking
  def build(self, variables: Sequence[tf.Variable]) -> None:
    """Creates the slots of `variables` (once; later calls check they match).

    The slots of the variables of one dtype and shape are rows of one
    stacked variable (`_SlotStack`); each row is still checkpointed under
    its variable's own key (`m/<i>`, `u/<i>`, `polyak/<i>`).
    """
    if self._index is not None:
      if len(self._index) != len(variables):
        raise ValueError("GlowOptimizer was built for other variables.")
      return
    groups = {}
    for i, var in enumerate(variables):
      groups.setdefault((var.dtype, tuple(var.shape)), []).append(i)
    names = ("m", "u", "polyak") if self.use_polyak else ("m", "u")
    self._index = {}
    stacks = []
    for indices in groups.values():
      stack = _SlotStack([variables[i] for i in indices], names, self._strategy)
      stacks.append(stack)
      for row, i in enumerate(indices):
        self._index[variables[i].ref()] = (stack, row)
    # (untracked: checkpoints hold the rows below; `variables` lists the stacks)
    self._slot_variables = [v for stack in stacks for v in stack.slots.values()]
    for var in variables:  # the checkpoint's per-variable slots, in the variables' order
      stack, row = self._index[var.ref()]
      self.m.append(_Slot(stack.slots["m"], row))
      self.u.append(_Slot(stack.slots["u"], row))
      if self.use_polyak:
        self.polyak.append(_Slot(stack.slots["polyak"], row))

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
    t = tf.cast(self.iterations + 1, tf.float64)  # scalars in float64, cast per dtype
    lr = self.schedule(t)
    alpha = (lr * tf.sqrt(1. - tf.pow(tf.constant(self.beta2, tf.float64), t))
             / (1. - tf.pow(tf.constant(self.beta1, tf.float64), t)))
    scalars = {}

    def hyper(dtype, device, apply):
      # The scalar operands, once per dtype and device. Where `apply` is
      # False, the neutral operands that leave everything as it is (module
      # docstring).
      key = (dtype, device)
      if key not in scalars:
        with tf.device(device):
          c = lambda x: tf.cast(x, dtype)
          h = dict(alpha=c(alpha), beta1=c(self.beta1), beta2=c(self.beta2),
                   epsilon=c(self.epsilon), polyak_rate=c(1. - self.beta2),
                   weight_decay=c(self.weight_decay), zero=tf.zeros([], dtype))
          if apply is not None:
            apply = tf.convert_to_tensor(apply)
            neutral = dict(alpha=0., beta1=1., beta2=1., polyak_rate=0., weight_decay=1.)
            for name, value in neutral.items():
              h[name] = tf.where(apply, h[name], tf.constant(value, dtype))
            h["apply"] = apply
          scalars[key] = h
      return scalars[key]

    # Each device copy of each stack is updated on its device, with that
    # device's gradients and `apply_if` (one value of either serves every copy).
    applies = ((None,) if apply_if is None
               else strategy.experimental_local_results(apply_if))
    by_stack = {}
    for grad, var in grads_and_vars:
      stack, row = self._index[var.ref()]
      grads = strategy.experimental_local_results(grad)
      for g in grads:
        if not isinstance(g, tf.Tensor):
          raise ValueError(f"GlowOptimizer needs dense gradients; {var.name}'s is {type(g).__name__}.")
      by_stack.setdefault(id(stack), (stack, {}))[1][row] = (var, grads)
    for stack, members in by_stack.values():
      if len(members) != stack.size:
        raise ValueError("GlowOptimizer updates all the variables it was built for at once.")
      ordered = [members[row] for row in range(stack.size)]
      for i in range(len(strategy.experimental_local_results(ordered[0][0]))):
        copies = [strategy.experimental_local_results(var)[i] for var, _ in ordered]
        grads = [g[i if len(g) > 1 else 0] for _, g in ordered]
        h = hyper(copies[0].dtype, copies[0].device, applies[i if len(applies) > 1 else 0])
        with tf.device(copies[0].device):
          self._update(stack.on_device(copies[0].device), copies, grads, h)
    if apply_if is None:
      return self.iterations.assign_add(1)
    return self.iterations.assign_add(tf.cast(applies[0], tf.int64))

  def _update(self, slots: dict, variables: List[tf.Variable], grads: List[tf.Tensor],
              h: dict) -> None:
    """Updates `variables` (one device's copies of one stack's), their moments and averages.

    `slots`: that device's stacked `m`, `u` (and `polyak`), `[n, *shape]`;
    `h`: the scalar operands of `_apply`. The moments follow the original's
    formulas (module docstring), in which an infinite `u` stays infinite
    (TensorFlow's kernels' `u + (g^2 - u) * (1 - beta2)` turns it into NaN).
    """
    read = lambda v: tf.raw_ops.ReadVariableOp(resource=v.handle, dtype=v.dtype)
    assign = lambda v, x: tf.raw_ops.AssignVariableOp(resource=v.handle, value=x)
    g = tf.stack(grads)
    if "apply" in h:  # a skipped step's gradient may be inf or NaN: 0 then
      g = tf.raw_ops.SelectV2(condition=h["apply"], t=g, e=h["zero"])
    m = read(slots["m"])
    m = h["beta1"] * m + (1. - h["beta1"]) * g
    u = read(slots["u"])
    if self.kind == "adamax":
      u = tf.maximum(h["beta2"] * u, tf.abs(g))
      step = h["alpha"] * (m / (u + h["epsilon"]))
    else:
      u = h["beta2"] * u + (1. - h["beta2"]) * (g * g)
      step = (m * h["alpha"]) / (tf.sqrt(u) + h["epsilon"])
    assign(slots["m"], m)
    assign(slots["u"], u)
    if self.weight_decay == 1. and not self.use_polyak:
      for var, d in zip(variables, tf.unstack(step, num=len(variables))):
        tf.raw_ops.AssignSubVariableOp(resource=var.handle, value=d)
      return
    w = tf.stack([read(var) for var in variables])
    if self.weight_decay != 1.:  # w <- wd * w, then the update (the gradient is w's)
      w = w * h["weight_decay"]
    w = w - step
    for var, value in zip(variables, tf.unstack(w, num=len(variables))):
      assign(var, value)
    if self.use_polyak:
      # avg <- avg - (1 - beta2) * (avg - w); where the step is skipped the
      # difference is zeroed (`0 * (avg - w)` is not 0 where a weight is not finite).
      avg = read(slots["polyak"])
      delta = avg - w
      if "apply" in h:
        delta = tf.raw_ops.SelectV2(condition=h["apply"], t=delta, e=h["zero"])
      assign(slots["polyak"], avg - h["polyak_rate"] * delta)

  def polyak_values(self, variables: Sequence[tf.Variable]) -> List[tf.Tensor]:
    """The (debiased) Polyak averages of `variables`, in order; the weights before any update."""
    t = tf.cast(self.iterations, tf.float64)
    if int(self.iterations.numpy()) == 0 or not self.use_polyak:
      return [tf.identity(v) for v in variables]
    debias = 1. - tf.pow(tf.convert_to_tensor(self.polyak_decay), t)
    return [self._average(v) / tf.cast(debias, v.dtype) for v in variables]

  def _average(self, var: tf.Variable) -> tf.Tensor:
    stack, row = self._index[var.ref()]
    return _read_row(stack.slots["polyak"], row)

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


class _SlotStack:
  """The slots (`m`, `u`, `polyak`) of the variables of one dtype and shape, stacked.

  `slots[name]` is one variable `[size, *shape]` (mirrored like the
  variables under a `tf.distribute` strategy); row `i` belongs to the `i`-th
  variable. One update of the stack is a few ops, where one per variable
  would make the traced step, and the time to its first run, grow with the
  number of variables.
  """

  def __init__(self, variables: Sequence[tf.Variable], names: Sequence[str], strategy):
    self.size = len(variables)
    first = variables[0]
    base = first.name.split(":")[0]
    with strategy.scope(), strategy.extended.colocate_vars_with(first):
      self.slots = {name: tf.Variable(tf.zeros([self.size, *first.shape], first.dtype),
                                      trainable=False, name=f"{base}/{name}_stack")
                    for name in names}

  def on_device(self, device: str) -> dict:
    """The device copy of each slot that lives on `device`."""
    found = {}
    for name, slot in self.slots.items():
      copies = [c for c in _local_copies(slot) if c.device == device]
      if not copies:
        raise ValueError(f"no copy of {slot.name} on {device}")
      found[name] = copies[0]
    return found


class _Slot(tf.__internal__.tracking.Trackable):
  """One variable's row of a stacked slot, checkpointed as a variable of its own.

  It saves and restores under the key of the per-variable slot variables
  that GlowOptimizer once had (`optimizer/m/<i>/.ATTRIBUTES/VARIABLE_VALUE`),
  so checkpoints of either layout restore into the other.
  """

  def __init__(self, stack: tf.Variable, row: int):
    self._stack, self._row = stack, row

  def _serialize_to_tensors(self):
    return {"VARIABLE_VALUE": _read_row(self._stack, self._row)}

  def _restore_from_tensors(self, restored_tensors):
    value = restored_tensors["VARIABLE_VALUE"]
    ops = []
    for copy in _local_copies(self._stack):
      with tf.device(copy.device):
        ops.append(tf.raw_ops.ResourceScatterUpdate(
            resource=copy.handle, indices=tf.constant([self._row]),
            updates=tf.cast(value, copy.dtype)[tf.newaxis]))
    return tf.group(ops)


def _local_copies(var):
  """The device copies of a (possibly mirrored) variable on this worker."""
  return var.values if isinstance(var, tf.distribute.DistributedValues) else (var,)


def _read_row(stack: tf.Variable, row: int) -> tf.Tensor:
  """Row `row` of a stacked slot (of its first device copy: they are identical)."""
  copy = _local_copies(stack)[0]
  return tf.raw_ops.ResourceGather(resource=copy.handle, indices=tf.constant(row), dtype=copy.dtype)


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
