"""Conditional Glow in the library: p(x | c) for a vector or an image condition."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import glow_tf
from glow_tf import Glow
from glow_tf.config import ConfigError, ModelConfig
from glow_tf.model import GlowModel
from tests import bijector_test_util as util
from tests.test_glow import _count_ops

tfb = tfp.bijectors
tfd = tfp.distributions
F64 = tf.float64
IMAGE = [4, 4, 2]
CONDITIONS = {"vector": [3], "image": [2, 2, 1]}


def _glow(kind, dtype=F64, **kwargs):
  kwargs.setdefault("flow_coupling", "affine")
  return Glow(IMAGE, n_levels=2, depth=2, width=6, dtype=dtype,
              conditioning_shape=CONDITIONS[kind], conditioning_width=3, **kwargs)


def _data(kind, n=2, seed=1, dtype=np.float64):
  rng = np.random.RandomState(seed)
  x = tf.constant(rng.uniform(-.5, .5, [n] + IMAGE).astype(dtype))
  c = tf.constant(rng.standard_normal([n] + CONDITIONS[kind]).astype(dtype))
  return x, c


def _ready(kind, dtype=F64, **kwargs):
  """An initialised, perturbed conditional Glow and data: every condition path matters."""
  glow = _glow(kind, dtype, **kwargs)
  # (A batch large enough for the actnorm statistics of the 1x1 top level.)
  glow.initialize(*_data(kind, n=32, seed=9, dtype=dtype.as_numpy_dtype)[:1],
                  conditioning=_data(kind, n=32, seed=9, dtype=dtype.as_numpy_dtype)[1])
  util.perturb(glow, 0.05)
  x, c = _data(kind, dtype=dtype.as_numpy_dtype)
  return glow, x, c


@pytest.mark.parametrize("kind", sorted(CONDITIONS))
def test_conditional_density_is_the_change_of_variables_density(kind):
  glow, x, c = _ready(kind)
  dist = glow_tf.conditioning.ConditionalTransformedDistribution(
      tfd.Sample(tfd.Normal(tf.constant(0., F64), 1.), glow.latent_size), glow)
  log_prob = dist.log_prob(x, bijector_kwargs={"conditioning": c}).numpy()
  expected = []
  for i in range(2):
    ci = c[i:i + 1]
    eps = glow.inverse(util.fresh(x[i:i + 1]), conditioning=ci).numpy()[0]
    ldj = util.brute_force_log_det(lambda t, ci=ci: glow.inverse(t, conditioning=ci), x[i:i + 1])[0]
    expected.append(-0.5 * np.sum(eps ** 2) - 0.5 * eps.size * np.log(2 * np.pi) + ldj)
  np.testing.assert_allclose(log_prob, expected, atol=1e-8, rtol=0)
  # Exactly invertible for each condition, and the density depends on it.
  for ci in (c, c[::-1], 3. * c):
    eps = glow.inverse(util.fresh(x), conditioning=ci)
    np.testing.assert_allclose(glow.forward(util.fresh(eps), conditioning=ci), x, atol=1e-10)
  other = dist.log_prob(x, bijector_kwargs={"conditioning": c[::-1]}).numpy()
  assert np.all(np.abs(other - log_prob) > 1e-3)


def test_gradient_with_respect_to_the_condition_matches_finite_differences():
  glow, x, c = _ready("image")
  dist = tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(tf.constant(0., F64), 1.), glow.latent_size), glow)

  def f(cond):
    return tf.reduce_sum(dist.log_prob(x + 0., bijector_kwargs={"conditioning": cond}))

  with tf.GradientTape() as tape:
    tape.watch(c)
    value = f(c)
  grad = tape.gradient(value, c).numpy()
  assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 1e-3
  h = 1e-6
  numeric = np.zeros_like(grad)
  flat = c.numpy().reshape(-1)
  for i in range(flat.size):
    up, down = flat.copy(), flat.copy()
    up[i] += h
    down[i] -= h
    numeric.reshape(-1)[i] = (f(tf.constant(up.reshape(c.shape))) -
                              f(tf.constant(down.reshape(c.shape)))).numpy() / (2 * h)
  np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_shared_traces_and_recomputed_gradients_give_the_eager_values_and_gradients(coupling):
  """Eager, traced (shared traces) and traced with recomputed gradients agree, the condition's gradient too."""
  results = []
  for traced, recompute in ((False, False), (True, False), (True, True)):
    glow = _glow("image", flow_coupling=coupling, recompute_gradients=recompute)
    x, c = _data("image", n=32, seed=9)
    glow.initialize(x, conditioning=c)
    util.perturb(glow, 0.05, seed=2)
    x, c = _data("image", n=3, seed=4)
    variables = list(glow.trainable_variables)

    def loss_and_grads(x, c, glow=glow, variables=variables):
      with tf.GradientTape() as tape:
        tape.watch(c)
        z, ildj = glow.inverse_and_log_det(x, conditioning=c)
        loss = tf.reduce_sum(z * z) - tf.reduce_sum(ildj)
      return [loss] + tape.gradient(loss, [c] + variables)

    fn = tf.function(loss_and_grads, autograph=False) if traced else loss_and_grads
    results.append([t.numpy() for t in fn(x, c)])
  for other in results[1:]:
    for a, b in zip(results[0], other):
      np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-9)
  # The conditioning network's weights get gradients (it is trained with the flow).
  assert np.abs(results[0][1]).sum() > 1e-3 and all(np.any(g != 0) for g in results[0][2:])


