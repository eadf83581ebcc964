"""Property tests of the flow-step bijectors in glow_tf.bijectors."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import glow_tf.bijectors as gb
from tests import bijector_test_util as util

tfb = tfp.bijectors
tfd = tfp.distributions

F64 = tf.float64
SHAPE = [2, 4, 4, 4]  # [B, H, W, C]

# name -> (constructor, forward input event shape)
BIJECTORS = {
    "actnorm": (lambda: gb.ActNorm(4, dtype=F64), [4, 4, 4]),
    "invconv": (lambda: gb.InvertibleConv1x1(4, dtype=F64), [4, 4, 4]),
    "invconv_lu": (lambda: gb.InvertibleConv1x1(4, lu_decomposed=True, dtype=F64), [4, 4, 4]),
    "affine": (lambda: gb.AffineCoupling(4, 8, "affine", dtype=F64), [4, 4, 4]),
    "additive": (lambda: gb.AffineCoupling(4, 8, "additive", dtype=F64), [4, 4, 4]),
    "reverse": (lambda: gb.Reverse(4, dtype=F64), [4, 4, 4]),
    "shuffle": (lambda: gb.Shuffle(4, seed=3, dtype=F64), [4, 4, 4]),
    "squeeze": (lambda: gb.Squeeze(2, dtype=F64), [2, 2, 16]),
    "step_invconv_affine": (lambda: gb.FlowStep(4, 8, "invconv", "affine", dtype=F64), [4, 4, 4]),
    "step_lu_additive": (lambda: gb.FlowStep(4, 8, 2, 0, lu_decomposed=True, dtype=F64), [4, 4, 4]),
    "step_reverse_affine": (lambda: gb.FlowStep(4, 8, 0, 1, dtype=F64), [4, 4, 4]),
    "step_shuffle_additive": (lambda: gb.FlowStep(4, 8, "shuffle", "additive", dtype=F64), [4, 4, 4]),
}
NAMES = sorted(BIJECTORS)
# Bijectors that are not a fixed permutation of the entries.
NON_PERMUTATION = [n for n in NAMES if n not in ("reverse", "shuffle", "squeeze")]


def make(name, perturbed=True):
  ctor, event = BIJECTORS[name]
  bij = ctor()
  if perturbed:
    util.perturb(bij, 0.1)
  return bij, event


def rand(shape, seed=0):
  return tf.constant(np.random.RandomState(seed).standard_normal(shape))


def maybe_function(fn, use_function):
  return tf.function(fn, autograph=False) if use_function else fn


@pytest.mark.parametrize("use_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("name", NAMES)
def test_round_trip_both_directions(name, use_function):
  bij, event = make(name)
  x = rand([2] + event)
  fwd = maybe_function(lambda t: bij.forward(t), use_function)
  inv = maybe_function(lambda t: bij.inverse(t), use_function)
  y = fwd(x)
  np.testing.assert_allclose(inv(util.fresh(y)), x, atol=1e-10, rtol=0)
  y2 = rand([2] + list(bij.forward_event_shape(event)), seed=1)
  np.testing.assert_allclose(fwd(util.fresh(inv(y2))), y2, atol=1e-10, rtol=0)
  if name in NON_PERMUTATION:  # not trivially the identity
    # (a coupling leaves half the channels as they are)
    assert np.mean(np.abs(y.numpy() - x.numpy()) > 1e-3) > 0.45


@pytest.mark.parametrize("use_function", [False, True], ids=["eager", "function"])
@pytest.mark.parametrize("name", NAMES)
def test_log_det_matches_brute_force_jacobian(name, use_function):
  bij, event = make(name)
  x = rand([2] + event, seed=2)
  fldj = maybe_function(
      lambda t: bij.forward_log_det_jacobian(t, event_ndims=3), use_function)(x)
  expected = util.brute_force_log_det(bij.forward, x)
  np.testing.assert_allclose(fldj, expected, atol=1e-8, rtol=0)
  y = util.fresh(bij.forward(x))
  ildj = bij.inverse_log_det_jacobian(y, event_ndims=3)
  np.testing.assert_allclose(ildj, -fldj.numpy(), atol=1e-10, rtol=0)
  if name in NON_PERMUTATION and name != "additive":  # additive is volume-preserving
    assert np.all(np.abs(expected) > 1e-3)  # a log-det that is really tested
  # The fused call agrees with the separate ones.
  y_f, fldj_f = bij.forward_and_log_det(x)
  np.testing.assert_allclose(y_f, bij.forward(util.fresh(x)), atol=1e-12)
  np.testing.assert_allclose(fldj_f, fldj, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_with_extra_batch_dims(name):
  bij, event = make(name)
  x = rand([3, 2] + event)
  y = bij.forward(x)
  out_event = bij.forward_event_shape(event).as_list()
  assert y.shape.as_list() == [3, 2] + out_event
  assert bij.inverse_event_shape(out_event).as_list() == event
  assert bij.forward_event_shape_tensor(event).numpy().tolist() == out_event
  assert bij.forward_log_det_jacobian(x, event_ndims=3).shape == [3, 2]
  assert bij.forward_log_det_jacobian(x, event_ndims=4).shape == [3]
  # Batch members are transformed independently: same as one at a time.
  np.testing.assert_allclose(y[1, 0], bij.forward(x[1, 0][None])[0], atol=1e-12)
  np.testing.assert_allclose(bij.inverse(util.fresh(y)), x, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_in_transformed_distribution_chain_and_invert(name):
  bij, event = make(name)
  # A base that is not ours: independent logistic entries.
  base = tfd.Independent(tfd.Logistic(tf.zeros(event, F64), tf.constant(1., F64)), 3)
  dist = tfd.TransformedDistribution(base, bij)
  x = dist.sample(3, seed=1)
  out_event = bij.forward_event_shape(event).as_list()
  assert x.shape.as_list() == [3] + out_event
  z = util.fresh(bij.inverse(x))
  expected = base.log_prob(z) - bij.forward_log_det_jacobian(z, event_ndims=3)
  np.testing.assert_allclose(dist.log_prob(util.fresh(x)), expected, atol=1e-10)

  inverted = tfb.Invert(bij)
  np.testing.assert_allclose(inverted.forward(util.fresh(x)), z, atol=1e-10)
  np.testing.assert_allclose(
      inverted.forward_log_det_jacobian(util.fresh(x), event_ndims=3),
      -bij.forward_log_det_jacobian(z, event_ndims=3), atol=1e-10)

  chain = tfb.Chain([tfb.Scale(tf.constant(2., F64)), bij, tfb.Shift(tf.constant(0.5, F64))])
  y = chain.forward(z)
  np.testing.assert_allclose(y, 2. * bij.forward(z + 0.5), atol=1e-10)
  np.testing.assert_allclose(
      chain.forward_log_det_jacobian(z, event_ndims=3),
      bij.forward_log_det_jacobian(z + 0.5, event_ndims=3) + np.log(2.) * np.prod(out_event),
      atol=1e-10)
  np.testing.assert_allclose(chain.inverse(util.fresh(y)), z, atol=1e-10)


# Expected trainable variables per bijector (the parameterisation, not a count to match).
def _coupling_vars(prefix):
  return {f"{prefix}nn.conv1.kernel", f"{prefix}nn.conv1.edge_kernel",
          f"{prefix}nn.conv_out.edge_kernel", f"{prefix}nn.conv1.actnorm.shift",
          f"{prefix}nn.conv1.actnorm.log_scale", f"{prefix}nn.conv2.kernel",
          f"{prefix}nn.conv2.actnorm.shift", f"{prefix}nn.conv2.actnorm.log_scale",
          f"{prefix}nn.conv_out.kernel", f"{prefix}nn.conv_out.bias",
          f"{prefix}nn.conv_out.log_scale"}


EXPECTED_VARS = {
    "actnorm": {"shift", "log_scale"},
    "invconv": {"kernel"},
    "invconv_lu": {"lower", "upper", "log_s"},
    "affine": _coupling_vars(""),
    "additive": _coupling_vars(""),
    "reverse": set(), "shuffle": set(), "squeeze": set(),
    "step_invconv_affine": {"actnorm.shift", "actnorm.log_scale", "permutation.kernel"}
                           | _coupling_vars("coupling."),
    "step_lu_additive": {"actnorm.shift", "actnorm.log_scale", "permutation.lower",
                         "permutation.upper", "permutation.log_s"} | _coupling_vars("coupling."),
    "step_reverse_affine": {"actnorm.shift", "actnorm.log_scale"} | _coupling_vars("coupling."),
    "step_shuffle_additive": {"actnorm.shift", "actnorm.log_scale"} | _coupling_vars("coupling."),
}


def checkpoint_paths(module, directory):
  """Attribute paths (dotted) of the variables a checkpoint of `module` stores."""
  path = tf.train.Checkpoint(module=module).write(os.path.join(directory, "paths"))
  suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
  return {name[len("module/"):-len(suffix)].replace("/", ".")
          for name, _ in tf.train.list_variables(path)
          if name.startswith("module/") and name.endswith(suffix)}


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_is_tracked_gets_a_gradient_and_checkpoints(name, tmp_path):
  bij, event = make(name)
  fixed = ({"permutation_matrix", "sign_s"} if name == "invconv_lu" else  # the LU form's P, sign(s)
           {"permutation.permutation_matrix", "permutation.sign_s"}
           if name == "step_lu_additive" else set())
  assert checkpoint_paths(bij, tmp_path) == EXPECTED_VARS[name] | fixed
  assert len(bij.trainable_variables) == len(EXPECTED_VARS[name])
  assert len(bij.non_trainable_variables) == len(fixed)
  assert not any(v.trainable for v in bij.non_trainable_variables)

  base = tfd.Independent(tfd.Normal(tf.zeros(bij.forward_event_shape(event), F64), 1.), 3)
  x = rand([4] + event, seed=5)
  dist = tfd.TransformedDistribution(base, tfb.Invert(bij))  # density of latent-side x
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(dist.log_prob(x))
  grads = tape.gradient(loss, bij.trainable_variables)
  for v, g in zip(bij.trainable_variables, grads):
    assert g is not None, v.name
    assert np.any(np.abs(g.numpy()) > 0), v.name

  ckpt = tf.train.Checkpoint(bijector=bij)
  path = ckpt.save(os.path.join(tmp_path, "ckpt"))
  saved = [v.numpy().copy() for v in bij.trainable_variables]
  y_saved = bij.forward(x).numpy()
  util.perturb(bij, 1.0, seed=9)
  restored, _ = make(name, perturbed=False)
  tf.train.Checkpoint(bijector=restored).restore(path).assert_consumed()
  for v, s in zip(restored.trainable_variables, saved):
    np.testing.assert_array_equal(v.numpy(), s)
  np.testing.assert_allclose(restored.forward(util.fresh(x)), y_saved, atol=1e-12)


def test_keras3_is_not_in_the_model():
  bij, _ = make("step_invconv_affine")
  for v in bij.variables:
    assert isinstance(v, tf.Variable)
    assert type(v).__module__.startswith("tensorflow"), type(v)


# ---- ActNorm initialisation -------------------------------------------------


def test_actnorm_is_identity_before_init_and_normalises_after():
  act = gb.ActNorm(3, dtype=F64)
  x = rand([8, 5, 5, 3]) * np.array([1., 3., 0.2]) + np.array([2., -1., 0.5])
  np.testing.assert_array_equal(act.inverse(x), x)
  z = act.initialize(x)
  np.testing.assert_allclose(np.mean(z, axis=(0, 1, 2)), 0., atol=1e-10)
  np.testing.assert_allclose(np.std(z, axis=(0, 1, 2)), 1., atol=1e-5)
  np.testing.assert_allclose(act.inverse(util.fresh(x)), z, atol=1e-12)


def test_flow_step_initialize_normalises_actnorm_outputs():
  step = gb.FlowStep(4, 16, "invconv", "affine", dtype=F64)
  x = rand([16, 4, 4, 4], seed=3) * 3. + 1.
  z = step.initialize(x)
  np.testing.assert_allclose(z, step.inverse(util.fresh(x)), atol=1e-12)
  # The coupling network's hidden actnorms were initialised too: its first
  # layer (convolution and actnorm) normalises the coupling's input half.
  hn = step.coupling.nn.conv1(step.permutation.inverse(step.actnorm.inverse(x))[..., :2])
  np.testing.assert_allclose(np.mean(hn, axis=(0, 1, 2)), 0., atol=1e-8)
  np.testing.assert_allclose(np.var(hn, axis=(0, 1, 2)), 1., atol=1e-4)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_initialize_is_replica_safe(dtype, two_replicas):
  x = (rand([8, 4, 4, 4], seed=4) * 2. + 0.5).numpy().astype(dtype.as_numpy_dtype)
  single = gb.FlowStep(4, 8, dtype=dtype)
  single.initialize(x)
  expected = [v.numpy() for v in single.variables]

  strategy = two_replicas
  with strategy.scope():
    mirrored = gb.FlowStep(4, 8, dtype=dtype)
  dataset = tf.data.Dataset.from_tensor_slices(x).batch(8)
  batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
  shards = strategy.experimental_local_results(batch)
  assert [s.shape[0] for s in shards] == [4, 4]  # each replica sees half

  @tf.function
  def init(b):
    return strategy.run(mirrored.initialize, args=(b,))

  init(batch)
  tol = 1e-10 if dtype == tf.float64 else 2e-5
  # The same construction lists the variables in the same order.
  assert len(mirrored.variables) == len(expected) > 10
  for v, want in zip(mirrored.variables, expected):
    values = [t.numpy() for t in strategy.experimental_local_results(v)]
    np.testing.assert_array_equal(values[0], values[1], err_msg=v.name)
    np.testing.assert_allclose(values[0], want, atol=tol, rtol=tol, err_msg=v.name)

  # Cross-replica context on the global batch gives the same values.
  with strategy.scope():
    cross = gb.FlowStep(4, 8, dtype=dtype)
    cross.initialize(x)
  for v, want in zip(cross.variables, expected):
    for t in strategy.experimental_local_results(v):
      np.testing.assert_allclose(t.numpy(), want, atol=tol, rtol=tol, err_msg=v.name)


# ---- Bad input ---------------------------------------------------------------


@pytest.mark.parametrize("ctor, message", [
    (lambda: gb.AffineCoupling(3, 8), "even"),
    (lambda: gb.AffineCoupling(4, 0), "hidden_channels"),
    (lambda: gb.AffineCoupling(4, 8, coupling="spline"),
     "unknown flow_coupling .spline.; use one of 0 = additive, 1 = affine"),
    (lambda: gb.FlowStep(4, 8, flow_permutation=5), "flow_permutation"),
    (lambda: gb.FlowStep(4, 8, flow_coupling="mystery"), "flow_coupling"),
    (lambda: gb.ActNorm(0), "num_channels"),
    (lambda: gb.InvertibleConv1x1(-2), "num_channels"),
    (lambda: gb.Squeeze(0), "factor"),
])
def test_bad_constructor_arguments(ctor, message):
  with pytest.raises(ValueError, match=message):
    ctor()


def test_bad_inputs():
  with pytest.raises(ValueError, match="not divisible"):
    gb.Squeeze(2).inverse(tf.zeros([1, 5, 4, 3]))
  with pytest.raises(ValueError, match="not divisible"):
    gb.Squeeze(2).forward(tf.zeros([1, 2, 2, 3]))
  with pytest.raises(ValueError, match="rank"):
    gb.ActNorm(4).forward(tf.zeros([4, 4]))
  with pytest.raises(ValueError, match="event shape"):
    gb.AffineCoupling(4, 8).inverse(tf.zeros([1, 4, 4, 6]))
  with pytest.raises(ValueError, match="conditioning"):
    gb.AffineCoupling(4, 8).forward(tf.zeros([1, 4, 4, 4]), conditioning=tf.zeros([1, 3]))


# ---- Conditioning -------------------------------------------------------------


@pytest.mark.parametrize("cond_shape", [[3], [4, 4, 2]])
def test_conditional_coupling(cond_shape):
  bij = gb.AffineCoupling(4, 8, conditioning_shape=cond_shape, dtype=F64)
  util.perturb(bij, 0.1)
  x = rand([2, 4, 4, 4])
  c1, c2 = rand([2] + cond_shape, seed=1), rand([2] + cond_shape, seed=2)
  y1 = bij.forward(x, conditioning=c1)
  assert np.abs(y1.numpy() - bij.forward(util.fresh(x), conditioning=c2).numpy()).max() > 1e-3
  np.testing.assert_allclose(bij.inverse(util.fresh(y1), conditioning=c1), x, atol=1e-10)
  fldj = bij.forward_log_det_jacobian(x, event_ndims=3, conditioning=c1)
  np.testing.assert_allclose(
      fldj, util.brute_force_log_det(
          lambda t: bij.forward(t, conditioning=c1[:1]), x[:1]).tolist()
      + util.brute_force_log_det(lambda t: bij.forward(t, conditioning=c1[1:]), x[1:]).tolist(),
      atol=1e-8)
  base = tfd.Independent(tfd.Normal(tf.zeros([4, 4, 4], F64), 1.), 3)
  dist = tfd.TransformedDistribution(base, bij)
  assert dist.log_prob(y1, bijector_kwargs={"conditioning": c1}).shape == [2]
  with pytest.raises(ValueError, match="conditional"):
    bij.forward(x)


def test_invconv_log_det_is_stable_in_float32():
  conv = gb.InvertibleConv1x1(48, dtype=tf.float32)
  conv.kernel.assign(conv.kernel * 1.7)  # |det| = 1.7^48, far from 1
  ldj = conv.forward_log_det_jacobian(tf.zeros([1, 2, 2, 48]), event_ndims=3)
  np.testing.assert_allclose(ldj, -4 * 48 * np.log(1.7), rtol=1e-6)


def test_invconv_log_det_and_gradient_under_xla():
  conv = gb.InvertibleConv1x1(6, dtype=F64)
  util.perturb(conv, 0.3)
  x = rand([2, 3, 3, 6])

  def value_and_grad(t):
    with tf.GradientTape() as tape:
      ldj = tf.reduce_sum(conv.forward_log_det_jacobian(t, event_ndims=3))
    return ldj, tape.gradient(ldj, conv.kernel)

  eager = value_and_grad(x)
  xla = tf.function(value_and_grad, jit_compile=True)(x)
  np.testing.assert_allclose(xla[0], eager[0], rtol=1e-10)
  np.testing.assert_allclose(xla[1], eager[1], rtol=1e-8, atol=1e-10)


def test_actnorm_and_lu_conv_equal_tfp_bijectors_with_the_same_weights():
  """Where the architectures match, the likelihood terms are TFP's to the last bits.

  A flow step whose additive coupling is still at its (identity) initialisation
  is actnorm -> 1x1 convolution; TFP's own Shift, Scale and ScaleMatvecLU with
  the same weights must give the same encoding and log-det.
  """
  step = gb.FlowStep(4, 8, "invconv", "additive", lu_decomposed=True, seed=5, dtype=F64)
  rng = np.random.RandomState(7)
  for v in (step.actnorm.shift, step.actnorm.log_scale, step.permutation.lower,
            step.permutation.upper, step.permutation.log_s):
    v.assign(v + 0.3 * rng.standard_normal(v.shape))
  x = rand([3, 4, 4, 4], seed=8)
  w = step.permutation.weight()
  lower_upper, perm = tf.linalg.lu(w)
  reference = tfb.Chain([tfb.ScaleMatvecLU(lower_upper, perm),            # z = W h
                         tfb.Scale(tf.exp(3. * step.actnorm.log_scale)),  # h = (x + b) e^s
                         tfb.Shift(step.actnorm.shift)])
  np.testing.assert_allclose(step.inverse(x), reference.forward(x), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(step.inverse_log_det_jacobian(util.fresh(x), event_ndims=3),
                             reference.forward_log_det_jacobian(x, event_ndims=3),
                             rtol=1e-12)


def test_bijectors_of_equal_arguments_are_distinct_functions_in_one_trace():
  """TFP's result cache must not answer one bijector's call with another's of the same arguments."""
  a, b = gb.ActNorm(4, dtype=F64), gb.ActNorm(4, dtype=F64)
  b.shift.assign(tf.ones([4], F64))
  assert a != b
  x = rand(SHAPE)
  both = tf.function(lambda t: (a.inverse(t), b.inverse(t)))(x)
  np.testing.assert_allclose(both[0], x, atol=1e-12)
  np.testing.assert_allclose(both[1], x + 1., atol=1e-12)


