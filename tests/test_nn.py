"""The coupling networks' layers compute the original's functions, with gradients equal to TF's."""

import ast

import numpy as np
import pytest
import tensorflow as tf

from glow_tf import nn
from glow_tf import normalization
from glow_tf import ops
from glow_tf import tracing


def _value_and_grads(conv, x, kernel, dy):
  with tf.GradientTape() as tape:
    tape.watch([x, kernel])
    y = conv(x, kernel)
  return [y] + tape.gradient(y, [x, kernel], output_gradients=dy)


@pytest.mark.parametrize("matmul_forward", [False, True])
@pytest.mark.parametrize("shape", [(3, 8, 8, 64, 4), (2, 16, 8, 32, 8), (1, 4, 12, 8, 3)])
def test_thin_output_conv2d_equals_conv2d_with_its_gradients(shape, matmul_forward):
  """Value, d/dx and d/dkernel equal `tf.nn.conv2d` "SAME"'s (float64), batch size unknown."""
  b, h, w, c, out = shape
  rng = np.random.RandomState(0)
  x = tf.constant(rng.randn(b, h, w, c))
  kernel = tf.constant(rng.randn(3, 3, c, out))
  dy = tf.constant(rng.randn(b, h, w, out))
  spec = [tf.TensorSpec([None, h, w, c], tf.float64), tf.TensorSpec([3, 3, c, out], tf.float64),
          tf.TensorSpec([None, h, w, out], tf.float64)]
  ours = tf.function(
      lambda x, k, dy: _value_and_grads(
          lambda a, b: nn.thin_output_conv2d(a, b, matmul_forward), x, k, dy),
      input_signature=spec)
  theirs = _value_and_grads(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"), x, kernel, dy)
  for got, want in zip(ours(x, kernel, dy), theirs):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 16, 16, 64, 2), (2, 8, 8, 32, 8), (2, 4, 4, 64, 4),
                                   (2, 8, 8, 4, 32)])
def test_conv2d_3x3_equals_conv2d_on_every_path(shape):
  """Thin outputs (both forward forms), small images and wide outputs all give conv2d's results."""
  b, h, w, c, out = shape
  rng = np.random.RandomState(1)
  x = tf.constant(rng.randn(b, h, w, c))
  kernel = tf.constant(rng.randn(3, 3, c, out))
  dy = tf.constant(rng.randn(b, h, w, out))
  ours = _value_and_grads(nn.conv2d_3x3, x, kernel, dy)
  theirs = _value_and_grads(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"), x, kernel, dy)
  for got, want in zip(ours, theirs):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-10)


def test_thin_output_conv2d_in_bfloat16_is_close_to_float32():
  rng = np.random.RandomState(2)
  x = rng.randn(2, 8, 8, 64).astype(np.float32)
  kernel = (rng.randn(3, 3, 64, 4) * .1).astype(np.float32)
  dy = rng.randn(2, 8, 8, 4).astype(np.float32)
  for matmul_forward in (False, True):
    conv = lambda a, b, mf=matmul_forward: nn.thin_output_conv2d(a, b, mf)
    low = _value_and_grads(conv, *(tf.constant(t, tf.bfloat16) for t in (x, kernel, dy)))
    high = _value_and_grads(conv, *(tf.constant(t) for t in (x, kernel, dy)))
    for got, want in zip(low, high):
      assert got.dtype == tf.bfloat16
      scale = float(tf.reduce_max(tf.abs(want)))
      np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), want.numpy(),
                                 atol=0.03 * scale)


def test_edge_conv_is_the_originals_extra_channel_valid_convolution_then_actnorm():
  """layer(x) == actnorm(VALID conv of [zero-padded x, border indicator] with the full kernel)."""
  rng = np.random.RandomState(3)
  layer = nn.EdgeConv2D(3, 5, 3, seed=0, dtype=tf.float64)
  layer.edge_kernel.assign(rng.randn(3, 3, 5))
  x = tf.constant(rng.randn(2, 6, 7, 3))
  padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  border = tf.pad(tf.zeros([2, 6, 7, 1], tf.float64), [[0, 0], [1, 1], [1, 1], [0, 0]],
                  constant_values=1.)
  full_kernel = tf.concat([layer.kernel, layer.edge_kernel[:, :, None, :]], axis=2)
  conv = tf.nn.conv2d(tf.concat([padded, border], -1), full_kernel, 1, "VALID").numpy()
  # A fresh actnorm is the identity.
  np.testing.assert_allclose(layer(x).numpy(), conv, rtol=1e-12, atol=1e-12)
  # Then the (folded) actnorm (conv + shift) * exp(3 * log_scale), and the activation.
  layer.actnorm.shift.assign(rng.randn(5))
  layer.actnorm.log_scale.assign(0.3 * rng.randn(5))
  want = (conv + layer.actnorm.shift.numpy()) * np.exp(3. * layer.actnorm.log_scale.numpy())
  np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(layer(x, tf.nn.relu).numpy(), np.maximum(want, 0.),
                             rtol=1e-12, atol=1e-12)
  # initialize() sets the actnorm so that the batch's outputs are normalised.
  out = layer.initialize(x).numpy()
  np.testing.assert_allclose(out.mean((0, 1, 2)), 0., atol=1e-10)
  np.testing.assert_allclose(out.std((0, 1, 2)), 1., atol=1e-5)
  np.testing.assert_allclose(layer(x).numpy(), out, rtol=1e-10, atol=1e-10)


