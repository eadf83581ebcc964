"""Variational dequantisation: q(u | x) is a density on (0, 1)^D, and its bounds of log P(x)."""

import dataclasses
import io
import json

import numpy as np
import pytest
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import dequantization
from glow_tf import scoring
from glow_tf import train_lib
from glow_tf.model import GlowModel
from tests import bijector_test_util as util
from tests.test_train import small_config

F64 = tf.float64


@pytest.mark.parametrize("sampling", ["encode", "generate"])
def test_q_is_a_normalised_density_on_the_unit_cube(sampling):
  """log q(u | x) is the change of variables from eps: against the brute-force Jacobian of u(eps)."""
  q = dequantization.VariationalDequantization([2, 2, 2], depth=2, width=4, condition_width=3,
                                               dtype=F64, sampling=sampling)
  rng = np.random.RandomState(0)
  centres = tf.constant(rng.uniform(-.5, .5, [3, 2, 2, 2]))
  q.initialize(centres, tf.constant(rng.uniform(0., 1., [3, 2, 2, 2])))
  util.perturb(q, 0.05)
  eps = tf.constant(rng.standard_normal([3, 2, 2, 2]))
  u, log_q = q.sample(centres, eps)
  assert np.all((u.numpy() > 0) & (u.numpy() < 1))
  for i in range(3):
    ldj = util.brute_force_log_det(lambda e, i=i: q.sample(centres[i:i + 1], e)[0], eps[i:i + 1])[0]
    log_n = -0.5 * np.sum(eps[i].numpy() ** 2) - 4 * np.log(2 * np.pi)
    np.testing.assert_allclose(log_q[i].numpy(), log_n - ldj, atol=1e-8)
  # Another image, another distribution.
  assert np.abs(q.sample(-centres, eps)[1].numpy() - log_q.numpy()).min() > 1e-4


def _toy(dequant, sampling="encode"):
  """A 2x2x1 "image" model with 2 bits: its bin integrals can be computed on a grid."""
  model = GlowModel(image_shape=(2, 2, 1), n_levels=1, depth=2, width=8, flow_coupling="affine",
                    n_bits_x=2, dequantization=dequant, dequant_depth=2, dequant_width=8,
                    dequant_sampling=sampling)
  images = tf.constant([[[[0], [64]], [[128], [192]]], [[[255], [255]], [[0], [128]]]], tf.uint8)
  model.initialize(tf.tile(images, [8, 1, 1, 1]), seed=[1, 1])
  util.perturb(model.glow, 0.3, seed=3)
  return model, images


def test_importance_weighted_bounds_approach_the_exact_discrete_likelihood():
  model, images = _toy("variational")
  # The exact log P(x): p integrated over each image's bin, midpoint rule on a 14^4 grid.
  m = 14
  axes = (np.arange(m) + .5) / m
  grid = np.stack(np.meshgrid(*[axes] * 4, indexing="ij"), -1).reshape(-1, 2, 2, 1)
  exact = []
  for image in images:
    log_p = model.log_prob(tf.repeat(image[None], len(grid), 0), noise=tf.constant(grid, tf.float32),
                           dtype=F64, dequantization="uniform").numpy()
    exact.append(np.log(np.mean(np.exp(log_p - log_p.max()))) + log_p.max())
  exact = np.array(exact)
  # K-sample importance-weighted estimates with q as the proposal, over many draws.
  n = 400
  means = []
  for k in (1, 4, 32):
    noise = tf.random.stateless_uniform([n * k * 2, 2, 2, 1], [7, k])
    log_w = model.log_prob(tf.tile(images, [n * k, 1, 1, 1]), noise=noise, dtype=F64).numpy()
    log_w = log_w.reshape(n, k, 2)
    estimate = np.log(np.mean(np.exp(log_w - log_w.max(1, keepdims=True)), 1)) + log_w.max(1)
    mean, se = estimate.mean(0), estimate.std(0) / np.sqrt(n)
    assert np.all(mean < exact + 3 * se + 1e-6), (k, mean, se, exact)  # a lower bound
    means.append(mean)
  means = np.array(means)
  assert np.all(means[1] > means[0]) and np.all(means[2] > means[1]), means  # tighter with K
  assert np.all(exact - means[2] < 0.5 * (exact - means[0])), (means, exact)  # towards exact


def test_uniform_scoring_of_a_variational_model_is_p_alone():
  model, images = _toy("variational")
  noise = tf.random.stateless_uniform([2, 2, 2, 1], [1, 2])
  uniform = GlowModel(dataclasses.replace(model.config, dequantization="uniform"))
  for a, b in zip(uniform.glow.trainable_variables, model.glow.trainable_variables):
    a.assign(b)
  np.testing.assert_allclose(model.log_prob(images, noise=noise, dequantization="uniform"),
                             uniform.log_prob(images, noise=noise), rtol=1e-6)


