"""Tests of the multi-scale Glow bijector and GlowModel."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import glow_tf
import glow_tf.bijectors as gb
from glow_tf import tracing
from glow_tf.config import level_shapes
from glow_tf.glow import Glow
from tests import bijector_test_util as util

tfd = tfp.distributions
tfb = tfp.bijectors
F64 = tf.float64


def uint8_images(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def perturbed_model(seed=0, scale=0.05, **kwargs):
  model = glow_tf.GlowModel(**kwargs)
  labels = np.arange(16) % kwargs["n_classes"] if kwargs.get("ycond") else None
  model.initialize(uint8_images([16] + list(model.image_shape), seed=seed + 100), labels,
                   seed=[seed, 0])
  util.perturb(model, scale, seed)
  return model


# ---- Exact likelihood ------------------------------------------------------------


@pytest.mark.parametrize("image_shape, kwargs", [
    ([4, 4, 2], dict(flow_coupling="affine", learntop=True, n_classes=3)),
    ([8, 8, 1], dict(flow_coupling="additive", flow_permutation="shuffle")),
    ([4, 4, 2], dict(flow_coupling="affine", lu_decomposed=True)),
    ([4, 4, 2], dict(flow_coupling="affine", learntop=True, prior_log_scale_bound=0.02)),
])
def test_log_prob_is_the_change_of_variables_density(image_shape, kwargs):
  glow = Glow(image_shape, n_levels=2, depth=2, width=6, dtype=F64, **kwargs)
  x = tf.constant(np.random.RandomState(1).uniform(-.5, .5, [2] + image_shape))
  glow.initialize(x, labels=tf.constant([0, 2])) if kwargs.get("n_classes") else glow.initialize(x)
  util.perturb(glow, 0.03)
  labels = tf.constant([0, 2])
  bkw = {"labels": labels} if kwargs.get("n_classes") else {}
  dist = tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(tf.constant(0., F64), 1.), glow.latent_size), glow)
  log_prob = dist.log_prob(x, bijector_kwargs=bkw).numpy()

  # Brute force: eps = inverse(x), log N(eps) + log|det d eps / dx|.
  expected = []
  for i in range(2):
    kw = {k: v[i:i + 1] for k, v in bkw.items()}
    eps = glow.inverse(util.fresh(x[i:i + 1]), **kw).numpy()[0]
    ldj = util.brute_force_log_det(lambda t, kw=kw: glow.inverse(t, **kw), x[i:i + 1])[0]
    expected.append(-0.5 * np.sum(eps ** 2) - 0.5 * eps.size * np.log(2 * np.pi) + ldj)
  np.testing.assert_allclose(log_prob, expected, atol=1e-8, rtol=0)
  assert np.ptp(np.array(expected)) > 1e-3  # two different, non-trivial values

  # And the forward log-det, from the Jacobian of the generative map.
  eps = util.fresh(glow.inverse(x, **bkw))
  fldj = glow.forward_log_det_jacobian(eps, event_ndims=1, **bkw)
  np.testing.assert_allclose(fldj, -glow.inverse_log_det_jacobian(util.fresh(x), 3, **bkw),
                             atol=1e-10)
  np.testing.assert_allclose(glow.forward(eps, **bkw), x, atol=1e-10)


def test_a_prior_log_scale_bound_keeps_an_extreme_split_prior_finite():
  """The spike's cause: a split prior's log-scale of -53 puts an image beyond float32's range."""
  images = uint8_images([4, 8, 8, 1], seed=3)
  log_probs = {}
  for bound in (0., 5.):
    model = glow_tf.GlowModel(image_shape=(8, 8, 1), n_levels=2, depth=1, width=8,
                              prior_log_scale_bound=bound)
    model.initialize(images)
    prior = model.glow.priors[0]
    prior.conv.bias.assign(tf.fill(prior.conv.bias.shape, -53.))
    log_probs[bound] = model.log_prob(images, noise=0.5).numpy()
    _, log_scale = prior(tf.zeros([1, 4, 4, 2]))
    assert np.all(log_scale.numpy() >= -bound) if bound else np.all(log_scale.numpy() == -53.)
  assert np.all(log_probs[0.] == -np.inf)
  assert np.all(np.isfinite(log_probs[5.]))