def test_sampling_draws_for_every_condition_and_compositions_route_it():
  glow, _, c = _ready("vector")
  dist = glow_tf.conditioning.ConditionalTransformedDistribution(
      tfd.Sample(tfd.Normal(tf.constant(0., F64), 1.), glow.latent_size), glow)
  samples = dist.sample(5, bijector_kwargs={"conditioning": c}, seed=(1, 2))
  assert samples.shape == [5, 2] + IMAGE
  # log_prob pairs samples with the conditions by their batch dimensions.
  assert dist.log_prob(samples, bijector_kwargs={"conditioning": c}).shape == [5, 2]
  # Chain and Invert: one call hands the condition to every conditional part.
  flow = tfb.Chain([tfb.Shift(tf.constant(0.25, F64)), glow])
  eps = tf.constant(np.random.RandomState(0).standard_normal([2, glow.latent_size]))
  kwargs = glow_tf.conditioning_kwargs(flow, c)
  np.testing.assert_allclose(flow.forward(eps, **kwargs),
                             glow.forward(eps, conditioning=c) + 0.25, atol=1e-12)
  inverted = tfb.Invert(flow)
  np.testing.assert_allclose(inverted.forward(flow.forward(eps, **kwargs),
                                              **glow_tf.conditioning_kwargs(inverted, c)),
                             eps, atol=1e-10)


def test_log_prob_evaluates_each_network_once_with_a_condition():
  n_levels, depth = 2, 3
  model = GlowModel(image_shape=(16, 16, 3), n_levels=n_levels, depth=depth, width=8,
                    flow_coupling="affine", condition="lowres", condition_factor=4)
  # Per coupling network two 3x3 convolutions, one per split prior, one in the
  # top prior, and the conditioning network once: its trunk (2) and a head per level.
  one_pass = n_levels * depth * 2 + (n_levels - 1) + 1 + 2 + n_levels
  spec = tf.TensorSpec([None, 16, 16, 3], tf.uint8)
  assert _count_ops(model.log_prob, spec, "Conv2D") == one_pass
  assert _count_ops(lambda x: model.losses(x)["loss"], spec, "Conv2D") == one_pass


def _model(**kwargs):
  return GlowModel(image_shape=(8, 8, 1), n_levels=2, depth=2, width=8, flow_coupling="affine",
                   condition="lowres", condition_factor=2, condition_width=4, **kwargs)


