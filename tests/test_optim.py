"""The optimisers follow the original's update equations exactly; Polyak averages; warmup."""

import numpy as np
import pytest
import tensorflow as tf

from glow_tf import kernels, optim


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
  var = tf.Variable(w0.astype(np.float32))  # the fused kernels run in the variable's dtype
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
  if kernels.available():  # one fused update per replica's device
    ops = [op.type for op in step.get_concrete_function().graph.get_operations()]
    assert ops.count("GlowOptimizerUpdate") == 2
  values = [v.numpy() for v in two_replicas.experimental_local_results(var)]
  np.testing.assert_array_equal(values[0], values[1])
  single = tf.Variable(w0)
  ref = optim.GlowOptimizer("adamax", 0.1, beta2=0.99)
  ref.build([single])
  for _ in range(2):
    ref.apply_gradients([(tf.fill([2, 3], 3.), single)])
  np.testing.assert_allclose(values[0], single.numpy(), rtol=1e-6)
  assert int(opt.iterations.numpy()) == 2


# Shapes with a tail that is not a multiple of 8 floats, some longer than the
# fused op's unit of work (8192 floats), and more floats than one fused op
# takes (the update is split into a few ops, in order).
_SHAPES = [(3, 3, 128, 128), (3, 3, 16, 128), (128,), (1, 1, 24, 24), (7,), (3, 3, 96, 5), (1,)]


def _train(kind, weight_decay, polyak, fused, steps=5, strategy=None):
  """Weights, Polyak values and the traced op types after `steps` updates of fixed gradients."""
  rng = np.random.RandomState(3)
  w0 = [rng.randn(*s).astype(np.float32) for s in _SHAPES]
  grads = [[rng.randn(*s).astype(np.float32) for s in _SHAPES] for _ in range(steps)]
  variables = [tf.Variable(w) for w in w0]
  opt = optim.make_optimizer(kind, lr=0.01, beta1=0.9, warmup_steps=2, beta2=0.95,
                             weight_decay=weight_decay)
  opt.fused = fused
  if not polyak:
    opt = optim.GlowOptimizer(kind, 0.01, beta2=0.95, weight_decay=weight_decay, polyak=False,
                              fused=fused)
  opt.build(variables)
  step = tf.function(lambda gs: opt.apply_gradients(zip(gs, variables)))
  op_types = {op.type for op in step.get_concrete_function(
      [tf.TensorSpec(s, tf.float32) for s in _SHAPES]).graph.get_operations()}
  for gs in grads:
    step([tf.constant(g) for g in gs])
  return ([v.numpy() for v in variables],
          [p.numpy() for p in opt.polyak_values(variables)], op_types)


needs_kernels = pytest.mark.skipif(not kernels.available(),
                                   reason=f"compiled kernels: {kernels.unavailable_reason()}")


@needs_kernels
@pytest.mark.parametrize("kind,weight_decay,polyak", [
    ("adamax", 1., True), ("adamax", 0.99, True), ("adam", 1., True), ("adam", 0.95, False),
    ("adamax", 1., False)])
def test_the_one_op_update_gives_the_same_bits_as_tensorflows_kernels(kind, weight_decay, polyak):
  fused_w, fused_avg, fused_ops = _train(kind, weight_decay, polyak, fused=True)
  plain_w, plain_avg, plain_ops = _train(kind, weight_decay, polyak, fused=False)
  assert "GlowOptimizerUpdate" in fused_ops and "ResourceApplyAdaMax" not in fused_ops
  assert "GlowOptimizerUpdate" not in plain_ops
  for a, b in zip(fused_w + fused_avg, plain_w + plain_avg):
    np.testing.assert_array_equal(a, b)
  lag = max(np.abs(w - a).max() for w, a in zip(fused_w, fused_avg))
  assert lag > 0 if polyak else lag == 0  # the averages are kept, or are the weights
  assert min(np.abs(w - w0).max() for w, w0 in zip(fused_w, _train(kind, weight_decay, polyak,
                                                                    True, steps=0)[0])) > 1e-3


@needs_kernels
def test_the_one_op_update_keeps_values_read_before_it():
  var = tf.Variable(tf.ones([3, 5]))
  opt = optim.GlowOptimizer("adam", 0.1)
  opt.build([var])
  before = var.read_value()  # shares the variable's buffer until it changes
  opt.apply_gradients([(tf.ones([3, 5]), var)])
  np.testing.assert_array_equal(before.numpy(), np.ones([3, 5]))
  assert np.all(var.numpy() < 1)


@needs_kernels
def test_the_one_op_update_refuses_a_gradient_of_another_shape():
  var, m, u = (tf.Variable(tf.zeros([4])) for _ in range(3))
  one = tf.constant(1.)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"variable 0 .*\[4\].*gradient is \[5\]"):
    kernels.optimizer_update("adam", [var], [m], [u], [], [tf.ones([5])],
                             one, one, one, one, one, one, one, one)


def test_checkpoints_restore_across_the_two_update_paths(tmp_path):
  """The slots are the same variables either way: a run checkpointed on one path resumes on the other."""
  rng = np.random.RandomState(5)
  w0 = rng.randn(4, 9).astype(np.float32)
  grads = [tf.constant(rng.randn(4, 9).astype(np.float32)) for _ in range(6)]

  def make(fused):
    var = tf.Variable(w0)
    opt = optim.GlowOptimizer("adamax", 0.01, beta2=0.9, fused=fused)
    opt.build([var])
    return var, opt, tf.train.Checkpoint(var=var, optimizer=opt)

  var, opt, ckpt = make(True)
  for g in grads[:3]:
    opt.apply_gradients([(g, var)])
  path = ckpt.save(str(tmp_path / "ckpt"))
  for g in grads[3:]:
    opt.apply_gradients([(g, var)])
  resumed_var, resumed_opt, resumed = make(False)
  resumed.restore(path).assert_consumed()
  for g in grads[3:]:
    resumed_opt.apply_gradients([(g, resumed_var)])
  np.testing.assert_array_equal(resumed_var.numpy(), var.numpy())
  np.testing.assert_array_equal(resumed_opt.polyak_values([resumed_var])[0],
                                opt.polyak_values([var])[0])


@pytest.mark.parametrize("fused", [True, False])
def test_apply_if_false_changes_nothing_and_true_is_a_normal_update(fused):
  rng = np.random.RandomState(6)
  w0 = rng.randn(3, 10).astype(np.float32)
  grads = [tf.constant(rng.randn(3, 10).astype(np.float32)) for _ in range(4)]
  var, plain = tf.Variable(w0), tf.Variable(w0)
  opt = optim.GlowOptimizer("adamax", 0.01, beta2=0.9, fused=fused)
  ref = optim.GlowOptimizer("adamax", 0.01, beta2=0.9, fused=fused)
  opt.build([var])
  ref.build([plain])
  step = tf.function(lambda g, ok: opt.apply_gradients([(g, var)], apply_if=ok))
  for g, ok in zip(grads, [True, False, True, False]):
    before = [v.numpy() for v in opt.variables]
    step(g, tf.constant(ok))
    if ok:
      ref.apply_gradients([(g, plain)])
    else:  # weights, moments, averages and the step count as they were
      for a, b in zip(before, [v.numpy() for v in opt.variables]):
        np.testing.assert_array_equal(a, b)
  assert int(opt.iterations.numpy()) == 2
  np.testing.assert_array_equal(var.numpy(), plain.numpy())
  np.testing.assert_array_equal(opt.polyak_values([var])[0], ref.polyak_values([plain])[0])


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
