"""The optimisers follow the original's update equations exactly; Polyak averages; warmup."""

import numpy as np
import pytest
import tensorflow as tf

from glow_tf import optim


def reference(kind, grads, w0, lr_fn, beta1, beta2, eps=1e-8, weight_decay=1.):
  """The original's optim.py in numpy; the average is ours (zero-debiased).

  (The original's `tf.train.ExponentialMovingAverage` does not debias
  variables: its averages start at the initial weights. Ours are the
  debiased exponential mean of the weights after each update.)
  """
  w, m, u, avg = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), np.zeros_like(w0)
  for t, g in enumerate(grads, start=1):
    alpha = lr_fn(t) * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    m = beta1 * m + (1 - beta1) * g
    if kind == "adamax":
      u = np.maximum(beta2 * u, np.abs(g))
      w = weight_decay * w - alpha * m / (u + eps)
    else:
      u = beta2 * u + (1 - beta2) * g * g
      w = weight_decay * w - alpha * m / (np.sqrt(u) + eps)
    avg = beta2 * avg + (1 - beta2) * w
  return w, avg / (1 - beta2 ** len(grads))


@pytest.mark.parametrize("kind,use_function,weight_decay", [
    ("adamax", False, 1.), ("adamax", True, 1.), ("adam", False, 1.), ("adam", True, 1.),
    ("adamax", True, 0.99), ("adam", False, 0.95)])
def test_updates_match_the_original(kind, use_function, weight_decay):
  rng = np.random.RandomState(0)
  w0 = rng.randn(3, 4)
  grads = [rng.randn(3, 4) for _ in range(7)]
  # The original: n_processed (anchored images before the step) grows by the
  # global batch each step; lr = lr0 * min(1, n_processed / (n_train * epochs_warmup)).
  n_train, batch, epochs_warmup = 160, 32, 1
  lr_fn = lambda t: 0.01 * min(1., (t - 1) * batch / (n_train * epochs_warmup))
  beta2 = 1 - 1 / 10.
  opt = optim.make_optimizer(kind, lr=0.01, beta1=0.9, warmup_steps=n_train / batch,
                             beta2=beta2, weight_decay=weight_decay)
  assert opt.beta2 == pytest.approx(beta2)
  assert float(opt.learning_rate) == 0.  # the original's first step
  var = tf.Variable(w0.astype(np.float32))  # the update runs in the variable's dtype
  opt.build([var])
  apply = lambda g: opt.apply_gradients([(g, var)])
  if use_function:
    apply = tf.function(apply)
  for g in grads:
    apply(tf.constant(g, tf.float32))
  w, avg = reference(kind, grads, w0, lr_fn, 0.9, beta2, weight_decay=weight_decay)
  np.testing.assert_allclose(var.numpy(), w, rtol=2e-6, atol=1e-6)
  np.testing.assert_allclose(opt.polyak_values([var])[0].numpy(), avg, rtol=2e-6, atol=1e-6)
  assert np.abs(w - w0).max() > 0.01  # the test moves the weights measurably
  assert int(opt.iterations.numpy()) == 7
  raw = var.numpy().copy()
  with opt.averaged_weights([var]):
    np.testing.assert_allclose(var.numpy(), avg, rtol=2e-6, atol=1e-6)
  np.testing.assert_array_equal(var.numpy(), raw)  # restored exactly


def test_without_polyak_the_updates_are_the_same_and_no_averages_are_kept():
  rng = np.random.RandomState(1)
  w0 = rng.randn(2, 5).astype(np.float32)
  grads = [tf.constant(rng.randn(2, 5), tf.float32) for _ in range(4)]
  results = {}
  for polyak in (True, False):
    opt = optim.GlowOptimizer("adam", 0.01, beta2=0.99, polyak=polyak)
    var = tf.Variable(w0)
    opt.build([var])
    for g in grads:
      opt.apply_gradients([(g, var)])
    results[polyak] = (var.numpy(), opt)
  np.testing.assert_array_equal(results[True][0], results[False][0])
  plain = results[False][1]
  assert not plain.polyak and len(plain.variables) == 4  # iterations, polyak_decay, m, u
  np.testing.assert_array_equal(plain.polyak_values([var])[0], var.numpy())


def test_bad_kind_and_weight_decay():
  with pytest.raises(ValueError, match="adamax"):
    optim.GlowOptimizer("sgd")
  with pytest.raises(ValueError, match="weight_decay"):
    optim.GlowOptimizer("adam", weight_decay=1.5)


def _mirrored(strategy, kind):
  """A mirrored `[2, 3]` variable, its initial value and a built optimiser of `kind`."""
  w0 = np.arange(6, dtype=np.float32).reshape(2, 3)
  with strategy.scope():
    var = tf.Variable(w0)
    opt = optim.GlowOptimizer(kind, 0.1, beta2=0.99)
    opt.build([var])
  return w0, var, opt