def _images(n=4, seed=0):
  return tf.constant(np.random.RandomState(seed).randint(0, 256, [n, 8, 8, 1]).astype(np.uint8))


def test_every_parameter_is_trained_and_survives_a_checkpoint(tmp_path):
  model = _model()
  images = _images()
  model.initialize(images)
  util.perturb(model, 0.05)
  names = {v.name for v in model.trainable_variables}
  assert any("conditioning" in n for n in names)
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(model.losses(images, noise=0.5)["loss"])
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)
  want = model.log_prob(images, noise=0.5).numpy()
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
  other = _model()
  tf.train.Checkpoint(model=other).restore(path).assert_existing_objects_matched()
  np.testing.assert_array_equal(other.log_prob(images, noise=0.5).numpy(), want)
  # Built from the images themselves unless given: the same condition either way.
  np.testing.assert_array_equal(
      model.log_prob(images, noise=0.5, conditioning=model.condition(images)).numpy(), want)


def test_mixed_bfloat16_stays_invertible_with_a_condition():
  model = _model(precision="mixed_bfloat16")
  images = _images()
  model.initialize(images)
  util.perturb(model, 0.05)
  c = model.condition(images)
  x = model.preprocess(images, noise=0.5)
  eps = model.glow.inverse(x, conditioning=c)
  # As without a condition (tests/test_glow.py): exact to float32 rounding for
  # most images, to bfloat16 resolution where a network input crosses a
  # bfloat16 rounding boundary between the directions.
  err = np.abs(model.glow.forward(util.fresh(eps), conditioning=c).numpy()
               - x.numpy()).reshape(4, -1).max(1)
  assert np.sum(err < 2e-5) >= 3 and err.max() < 1e-2, err
  assert model.sample(2, 0.7, conditioning=c, seed=(1, 1)).shape == [2, 4, 8, 8, 1]


def test_conditional_initialisation_is_replica_safe(two_replicas):
  x, c = _data("image", n=16, seed=5, dtype=np.float32)
  single = _glow("image", dtype=tf.float32)
  single.initialize(x, conditioning=c)
  strategy = two_replicas
  with strategy.scope():
    mirrored = _glow("image", dtype=tf.float32)
  dataset = tf.data.Dataset.from_tensor_slices((x, c)).batch(16)
  batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
  tf.function(lambda b: strategy.run(
      lambda x, c: mirrored.initialize(x, conditioning=c), args=b))(batch)
  assert len(mirrored.variables) == len(single.variables) > 20
  for v, want in zip(mirrored.variables, single.variables):
    values = [t.numpy() for t in strategy.experimental_local_results(v)]
    np.testing.assert_array_equal(values[0], values[1], err_msg=v.name)
    np.testing.assert_allclose(values[0], want.numpy(), atol=2e-5, rtol=2e-5, err_msg=v.name)


def test_bad_conditions_say_what_to_do():
  glow = _glow("vector")
  x, c = _data("vector")
  with pytest.raises(ValueError, match="conditional.*pass `conditioning=`"):
    glow.inverse(x)
  with pytest.raises(ValueError, match="event shape"):
    glow.inverse(x, conditioning=tf.zeros([2, 4], F64))
  with pytest.raises(ValueError, match="unconditional"):
    Glow(IMAGE, n_levels=2, depth=1, width=4, dtype=F64).inverse(x, conditioning=c)
  with pytest.raises(ValueError, match="conditioning_shape must be"):
    Glow(IMAGE, n_levels=2, depth=1, width=4, conditioning_shape=[2, 2])
  with pytest.raises(ConfigError, match="divides the image size"):
    ModelConfig(image_shape=(32, 32, 1), n_levels=2, condition="lowres", condition_factor=3)
  with pytest.raises(ConfigError, match="needs RGB"):
    ModelConfig(image_shape=(32, 32, 1), n_levels=2, condition="gray")
  with pytest.raises(ValueError, match="pass conditioning="):
    _model().sample(2)