def test_model_log_prob_and_losses_agree_with_the_original_objective():
  model = perturbed_model(image_shape=(8, 8, 3), n_levels=2, depth=2, width=8,
                          flow_coupling=1, n_bits_x=5, learntop=True)
  images = uint8_images([3, 8, 8, 3], seed=2)
  noise = np.random.RandomState(3).uniform(size=images.shape).astype(np.float32)
  x = (np.floor(images / 8.) + noise) / 32. - .5  # the original's preprocessing
  np.testing.assert_allclose(model.preprocess(images, noise), x, atol=1e-7)
  continuous = model.distribution.log_prob(x).numpy()
  discrete = continuous - 8 * 8 * 3 * np.log(32.)
  np.testing.assert_allclose(model.log_prob(images, noise=noise), discrete, rtol=1e-6)
  bpd = -discrete / (8 * 8 * 3 * np.log(2.))
  np.testing.assert_allclose(model.bits_per_dim(images, noise=noise), bpd, rtol=1e-6)
  # One density path: the training objective is bits_per_dim itself.
  np.testing.assert_array_equal(model.losses(images, noise=noise)["bits_x"],
                                model.bits_per_dim(images, noise=noise))


# ---- One pass -------------------------------------------------------------------


def _count_ops(fn, spec, op_types):
  """Ops of the types `op_types` (a `str` or a tuple) executed by one call,
  counting inside called functions."""
  op_types = (op_types,) if isinstance(op_types, str) else tuple(op_types)
  graph_def = tf.function(fn).get_concrete_function(spec).graph.as_graph_def()
  library = {f.signature.name: f for f in graph_def.library.function}

  def count(nodes):
    total = 0
    for node in nodes:
      total += node.op in op_types
      if node.op in ("PartitionedCall", "StatefulPartitionedCall"):
        total += count(library[node.attr["f"].func.name].node_def)
    return total

  return count(graph_def.node)


def test_log_prob_evaluates_each_coupling_network_once():
  n_levels, depth = 2, 4
  model = glow_tf.GlowModel(image_shape=(16, 16, 3), n_levels=n_levels, depth=depth,
                            width=8, flow_coupling=1)
  spec = tf.TensorSpec([None, 16, 16, 3], tf.float32)
  # Each coupling network has two 3x3 convolutions (its 1x1 layer is a matmul)
  # and each split prior one: a single pass holds exactly this many.
  one_pass = n_levels * depth * 2 + (n_levels - 1)
  convs = ("Conv2D",)
  assert _count_ops(model.distribution.log_prob, spec, convs) == one_pass
  assert _count_ops(model.glow.inverse, spec, convs) == one_pass
  uint8_spec = tf.TensorSpec([None, 16, 16, 3], tf.uint8)
  assert _count_ops(model.log_prob, uint8_spec, convs) == one_pass
  assert _count_ops(lambda x: model.losses(x)["loss"], uint8_spec, convs) == one_pass
  # tfp.bijectors.Glow evaluates its networks twice in log_prob.
  peer = tfb.Glow(output_shape=(16, 16, 3), num_glow_blocks=n_levels,
                  num_steps_per_block=depth,
                  coupling_bijector_fn=tfb.GlowDefaultNetwork,
                  exit_bijector_fn=tfb.GlowDefaultExitNetwork)
  peer_dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), 16 * 16 * 3), peer)
  peer_spec = tf.TensorSpec([2, 16, 16, 3], tf.float32)
  assert _count_ops(peer_dist.log_prob, peer_spec, "Conv2D") >= 2 * one_pass


# ---- Encode / decode / shapes ---------------------------------------------------------


@pytest.mark.parametrize("n_bits_x", [8, 5])
def test_decode_inverts_encode_exactly(n_bits_x):
  model = perturbed_model(image_shape=(8, 8, 3), n_levels=3, depth=2, width=8,
                          flow_coupling=1, n_bits_x=n_bits_x)
  images = uint8_images([4, 8, 8, 3], seed=5)
  latents = model.encode(images)
  expected = (np.floor(images / 2 ** (8 - n_bits_x)) * 2 ** (8 - n_bits_x)).astype(np.uint8)
  np.testing.assert_array_equal(model.decode(latents).numpy(), expected)
  assert [z.shape.as_list()[1:] for z in latents] == model.glow.latent_shapes