def test_zero_conv_output_order_permutes_channels_and_starts_at_zero():
  rng = np.random.RandomState(4)
  layer = nn.ZeroConv2D(32, 4, dtype=tf.float64)
  x = tf.constant(rng.randn(2, 8, 8, 32))
  np.testing.assert_array_equal(layer(x).numpy(), 0.)
  for v in layer.trainable_variables:
    v.assign(rng.randn(*v.shape) * .1)
  order = nn.deinterleaved(4)
  np.testing.assert_allclose(layer(x, order).numpy(), tf.gather(layer(x), order, axis=-1).numpy(),
                             rtol=1e-12, atol=1e-12)


def test_matmul_channels_with_bias_and_activation_equals_the_separate_ops():
  """The fusable form (bias and activation on the [N, out] product) is the 4-D computation."""
  matmul_channels = ops.matmul_channels
  rng = np.random.RandomState(0)
  x = tf.constant(rng.randn(2, 3, 5, 4))
  kernel = tf.constant(rng.randn(4, 6))
  bias = tf.constant(rng.randn(6))
  want = tf.nn.relu(tf.einsum("bhwc,co->bhwo", x, kernel) + bias)
  fn = tf.function(lambda x: matmul_channels(x, kernel, bias=bias, activation=tf.nn.relu),
                   input_signature=[tf.TensorSpec([None, 3, None, 4], tf.float64)])
  np.testing.assert_allclose(fn(x).numpy(), want.numpy(), rtol=1e-12, atol=1e-12)
  transposed = matmul_channels(x, tf.transpose(kernel), transpose_kernel=True, bias=bias)
  np.testing.assert_allclose(transposed.numpy(),
                             (tf.einsum("bhwc,co->bhwo", x, kernel) + bias).numpy(),
                             rtol=1e-12, atol=1e-12)


def _glow_tf_imports(module):
  """The glow_tf modules that `module`'s source imports (`from glow_tf import x` as `glow_tf.x`)."""
  with open(module.__file__) as f:
    tree = ast.parse(f.read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.update(f"{node.module}.{a.name}" for a in node.names)
  return {n for n in names if n.split(".")[0] == "glow_tf"}


def test_layers_sit_below_the_bijectors_and_the_helpers_below_both():
  """nn imports no bijector module; ops, tracing and normalization import nothing of glow_tf."""
  assert not any(n.startswith("glow_tf.bijectors") for n in _glow_tf_imports(nn)), \
      _glow_tf_imports(nn)
  assert {"glow_tf.ops.matmul_channels", "glow_tf.normalization"} <= _glow_tf_imports(nn)
  for module in (ops, tracing, normalization):
    assert _glow_tf_imports(module) == set(), module.__name__


def test_mixed_bfloat16_network_keeps_its_zero_convolution_in_float32():
  """Hidden layers in bfloat16; the shift/log-scale layer sees their output in float32, unrounded."""
  rng = np.random.RandomState(5)
  net = nn.CouplingNetwork(3, 16, 6, seed=0, compute_dtype=tf.bfloat16)
  for v in net.trainable_variables:
    v.assign(rng.randn(*v.shape).astype(np.float32) * .3)
  x = tf.constant(rng.randn(2, 8, 8, 3).astype(np.float32))
  hidden = net.conv2(net.conv1(x, tf.nn.relu), tf.nn.relu)
  assert hidden.dtype == tf.bfloat16
  want = net.conv_out(tf.cast(hidden, tf.float32))
  got = net(x)
  assert got.dtype == tf.float32
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
  # Rounding the output to bfloat16 moves it beyond the tolerance above: the test would see it.
  low = tf.cast(tf.cast(want, tf.bfloat16), tf.float32)
  assert np.max(np.abs(low.numpy() - want.numpy())) > 1e-3 * np.max(np.abs(want.numpy()))


def test_matmul_channels_bias_gradient_in_bfloat16_sums_every_row():
  """TF's CPU BiasAddGrad sums bfloat16 in bfloat16 (8,192 ones give 512); ours must not."""
  x = tf.ones([8192, 4], tf.bfloat16)
  kernel = tf.ones([4, 2], tf.bfloat16)
  bias = tf.zeros([2], tf.bfloat16)
  with tf.GradientTape() as tape:
    tape.watch(bias)
    y = ops.matmul_channels(x, kernel, bias=bias, activation=tf.nn.relu)
    loss = tf.reduce_sum(tf.cast(y, tf.float32))
  np.testing.assert_array_equal(tape.gradient(loss, bias).numpy().astype(np.float32), [8192, 8192])


def test_mixed_bfloat16_network_gradients_match_float32():
  """Every variable's gradient through a bfloat16 coupling network is within bfloat16 rounding of float32's."""
  rng = np.random.RandomState(0)
  x = tf.constant(rng.normal(size=[16, 16, 16, 6]).astype(np.float32))
  weights = tf.constant(rng.uniform(.5, 1.5, size=[16, 16, 16, 12]).astype(np.float32))

  def gradients(compute_dtype):
    net = nn.CouplingNetwork(6, 64, 12, seed=0, compute_dtype=compute_dtype)
    net.initialize(x)
    for i, v in enumerate(net.conv_out.trainable_variables):  # away from the zero start
      v.assign(tf.random.stateless_normal(v.shape, [1, i]) * .05)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(net(x) * weights)
    return dict(zip([v.name for v in net.trainable_variables],
                    tape.gradient(loss, net.trainable_variables)))

  want, got = gradients(None), gradients(tf.bfloat16)
  assert set(got) == set(want) and len(want) == 11
  for name, g in want.items():
    error = float(tf.norm(got[name] - g) / tf.norm(g))
    assert error < .03, (name, error)  # the old bias_add gradient: 0.40-0.47 on conv2's actnorm