# ---- TFP's batch shape ---------------------------------------------------------

# One instance of every public bijector class (the parameters are not batched).
PUBLIC_BIJECTORS = {
    "ActNorm": lambda: gb.ActNorm(4),
    "AffineCoupling": lambda: gb.AffineCoupling(4, 8),
    "FlowStep": lambda: gb.FlowStep(4, 8),
    "GlowBijector": lambda: gb.GlowBijector(name="base"),
    "InvertibleConv1x1": lambda: gb.InvertibleConv1x1(4, lu_decomposed=True),
    "Reverse": lambda: gb.Reverse(4),
    "Shuffle": lambda: gb.Shuffle(4, seed=1),
    "Squeeze": lambda: gb.Squeeze(2),
    "Glow": lambda: __import__("glow_tf").Glow([8, 8, 1], n_levels=2, depth=1, width=4),
}


def test_every_public_bijector_class_is_in_the_batch_shape_test():
  assert set(PUBLIC_BIJECTORS) == set(gb.__all__) | {"Glow"}


@pytest.mark.parametrize("name", sorted(PUBLIC_BIJECTORS))
def test_batch_shape_is_scalar(name):
  bij = PUBLIC_BIJECTORS[name]()
  assert bij.experimental_batch_shape() == tf.TensorShape([])
  assert bij.experimental_batch_shape(x_event_ndims=bij.forward_min_event_ndims + 1) == []
  assert bij.experimental_batch_shape(y_event_ndims=bij.inverse_min_event_ndims) == []
  assert bij.experimental_batch_shape_tensor().numpy().tolist() == []
  assert bij.experimental_batch_shape_tensor(
      y_event_ndims=bij.inverse_min_event_ndims + 1).numpy().tolist() == []


def test_batch_shape_of_a_glow_distribution_is_scalar():
  glow = PUBLIC_BIJECTORS["Glow"]()
  dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), glow.latent_size), glow)
  assert dist.batch_shape == [] and dist.event_shape == [8, 8, 1]
  assert dist.log_prob(tf.zeros([3, 8, 8, 1])).shape == [3]


def test_squeeze_checks_the_side_it_is_given():
  """The image side (inverse, initialize) must split into blocks; the latent side's channels too."""
  sq = gb.Squeeze(2)
  for image_side in (sq.inverse, sq.initialize, sq.inverse_log_det_jacobian):
    with pytest.raises(ValueError, match="height/width .* not divisible by 2"):
      image_side(tf.zeros([1, 5, 4, 4]))
  with pytest.raises(ValueError, match="channel count .* not divisible by 4"):
    sq.forward(tf.zeros([1, 2, 2, 6]))
  assert sq.forward(tf.zeros([1, 3, 5, 4])).shape == [1, 6, 10, 1]  # any latent height/width
  assert sq.inverse(tf.zeros([1, 4, 4, 3])).shape == [1, 2, 2, 12]  # any image channel count