@pytest.mark.parametrize("n_levels", [1, 2, 3, 4])
def test_latent_shapes_for_every_level_count(n_levels):
  model = glow_tf.GlowModel(image_shape=(16, 16, 3), n_levels=n_levels, depth=1, width=4)
  latents = model.encode(uint8_images([2, 16, 16, 3]))
  shapes = [z.shape.as_list() for z in latents]
  expected = []
  h, c = 16, 3
  for level in range(n_levels):
    h, c = h // 2, c * 4
    if level < n_levels - 1:
      expected.append([2, h, h, c // 2])
      c //= 2
  expected.append([2, h, h, c])
  assert shapes == expected
  assert sum(np.prod(s[1:]) for s in shapes) == 16 * 16 * 3


# ---- Sampling --------------------------------------------------------------------


def test_sampling_temperature():
  model = perturbed_model(image_shape=(8, 8, 1), n_levels=2, depth=2, width=8,
                          flow_coupling=1, learntop=True)
  zero = [tf.zeros([3] + s) for s in model.glow.latent_shapes]
  means = model.decode(zero).numpy()
  np.testing.assert_array_equal(model.sample(3, temperature=0., seed=[1, 2]), means)
  np.testing.assert_array_equal(model.sample(3, temperature=0., seed=[7, 7]), means)
  # Temperature scales the noise at every level.
  eps1 = model.sample_latents(3, 1.0, seed=[4, 2])
  eps07 = model.sample_latents(3, 0.7, seed=[4, 2])
  for a, b in zip(eps1, eps07):
    np.testing.assert_allclose(b, 0.7 * a.numpy(), rtol=1e-6)
  np.testing.assert_array_equal(model.sample(3, 0.7, seed=[4, 2]), model.decode(eps07))
  np.testing.assert_array_equal(model.sample(3, 0.7, seed=[4, 2]), model.sample(3, 0.7, seed=[4, 2]))
  assert not np.array_equal(model.sample(3, 0.7, seed=[4, 2]), model.sample(3, 0.7, seed=[5, 2]))
  assert model.sample(3, 1.0).dtype == tf.uint8
  with pytest.raises(ValueError, match="temperature"):
    model.sample(1, -0.5)


def test_labels_change_samples_of_a_conditional_model():
  model = perturbed_model(image_shape=(8, 8, 1), n_levels=2, depth=1, width=8,
                          ycond=True, n_classes=4)
  util.perturb(model.glow.top_prior.embedding, 0.2, seed=5)  # labels matter
  a = model.sample(2, 0.5, labels=[0, 0], seed=[1, 1]).numpy()
  b = model.sample(2, 0.5, labels=[3, 3], seed=[1, 1]).numpy()
  assert np.mean(a != b) > 0.1
  images = uint8_images([2, 8, 8, 1])
  assert not np.allclose(model.log_prob(images, [0, 0], noise=0.5),
                         model.log_prob(images, [3, 3], noise=0.5))
  with pytest.raises(ValueError, match="labels"):
    model.log_prob(images)
  losses = model.losses(images, [1, 2], noise=0.5)
  assert set(losses) == {"loss", "bits_x", "bits_y", "classification_error"}
  assert model.predict_labels(images).shape == [2, 4]


def test_class_conditioning_through_tfp_kwargs():
  glow = Glow([8, 8, 1], n_levels=2, depth=1, width=4, n_classes=3)
  util.perturb(glow, 0.05)
  dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), glow.latent_size), glow)
  x = dist.sample(4, seed=1, bijector_kwargs={"labels": tf.constant([0, 1, 2, 0])})
  assert x.shape == [4, 8, 8, 1]
  lp = dist.log_prob(x, bijector_kwargs={"labels": tf.constant([0, 1, 2, 0])})
  assert np.all(np.isfinite(lp))
  other = dist.log_prob(x, bijector_kwargs={"labels": tf.constant([1, 2, 0, 1])})
  assert np.all(np.abs(lp - other) > 1e-4)


# ---- bits/dim of an untrained model ----------------------------------------------------


def test_untrained_bits_per_dim_is_the_analytic_value():
  # Fresh model: actnorms are identities, 1x1 convs orthogonal, additive
  # couplings and zero priors are identities: -log p is a Gaussian of x.
  model = glow_tf.GlowModel(image_shape=(16, 16, 3), n_levels=2, depth=2, width=8,
                            flow_coupling=0)
  images = uint8_images([8, 16, 16, 3], seed=9)
  noise = np.random.RandomState(10).uniform(size=images.shape).astype(np.float32)
  x = (images + noise) / 256. - .5
  d = 16 * 16 * 3
  analytic = (0.5 * np.sum(x.reshape(8, -1) ** 2, 1) / d + 0.5 * np.log(2 * np.pi)
              + np.log(256.)) / np.log(2.)
  np.testing.assert_allclose(model.bits_per_dim(images, noise=noise), analytic, rtol=1e-5)
  # Uniform noise images: E|x|^2 = D/12, so about 9.386 bits/dim.
  expected_mean = (1 / 24 + 0.5 * np.log(2 * np.pi) + np.log(256.)) / np.log(2.)
  assert abs(np.mean(model.bits_per_dim(images)) - expected_mean) < 0.02