def test_identical_under_two_replicas(two_replicas):
  w0, var, opt = _mirrored(two_replicas, "adamax")

  @tf.function
  def step():
    def replica_fn():
      ctx = tf.distribute.get_replica_context()
      g = tf.ones_like(var) * tf.cast(ctx.replica_id_in_sync_group + 1, tf.float32)
      g = ctx.all_reduce(tf.distribute.ReduceOp.SUM, g)
      opt.apply_gradients([(g, var)])
    two_replicas.run(replica_fn)

  step()
  step()
  values = [v.numpy() for v in two_replicas.experimental_local_results(var)]
  np.testing.assert_array_equal(values[0], values[1])
  single = tf.Variable(w0)
  ref = optim.GlowOptimizer("adamax", 0.1, beta2=0.99)
  ref.build([single])
  for _ in range(2):
    ref.apply_gradients([(tf.fill([2, 3], 3.), single)])
  np.testing.assert_allclose(values[0], single.numpy(), rtol=1e-6)
  assert int(opt.iterations.numpy()) == 2
  # The moments and Polyak averages too: the same on both devices, and as on one.
  for slot in opt.variables:
    copies = [c.numpy() for c in two_replicas.experimental_local_results(slot)]
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[0], copies[1], err_msg=slot.name)
  np.testing.assert_allclose(opt.polyak_values([var])[0], ref.polyak_values([single])[0],
                             rtol=1e-6)


def test_a_checkpointed_optimiser_resumes_to_the_same_bits(tmp_path):
  rng = np.random.RandomState(5)
  shapes = [(4, 9), (3,), (4, 9)]  # two of one shape: their slots share a stack
  w0 = [rng.randn(*s).astype(np.float32) for s in shapes]
  grads = [[tf.constant(rng.randn(*s).astype(np.float32)) for s in shapes] for _ in range(6)]

  def make():
    variables = [tf.Variable(w) for w in w0]
    opt = optim.GlowOptimizer("adamax", 0.01, beta2=0.9)
    opt.build(variables)
    return variables, opt, tf.train.Checkpoint(var=variables, optimizer=opt)

  variables, opt, ckpt = make()
  for g in grads[:3]:
    opt.apply_gradients(zip(g, variables))
  path = ckpt.save(str(tmp_path / "ckpt"))
  for g in grads[3:]:
    opt.apply_gradients(zip(g, variables))
  resumed_vars, resumed_opt, resumed = make()
  resumed.restore(path).assert_consumed()
  for g in grads[3:]:
    resumed_opt.apply_gradients(zip(g, resumed_vars))
  for a, b in zip(resumed_vars + resumed_opt.polyak_values(resumed_vars),
                  variables + opt.polyak_values(variables)):
    np.testing.assert_array_equal(a, b)


def _per_variable_slots(shapes, rng):
  """A module with GlowOptimizer's checkpoint layout of one variable per slot, filled at random."""
  old = tf.Module()
  for name in ("m", "u", "polyak"):
    setattr(old, name, [tf.Variable(rng.rand(*s).astype(np.float32)) for s in shapes])
  old.iterations = tf.Variable(7, dtype=tf.int64)
  old.polyak_decay = tf.Variable(0.9, dtype=tf.float64)
  return old


def test_stacked_slots_keep_each_variables_checkpoint_key(tmp_path):
  """Slots are stored stacked by shape but saved under each variable's key (`m/<i>` ...),
  so checkpoints with one variable per slot restore, and what is saved restores into them."""
  rng = np.random.RandomState(2)
  shapes = [(2, 3), (5,), (2, 3), (1, 1, 2, 3)]
  old = _per_variable_slots(shapes, rng)
  first = tf.train.Checkpoint(optimizer=old).write(str(tmp_path / "old"))
  variables = [tf.Variable(tf.zeros(s)) for s in shapes]
  opt = optim.GlowOptimizer("adam", 0.01, beta2=0.9)
  opt.build(variables)
  tf.train.Checkpoint(optimizer=opt).read(first).assert_consumed()
  debias = 1. - 0.9 ** 7
  for avg, value in zip(old.polyak, opt.polyak_values(variables)):
    np.testing.assert_allclose(value, avg.numpy() / debias, rtol=1e-6)
  again = tf.train.Checkpoint(optimizer=opt).write(str(tmp_path / "new"))
  back = _per_variable_slots(shapes, np.random.RandomState(3))
  tf.train.Checkpoint(optimizer=back).read(again).assert_consumed()
  for a, b in zip(tf.nest.flatten([old.m, old.u, old.polyak]),
                  tf.nest.flatten([back.m, back.u, back.polyak])):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("kind, weight_decay, polyak, jit_compile", [
    ("adamax", 1., True, False), ("adam", 0.95, True, False), ("adam", 1., False, True),
    ("adamax", 0.99, True, True)])