def test_variational_training_is_the_same_on_two_replicas_and_scores_with_q(tmp_path,
                                                                            two_replicas):
  results = []
  for name, strategy in (("one", tf.distribute.get_strategy()), ("two", two_replicas)):
    config = small_config(tmp_path / name, max_steps=2, epochs=1)
    config = dataclasses.replace(config, model=dataclasses.replace(
        config.model, depth=1, width=8, dequantization="variational", dequant_depth=1,
        dequant_width=8))
    trainer = train_lib.prepare(config, strategy=strategy, stream=io.StringIO())
    assert trainer.train() == 2
    results.append([v.numpy() for v in trainer.variables])
  assert any("dequantization" in v.name for v in trainer.variables)
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with open(tmp_path / "one" / "test.txt") as f:
    assert '"dequantization": "variational"' in f.read()
  lines = []  # the score names its proposal
  scoring.run(config_lib.ScoreConfig(logdir=str(tmp_path / "one"), max_images=8, batch_size=8,
                                     n_dequant_samples=2), log=lines.append)
  assert any("variational dequantisation (q as the proposal)" in line for line in lines)


def _tiny_scales(model):
  """q with one actnorm's scale tiny: generating divides by it (overflow on ~15% of draws)."""
  actnorm = model.dequantizer.flow.levels[0][-1].actnorm
  actnorm.log_scale.assign(tf.fill(actnorm.log_scale.shape, -28.8))
  return model


def test_sampling_q_by_encoding_does_not_overflow_where_generating_does():
  noise = tf.random.stateless_uniform([400, 2, 2, 1], [3, 4])
  for sampling, overflowing in (("generate", True), ("encode", False)):
    model, images = _toy("variational", sampling)
    log_w = _tiny_scales(model).log_prob(tf.tile(images, [200, 1, 1, 1]), noise=noise).numpy()
    assert np.any(~np.isfinite(log_w)) == overflowing, sampling


@pytest.mark.parametrize("dequant", ["uniform", "variational"])
def test_a_config_json_without_dequant_sampling_samples_q_as_it_was_trained(dequant):
  """(A uniform run's resume with its old flags finds no difference.)"""
  config = small_config("/tmp/unused")
  config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                 dequantization=dequant))
  d = json.loads(config.to_json())
  del d["model"]["dequant_sampling"]
  assert config.model.dequant_sampling == "encode"
  legacy = config_lib.RunConfig.from_dict(d)
  assert legacy.model.dequant_sampling == ("generate" if dequant == "variational" else "encode")
  assert bool(config_lib.resume_differences(legacy, config)) == (dequant == "variational")


def test_each_pixels_noise_comes_from_its_own_block():
  """At initialisation q's couplings are the identity, so (sampling by encoding) u at a pixel
  depends on eps only within its 2x2 squeeze block: the logits are laid out on the image as
  the condition is."""
  q = dequantization.VariationalDequantization([4, 4, 2], depth=2, width=4, condition_width=3)
  rng = np.random.RandomState(1)
  centres = tf.constant(rng.uniform(-.5, .5, [1, 4, 4, 2]), tf.float32)
  q.initialize(tf.tile(centres, [8, 1, 1, 1]), tf.constant(rng.uniform(0., 1., [8, 4, 4, 2]),
                                                          tf.float32))
  eps = tf.constant(rng.standard_normal([1, 4, 4, 2]), tf.float32)
  with tf.GradientTape() as tape:
    tape.watch(eps)
    u = q.sample(centres, eps)[0]
  jacobian = tape.jacobian(u, eps).numpy().reshape(4, 4, 2, 4, 4, 2)
  for i in range(4):
    for j in range(4):
      outside = np.ones([4, 4], bool)
      outside[i // 2 * 2:i // 2 * 2 + 2, j // 2 * 2:j // 2 * 2 + 2] = False
      by_input_pixel = jacobian[i, j].transpose(1, 2, 0, 3)  # [h, w, c_out, c_in]
      assert np.abs(by_input_pixel[outside]).max() == 0, (i, j)
      assert np.abs(by_input_pixel[~outside]).max() > 0, (i, j)


def test_a_draw_on_which_q_overflows_is_redrawn_when_scoring():
  """A q sampled by generating (the first version's, kept for its runs) can overflow float32
  for rare noise. score.py then takes the image's next draw (k + K, k + 2K, ...) for it: the
  estimate is the K-sample one under q restricted to where it is finite."""
  model, images = _toy("variational", "generate")
  _tiny_scales(model)
  k, n = 3, 16
  examples = tf.data.Dataset.from_tensor_slices(
      {"image": tf.tile(images, [n // 2, 1, 1, 1]), "index": tf.range(n, dtype=tf.int64)})
  nats = scoring.Scorer(model, n_dequant_samples=k).score(
      scoring.ImageSet(examples, n, None, "toy"), batch_size=8).nats
  expected, redrawn = [], 0
  for i in range(n):
    image = images[i % 2][None]
    log_w = []
    for draw in range(k):
      for r in range(scoring.MAX_REDRAWS + 1):
        noise = scoring.dequantization_noise(tf.constant([i]), model.image_shape, 0, draw + r * k)
        value = model.log_prob(image, noise=noise, dtype=F64).numpy()[0]
        if np.isfinite(value):
          break
        redrawn += 1
      log_w.append(value)
    expected.append(-(np.logaddexp.reduce(log_w) - np.log(k)))
  assert redrawn > 0  # (the test meets overflowing draws)
  np.testing.assert_allclose(nats, expected, rtol=1e-5)  # (one image at a time vs batches of 8)