def test_constant_images_have_finite_bits_per_dim():
  const = np.full([4, 8, 8, 3], 128, np.uint8)
  model = glow_tf.GlowModel(image_shape=(8, 8, 3), n_levels=2, depth=2, width=8,
                            flow_coupling=1)
  assert np.all(np.isfinite(model.bits_per_dim(const)))
  model.initialize(uint8_images([8, 8, 8, 3]))
  assert np.all(np.isfinite(model.bits_per_dim(const)))
  model.initialize(const)  # degenerate init batch: zero variance
  assert np.all(np.isfinite(model.bits_per_dim(const)))


# ---- Memory-free gradients ---------------------------------------------------------------


# A pairwise cover of coupling x permutation x ycond x learntop x precision:
# every pair of values of any two of them appears in some row.
RECOMPUTE_CASES = [
    ("additive", "reverse", False, False, "float32"),
    ("affine", "reverse", True, True, "mixed_bfloat16"),
    ("additive", "shuffle", True, False, "mixed_bfloat16"),
    ("affine", "shuffle", False, True, "float32"),
    ("additive", "invconv", False, True, "mixed_bfloat16"),
    ("affine", "invconv", True, False, "float32"),
]


@pytest.mark.parametrize("coupling, permutation, ycond, learntop, precision", RECOMPUTE_CASES,
                         ids=["-".join(str(v) for v in case) for case in RECOMPUTE_CASES])
def test_recomputed_gradients_equal_ordinary_backprop(coupling, permutation, ycond, learntop,
                                                      precision):
  """In a traced step, as train.py takes it: the same loss gradients with and without recomputation."""
  images = uint8_images([4, 8, 8, 3], seed=11)
  labels = tf.constant([0, 1, 2, 1]) if ycond else None
  grads = []
  for recompute in (False, True):
    model = perturbed_model(image_shape=(8, 8, 3), n_levels=2, depth=2, width=8,
                            flow_coupling=coupling, flow_permutation=permutation,
                            lu_decomposed=permutation == "invconv", learntop=learntop,
                            ycond=ycond, n_classes=3 if ycond else None, precision=precision,
                            recompute_gradients=recompute)

    @tf.function
    def loss_grads(images, model=model):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.losses(images, labels, noise=0.5)["loss"])
      return tape.gradient(loss, model.trainable_variables)

    grads.append([g.numpy() for g in loss_grads(tf.constant(images))])
  # bfloat16 networks reconstruct each step's input to bfloat16 resolution only.
  tol = dict(rtol=1e-3, atol=1e-5) if precision == "float32" else dict(rtol=5e-2, atol=2e-3)
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, **tol)
  assert sum(np.abs(g).sum() for g in grads[0]) > 1e-3


def test_recompute_cases_cover_every_pair():
  values = [sorted({case[i] for case in RECOMPUTE_CASES}, key=str) for i in range(5)]
  for i in range(5):
    for j in range(i + 1, 5):
      pairs = {(case[i], case[j]) for case in RECOMPUTE_CASES}
      assert len(pairs) == len(values[i]) * len(values[j]), (i, j)


# ---- Mixed precision ---------------------------------------------------------------------