def test_apply_if_false_changes_nothing_and_true_is_the_ungated_update(kind, weight_decay, polyak,
                                                                       jit_compile):
  """Skipped steps (their gradients NaN or inf) leave every variable's bits; applied ones equal ungated ones."""
  rng = np.random.RandomState(6)
  # (Two variables of one shape: the update stacks them, and a NaN in one is in the stack.)
  w0 = [rng.randn(3, 10).astype(np.float32), rng.randn(7).astype(np.float32),
        rng.randn(3, 10).astype(np.float32)]
  oks = [True, False, True, False, True]
  grads = [[tf.constant(rng.randn(*w.shape).astype(np.float32)) for w in w0] for _ in oks]
  grads[1][0] = tf.fill([3, 10], np.nan)
  grads[3][1] = tf.fill([7], np.inf)
  make = lambda: optim.GlowOptimizer(kind, optim.WarmupSchedule(0.01, 2), beta2=0.9,
                                     weight_decay=weight_decay, polyak=polyak)
  gated, plain = [tf.Variable(w) for w in w0], [tf.Variable(w) for w in w0]
  opt, ref = make(), make()
  opt.build(gated)
  ref.build(plain)
  step = tf.function(lambda gs, ok: opt.apply_gradients(zip(gs, gated), apply_if=ok),
                     jit_compile=jit_compile)
  ref_step = tf.function(lambda gs: ref.apply_gradients(zip(gs, plain)), jit_compile=jit_compile)
  for gs, ok in zip(grads, oks):
    before = [v.numpy() for v in opt.variables]
    step(gs, tf.constant(ok))
    if ok:
      ref_step(gs)
    else:  # weights, moments, averages and the step count as they were
      for a, b in zip(before, [v.numpy() for v in opt.variables]):
        np.testing.assert_array_equal(a, b)
  assert int(opt.iterations.numpy()) == 3
  for a, b in zip(gated + opt.polyak_values(gated), plain + ref.polyak_values(plain)):
    np.testing.assert_array_equal(a, b)
  assert min(np.abs(v.numpy() - w).max() for v, w in zip(gated, w0)) > 1e-3


def test_apply_if_under_two_replicas(two_replicas):
  w0, var, opt = _mirrored(two_replicas, "adam")

  @tf.function
  def step(ok):
    def replica_fn():
      opt.apply_gradients([(tf.ones_like(var), var)], apply_if=tf.identity(ok))
    two_replicas.run(replica_fn)

  step(tf.constant(False))
  assert int(opt.iterations.numpy()) == 0
  for value in two_replicas.experimental_local_results(var):
    np.testing.assert_array_equal(value.numpy(), w0)
  step(tf.constant(True))
  assert int(opt.iterations.numpy()) == 1
  values = [v.numpy() for v in two_replicas.experimental_local_results(var)]
  np.testing.assert_array_equal(values[0], values[1])
  assert np.all(values[0] < w0)


def test_a_saved_model_of_an_object_holding_the_optimiser(tmp_path):
  """A SavedModel (e.g. tf_keras's model.save) of an object holding a built GlowOptimizer
  keeps its stacked slots (checkpoints keep one row per variable)."""
  module = tf.Module()
  module.weights = [tf.Variable(tf.ones([2, 3])), tf.Variable(tf.ones([2, 3]))]
  module.optimizer = optim.GlowOptimizer("adam", 0.1)
  module.optimizer.build(module.weights)
  module.optimizer.apply_gradients(zip([tf.ones([2, 3]), -tf.ones([2, 3])], module.weights))
  tf.saved_model.save(module, str(tmp_path / "saved"))
  loaded = tf.saved_model.load(str(tmp_path / "saved"))
  stacks = [getattr(loaded.optimizer, f"slot_stack_{i}") for i in range(3)]  # m, u, polyak
  assert {v.numpy().tobytes() for v in stacks} <= {
      v.numpy().tobytes() for v in module.optimizer.variables}
  assert [v.shape for v in stacks] == [(2, 2, 3)] * 3


def test_an_overflowing_second_moment_stays_infinite_and_the_weights_finite():
  """Adam's `u = beta2 u + (1 - beta2) g^2` (the original's form): a gradient whose square
  overflows makes u infinite, and its element then stops moving; the weights never become NaN
  (TensorFlow's kernels' form, u + (g^2 - u)(1 - beta2), gives inf - inf = NaN at the next step)."""
  var = tf.Variable([1., 2.])
  opt = optim.GlowOptimizer("adam", 0.1, beta2=0.9)
  opt.build([var])
  opt.apply_gradients([(tf.constant([1e20, 1.]), var)])
  opt.apply_gradients([(tf.constant([1., 1.]), var)])
  assert np.all(np.isfinite(var.numpy())), var.numpy()
  assert np.all(np.isfinite(opt.polyak_values([var])[0].numpy()))