def test_mixed_bfloat16_flow_inverts_to_bfloat16_resolution_and_is_close_to_float32():
  kwargs = dict(image_shape=(8, 8, 3), n_levels=2, depth=2, width=16, flow_coupling=1,
                lu_decomposed=True, learntop=True)
  models = {p: perturbed_model(seed=3, precision=p, **kwargs)
            for p in ("float32", "mixed_bfloat16")}
  images = uint8_images([4, 8, 8, 3], seed=5)
  # Same weights (same seeds), so the two differ only in the networks' arithmetic.
  for a, b in zip(*(m.trainable_variables for m in models.values())):
    np.testing.assert_array_equal(a, b)
  bf16 = models["mixed_bfloat16"]
  x = bf16.preprocess(images, noise=0.5)
  eps = bf16.glow.inverse(x)
  # Encoding and decoding evaluate the same bfloat16 network on the same input
  # within a coupling, so each coupling inverts itself exactly. Across layers,
  # float32 rounding can move a network input across a bfloat16 rounding
  # boundary, which changes that network's output by one bfloat16 step: the
  # round trip is exact to float32 rounding for most images, to bfloat16
  # resolution for all (image 2 here crosses one: 1.8e-3 on one CPU).
  err = np.abs(bf16.glow.forward(util.fresh(eps)).numpy() - x.numpy()).reshape(4, -1).max(1)
  assert np.sum(err < 2e-5) >= 3, err
  assert err.max() < 1e-2, err
  fldj = bf16.glow.forward_log_det_jacobian(util.fresh(eps), event_ndims=1)
  ildj = bf16.glow.inverse_log_det_jacobian(util.fresh(x), event_ndims=3)
  np.testing.assert_allclose(fldj, -ildj, rtol=1e-3)
  # bfloat16 is really used (results differ) but stays close to float32.
  bpd = {p: m.bits_per_dim(images, noise=0.5).numpy() for p, m in models.items()}
  assert np.abs(bpd["float32"] - bpd["mixed_bfloat16"]).max() > 1e-6
  np.testing.assert_allclose(bpd["mixed_bfloat16"], bpd["float32"], rtol=2e-2)
  # Gradients reach every (float32) variable and point the same way.
  grads = {}
  for p, m in models.items():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(m.losses(images, noise=0.5)["loss"])
    grads[p] = tape.gradient(loss, m.trainable_variables)
  assert all(g is not None and g.dtype == tf.float32 for g in grads["mixed_bfloat16"])
  flat = {p: np.concatenate([g.numpy().ravel() for g in gs]) for p, gs in grads.items()}
  cosine = flat["float32"] @ flat["mixed_bfloat16"] / (
      np.linalg.norm(flat["float32"]) * np.linalg.norm(flat["mixed_bfloat16"]))
  assert cosine > 0.99, cosine


def test_mixed_bfloat16_log_det_matches_brute_force_jacobian():
  step = gb.FlowStep(4, 8, "invconv", "affine", precision="mixed_bfloat16")
  util.perturb(step, 0.1)
  x = tf.constant(np.random.RandomState(4).standard_normal([2, 4, 4, 4]).astype(np.float32))
  fldj = step.forward_log_det_jacobian(x, event_ndims=3)
  np.testing.assert_allclose(fldj, util.brute_force_log_det(step.forward, x), rtol=1e-4, atol=1e-3)


# ---- Parameters and checkpoints ------------------------------------------------------------


def test_model_parameters_are_tracked_and_checkpointed(tmp_path):
  model = perturbed_model(image_shape=(8, 8, 1), n_levels=2, depth=2, width=8,
                          flow_coupling=1, learntop=True, ycond=True, n_classes=3)
  # Every tf.Variable the checkpoint stores is trainable and listed once.
  assert len({id(v) for v in model.trainable_variables}) == len(model.trainable_variables)
  assert len(model.variables) == len(model.trainable_variables)
  stored = [name for name, _ in tf.train.list_variables(
      tf.train.Checkpoint(model=model).write(os.path.join(tmp_path, "keys")))
            if name.startswith("model/") and name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")]
  assert len(stored) == len(model.trainable_variables)
  images, labels = uint8_images([2, 8, 8, 1]), [0, 2]
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(model.losses(images, labels, noise=0.5)["loss"])
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)
  before = model.bits_per_dim(images, labels, noise=0.5).numpy()
  path = tf.train.Checkpoint(model=model).save(os.path.join(tmp_path, "ckpt"))
  fresh = glow_tf.GlowModel(model.config)
  tf.train.Checkpoint(model=fresh).restore(path).assert_consumed()
  np.testing.assert_array_equal(fresh.bits_per_dim(images, labels, noise=0.5), before)


# ---- Bad configurations --------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_shape=(30, 30, 3), n_levels=2), "not divisible by 2\\^n_levels = 4"),
    (dict(image_shape=(8, 8, 3), n_levels=4), "use n_levels <= 3"),
    (dict(image_shape=(32, 32, 3), depth=0), "depth"),
    (dict(image_shape=(32, 32, 3), width=-4), "width"),
    (dict(image_shape=(32, 32, 3), flow_permutation="rotate"), "flow_permutation"),
    (dict(image_shape=(32, 32, 3), flow_coupling=7), "flow_coupling"),
    (dict(image_shape=(32, 32, 3), n_bits_x=9), "n_bits_x"),
    (dict(image_shape=(32, 32, 3), ycond=True), "n_classes"),
    (dict(image_shape=(32, 32), n_levels=1), "image_shape"),
    (dict(image_shape=(32, 32, 3), precision="float16"), "precision must be one of"),
])
def test_bad_configurations_fail_at_construction(kwargs, message):
  with pytest.raises(ValueError, match=message):
    glow_tf.GlowModel(**kwargs)


def test_bad_inputs_to_the_model():
  model = glow_tf.GlowModel(image_shape=(8, 8, 1), n_levels=2, depth=1, width=4)
  with pytest.raises(ValueError, match="expects"):
    model.log_prob(uint8_images([2, 8, 8, 3]))
  with pytest.raises(ValueError, match="odd|even"):
    glow_tf.bijectors.AffineCoupling(5, 8)
  assert level_shapes([8, 8, 1], 3) == [[4, 4, 2], [2, 2, 4], [1, 1, 16]]


def _step_functions(graph):
  """The functions called from `graph`'s top level (a shared flow step's trace is one), with counts."""
  calls = {}
  for op in graph.get_operations():
    if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
      name = op.get_attr("f").name
      calls[name] = calls.get(name, 0) + 1
  return calls


def test_flow_steps_share_traces_but_not_under_xla():
  model = glow_tf.GlowModel(image_shape=(16, 16, 3), n_levels=2, depth=4, width=8)
  spec = tf.TensorSpec([2, 16, 16, 3], tf.float32)

  def graph(jit):
    return tf.function(model.glow.inverse, jit_compile=jit).get_concrete_function(spec).graph

  def outer_convs(jit):
    return sum(op.type == "Conv2D" for op in graph(jit).get_operations())

  # Plain: the steps' convolutions live in the shared functions (only the split
  # prior's is in the outer graph), one per level, each called by the level's
  # 4 steps; XLA: everything inline, compiled once.
  assert outer_convs(False) == 1
  assert sorted(_step_functions(graph(False)).values()) == [4, 4]
  assert outer_convs(True) == 2 * 4 * 2 + 1


def _perturb_every_variable(module, seed, scale=0.05):
  """Noise on every variable (zero-initialised ones too) but the LU form's permutation matrix."""
  rng = np.random.RandomState(seed)
  for v in module.variables:
    if "permutation_matrix" not in v.name:
      v.assign(v + scale * rng.standard_normal(v.shape).astype(v.dtype.as_numpy_dtype))


@pytest.mark.parametrize("dtype, kwargs", [
    (tf.float32, dict(flow_permutation="invconv", flow_coupling="affine", learntop=True)),
    (F64, dict(flow_permutation="invconv", flow_coupling="affine", lu_decomposed=True,
               recompute_gradients=True)),
    (F64, dict(flow_permutation="reverse", flow_coupling="additive", n_classes=3)),
], ids=["invconv_affine_f32", "lu_affine_recompute", "reverse_additive_ycond"])
def test_shared_traces_give_the_eager_values_and_gradients(dtype, kwargs):
  """Each step computes with its own variables through its kind's shared trace, both directions."""
  depth = 3
  glow = Glow([8, 8, 2], n_levels=2, depth=depth, width=8, dtype=dtype, **kwargs)
  _perturb_every_variable(glow, seed=1)
  rng = np.random.RandomState(2)
  x = tf.constant(rng.uniform(-.5, .5, [3, 8, 8, 2]).astype(dtype.as_numpy_dtype))
  eps = tf.constant(rng.standard_normal([3, glow.latent_size]).astype(dtype.as_numpy_dtype))
  labels = tf.constant([0, 2, 1]) if kwargs.get("n_classes") else None
  kw = {"labels": labels} if labels is not None else {}
  # Random output weights, so that every output entry matters to the gradients.
  w_out = tf.constant(rng.standard_normal([3, glow.latent_size]).astype(dtype.as_numpy_dtype))
  w_img = tf.constant(rng.standard_normal([3, 8, 8, 2]).astype(dtype.as_numpy_dtype))
  variables = list(glow.trainable_variables)

  dist = tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(tf.constant(0., dtype), 1.), glow.latent_size), glow)

  def encode(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      z, ildj = glow.inverse_and_log_det(x, **kw)
      log_prob = dist.log_prob(x + 0., bijector_kwargs=kw)  # a new tensor: no cache hit
      loss = tf.reduce_sum(z * w_out) + tf.reduce_sum(ildj) + tf.reduce_sum(log_prob)
    return [z, ildj, log_prob] + tape.gradient(loss, [x] + variables)

  def decode(eps):
    with tf.GradientTape() as tape:
      tape.watch(eps)
      y, fldj = glow.forward_and_log_det(eps, **kw)
      loss = tf.reduce_sum(y * w_img) + tf.reduce_sum(fldj)
    return [y, fldj] + tape.gradient(loss, [eps] + variables)

  tol = dict(rtol=1e-4, atol=1e-4) if dtype == tf.float32 else dict(rtol=1e-9, atol=1e-9)
  for fn, t, outputs in ((encode, x, ["z", "ildj", "log_prob"]), (decode, eps, ["y", "fldj"])):
    traced = tf.function(fn, autograph=False)
    # The traced version really shares: each function (a level's step, or its
    # gradient) is called by all the level's steps (twice, recomputing gradients).
    calls = _step_functions(traced.get_concrete_function(t).graph)
    assert all(n % depth == 0 for n in calls.values()), (fn.__name__, calls)
    assert sum(calls.values()) >= 2 * 2 * depth, (fn.__name__, calls)
    got, want = traced(t), fn(t)
    names = outputs + ["input"] + [v.name for v in variables]
    assert len(got) == len(want) == len(names)
    for g, w, name in zip(got, want, names):
      assert g is not None and w is not None, name
      np.testing.assert_allclose(g.numpy(), w.numpy(), err_msg=f"{fn.__name__}: {name}", **tol)
    # Gradients are not trivially zero (every variable matters).
    assert all(np.any(w.numpy() != 0) for w in want[len(outputs):]), fn.__name__


def test_a_shared_trace_that_captures_a_variable_fails_loudly():
  traces = tracing.SharedTraces()
  v, w = tf.Variable(2.), tf.Variable(3.)
  scale = lambda params, t: params["v"] * t

  @tf.function
  def shared(t):
    return traces.call("scale", scale, {"v": v}, t) + traces.call("scale", scale, {"v": w}, t)

  assert float(shared(tf.constant(1.))) == 5.
  assert len(traces) == 1
  leaky = lambda params, t: params["v"] * t + v  # reads `v` from its closure

  with pytest.raises(ValueError, match="captures"):
    tf.function(lambda t: traces.call("leaky", leaky, {"v": w}, t))(tf.constant(1.))


def test_a_layer_reading_a_variable_missing_from_its_params_fails_in_a_shared_trace(monkeypatch):
  """A layer whose `params()` forgets a variable it reads cannot run shared with the wrong one."""
  def forgetful_params(self):
    return {"shift": self.shift}  # no log_scale

  def inverse_with(self, params, x):
    return (x + params["shift"]) * tf.exp(3. * self.log_scale), tf.zeros([], x.dtype)

  monkeypatch.setattr(gb.ActNorm, "params", forgetful_params)
  monkeypatch.setattr(gb.ActNorm, "inverse_with", inverse_with)
  glow = Glow([8, 8, 1], n_levels=2, depth=2, width=4, flow_permutation="reverse")
  x = tf.zeros([1, 8, 8, 1])
  glow.inverse(x)  # eager: no sharing, each step reads its own variables
  with pytest.raises(ValueError, match="captures"):
    tf.function(glow.inverse)(x)


def test_each_glow_owns_its_shared_traces():
  """Two Glows of one configuration traced together: each level of each Glow has its function."""
  depth = 2
  glows = [Glow([8, 8, 1], n_levels=2, depth=depth, width=4) for _ in range(2)]
  _perturb_every_variable(glows[1], seed=3)
  fn = tf.function(lambda x: [g.inverse(x) for g in glows])
  x = tf.constant(np.random.RandomState(4).uniform(-.5, .5, [2, 8, 8, 1]).astype(np.float32))
  calls = _step_functions(fn.get_concrete_function(x).graph)
  assert sorted(calls.values()) == [depth] * 4
  for got, glow in zip(fn(x), glows):
    np.testing.assert_allclose(got, glow.inverse(util.fresh(x)), rtol=1e-5, atol=1e-5)
