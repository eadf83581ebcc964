"""glow_tf.kernels: the compiled 3x3 convolution equals TensorFlow's, forward and backward."""

import os

import numpy as np
import pytest
import tensorflow as tf

from glow_tf import kernels, nn
from glow_tf.kernels import build as build_lib

CAN_RUN = (os.environ.get(kernels.ENV_SWITCH, "1") != "0"
           and kernels.cpu_can_run()
           and not tf.config.list_physical_devices("GPU"))
needs_kernels = pytest.mark.skipif(not CAN_RUN, reason="no AVX2 + FMA CPU, or disabled")


@pytest.fixture
def no_kernels(monkeypatch):
  """glow_tf as on a machine without the compiled kernels."""
  monkeypatch.setenv(kernels.ENV_SWITCH, "0")
  kernels._reset_for_tests()  # pylint: disable=protected-access
  yield
  monkeypatch.delenv(kernels.ENV_SWITCH)
  kernels._reset_for_tests()  # pylint: disable=protected-access


def _reference(x, k, b, relu):
  y = tf.nn.conv2d(x, k, 1, "SAME") + b
  return tf.nn.relu(y) if relu else y


def _assert_matches(got, want):
  """Equal to float32 rounding of sums in another order (scaled by the largest entry)."""
  assert got.shape == want.shape
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4,
                             atol=1e-5 * float(np.abs(want.numpy()).max()))


def _inputs(shape, out, seed=0):
  rng = np.random.RandomState(seed)
  x = tf.constant(rng.normal(size=shape), tf.float32)
  k = tf.constant(rng.normal(size=[3, 3, shape[3], out]) / np.sqrt(9 * shape[3]), tf.float32)
  b = tf.constant(rng.normal(size=[shape[1], shape[2], out]), tf.float32)
  return x, k, b


@needs_kernels
def test_built_and_available():
  """Where the kernels can run, setup.sh has built them and they load (else say why)."""
  assert kernels.available(), kernels.unavailable_reason()
  assert kernels.unavailable_reason() is None and not kernels.needs_build()


# Shapes that reach every tile of the kernels: output channels 1 and 5 (one
# partial vector; 12-pixel rows), 12 (6-pixel tiles and their 4-pixel tail,
# partial last vector), 20/24/128 (4-pixel tiles), rows not divisible by the
# tile, 1x1 and 2x3 images, one input channel, 64-256 input channels (taps
# taken in groups that fit in L1, with partial vectors too), 6 input channels
# on odd rows (the input gradient's 1-pixel tiles), and more images than
# threads with a partial vector (the kernel gradient's per-thread sums).
SHAPES = [((2, 5, 7, 3), 13), ((3, 16, 16, 6), 128), ((2, 8, 8, 128), 12),
          ((2, 8, 8, 128), 24), ((1, 1, 1, 4), 8), ((2, 2, 3, 1), 1), ((2, 4, 4, 256), 24),
          ((1, 6, 13, 5), 17), ((2, 3, 10, 3), 12), ((2, 8, 8, 128), 5), ((2, 4, 4, 64), 20),
          ((2, 4, 12, 2), 5), ((2, 5, 7, 6), 13), ((2 * (os.cpu_count() or 2) + 1, 6, 6, 3), 13)]


@needs_kernels
@pytest.mark.parametrize("shape,out", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_forward_equals_conv2d(shape, out, relu):
  x, k, b = _inputs(shape, out)
  got = kernels.conv3x3(x, k, b, relu=relu)
  want = _reference(x, k, b, relu)
  assert got.shape == want.shape
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=2e-5)


@needs_kernels
@pytest.mark.parametrize("shape,out", SHAPES)
def test_backprop_filter_equals_tensorflow(shape, out):
  x, _, _ = _inputs(shape, out)
  dy = tf.constant(np.random.RandomState(7).normal(size=shape[:3] + (out,)), tf.float32)
  got = kernels.conv3x3_backprop_filter(x, dy)
  _assert_matches(got, tf.raw_ops.Conv2DBackpropFilter(
      input=x, filter_sizes=[3, 3, shape[3], out], out_backprop=dy, strides=[1, 1, 1, 1],
      padding="SAME"))


@needs_kernels
@pytest.mark.parametrize("shape,out", SHAPES)
def test_backprop_input_equals_tensorflow(shape, out):
  _, k, _ = _inputs(shape, out)
  dy = tf.constant(np.random.RandomState(8).normal(size=shape[:3] + (out,)), tf.float32)
  got = kernels.conv3x3_backprop_input(dy, k)
  _assert_matches(got, tf.raw_ops.Conv2DBackpropInput(
      input_sizes=shape, filter=k, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME"))


@needs_kernels
def test_backprop_filter_bad_shapes_and_empty_batch():
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
    kernels.conv3x3_backprop_filter(tf.zeros([2, 4, 4, 3]), tf.zeros([2, 4, 5, 8]))
  dk = kernels.conv3x3_backprop_filter(tf.zeros([0, 4, 4, 3]), tf.zeros([0, 4, 4, 8]))
  np.testing.assert_array_equal(dk.numpy(), np.zeros([3, 3, 3, 8]))
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
    kernels.conv3x3_backprop_input(tf.zeros([2, 4, 4, 8]), tf.zeros([3, 3, 3, 7]))
  assert kernels.conv3x3_backprop_input(tf.zeros([0, 4, 4, 8]),
                                        tf.zeros([3, 3, 3, 8])).shape == (0, 4, 4, 3)
  # Empty images, no output channels, no input channels.
  np.testing.assert_array_equal(kernels.conv3x3_backprop_filter(
      tf.zeros([2, 0, 4, 3]), tf.zeros([2, 0, 4, 8])).numpy(), np.zeros([3, 3, 3, 8]))
  np.testing.assert_array_equal(kernels.conv3x3_backprop_input(
      tf.zeros([2, 4, 4, 0]), tf.zeros([3, 3, 3, 0])).numpy(), np.zeros([2, 4, 4, 3]))
  assert kernels.conv3x3_backprop_filter(tf.zeros([2, 4, 4, 0]),
                                         tf.zeros([2, 4, 4, 8])).shape == (3, 3, 0, 8)


@needs_kernels
def test_empty_batch_and_zero_channels():
  x, k, b = _inputs((0, 4, 4, 3), 8)
  assert kernels.conv3x3(x, k, b).shape == (0, 4, 4, 8)
  x = tf.zeros([2, 4, 4, 0])
  y = kernels.conv3x3(x, tf.zeros([3, 3, 0, 8]), b, relu=True)
  np.testing.assert_allclose(y.numpy(), np.maximum(np.broadcast_to(b.numpy(), [2, 4, 4, 8]), 0))


@needs_kernels
@pytest.mark.parametrize("shape,out", [((2, 8, 8, 6), 32), ((2, 16, 16, 5), 24),
                                       ((2, 8, 8, 3), 16), ((2, 8, 8, 64), 12),
                                       ((2, 5, 7, 3), 13)])
@pytest.mark.parametrize("relu", [False, True])
def test_gradients_equal_conv2d(shape, out, relu):
  """The registered gradient (the compiled backprops or TF's, by shape, or the
  thin-output matmuls for 64 -> 12 at 8x8) equals autodiff of conv2d + bias (+ ReLU)."""
  x, k, b = _inputs(shape, out, seed=1)
  dy = tf.constant(np.random.RandomState(2).normal(size=shape[:3] + (out,)), tf.float32)
  grads = []
  for f in (kernels.conv3x3, _reference):
    with tf.GradientTape() as tape:
      tape.watch([x, k, b])
      y = f(x, k, b, relu)
    grads.append(tape.gradient(y, [x, k, b], output_gradients=dy))
  for got, want in zip(*grads):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


@needs_kernels
def test_gradients_in_tf_function():
  x, k, b = _inputs((2, 8, 8, 8), 16)

  @tf.function
  def grads(x, k, b):
    with tf.GradientTape() as tape:
      tape.watch([x, k, b])
      loss = tf.reduce_sum(kernels.conv3x3(x, k, b, relu=True) ** 2)
    return tape.gradient(loss, [x, k, b])

  with tf.GradientTape() as tape:
    tape.watch([x, k, b])
    loss = tf.reduce_sum(_reference(x, k, b, True) ** 2)
  for got, want in zip(grads(x, k, b), tape.gradient(loss, [x, k, b])):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-3)


@needs_kernels
def test_bad_shapes_are_errors():
  x, k, b = _inputs((2, 4, 4, 3), 8)
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="bias|Dimensions"):
    kernels.conv3x3(x, k, b[:3])
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
    kernels.conv3x3(x, k[:, :, :2], b)
  with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
    kernels.conv3x3(x, tf.zeros([5, 5, 3, 8]), b)


@needs_kernels
def test_conv2d_3x3_paths_use_the_kernel():
  path = lambda shape, h, wide: nn.conv2d_3x3_path(shape, h, h, wide_vectors=wide)
  assert path((3, 3, 128, 12), 16, False) == "compiled kernel, matmul gradients"
  # Where TensorFlow's convolutions run AVX-512 they win the thin forward pass at 16x16.
  assert path((3, 3, 128, 12), 16, True) == "matmul gradients"
  assert path((3, 3, 128, 24), 8, True) == "compiled kernel, matmul gradients"
  assert nn.conv2d_3x3_path((3, 3, 128, 12), 16, 16) == path(
      (3, 3, 128, 12), 16, kernels.wide_vectors())  # this CPU's rule by default
  for wide in (False, True):
    assert path((3, 3, 6, 128), 16, wide) == "compiled kernel"
  assert nn.conv2d_3x3_path((3, 3, 6, 128), 16, 16) == "compiled kernel"
  assert nn.conv2d_3x3_path((3, 3, 6, 128), 16, 16, tf.bfloat16) == "conv2d"
  assert nn.conv2d_3x3_path((3, 3, 256, 4), 16, 16) == "matmul forward and gradients"
  assert nn.conv2d_3x3_path((3, 3, 2, 256), 16, 16) == "compiled kernel"
  assert nn.conv2d_3x3_path((3, 3, 6, 12), 16, 16) == "conv2d"  # a split prior
  assert nn.conv2d_3x3_path((3, 3, 6, 128), None, None) == "conv2d"


@needs_kernels
def test_gradient_paths_by_shape_and_cpu():
  grads = lambda shape, h, wide: nn.conv3x3_gradient_paths(shape, h, h, wide_vectors=wide)
  assert grads((3, 3, 6, 128), 16, False) == ("compiled kernel", "compiled kernel")
  assert grads((3, 3, 6, 128), 16, True) == ("compiled kernel", "conv2d")
  assert grads((3, 3, 2, 256), 16, True) == ("compiled kernel", "compiled kernel")
  assert grads((3, 3, 12, 128), 8, False) == ("conv2d", "compiled kernel")
  assert grads((3, 3, 4, 256), 8, True) == ("compiled kernel", "conv2d")
  assert grads((3, 3, 24, 128), 4, False) == ("conv2d", "conv2d")


def test_wide_vectors_reads_avx512f():
  assert kernels.wide_vectors({"avx2", "fma", "avx512f"})
  assert not kernels.wide_vectors({"avx2", "fma"})
  assert not kernels.wide_vectors(set())


def test_paths_without_kernels(no_kernels):  # pylint: disable=unused-argument,redefined-outer-name
  assert not kernels.available() and not kernels.needs_build()
  assert "GLOW_TF_KERNELS=0" in kernels.unavailable_reason()
  assert nn.conv2d_3x3_path((3, 3, 128, 12), 16, 16) == "matmul gradients"
  assert nn.conv2d_3x3_path((3, 3, 6, 128), 16, 16) == "conv2d"
  assert nn.conv3x3_gradient_paths((3, 3, 6, 128), 16, 16) == ("conv2d", "conv2d")
  with pytest.raises(RuntimeError, match="GLOW_TF_KERNELS=0"):
    kernels.conv3x3(*_inputs((1, 4, 4, 3), 8))


def _network_outputs_and_grads():
  """A coupling network at Glow's thin shapes: output and gradients."""
  net = nn.CouplingNetwork(6, 64, 12, seed=3)
  x = tf.constant(np.random.RandomState(4).normal(size=[2, 8, 8, 6]), tf.float32)
  net.initialize(x)
  for v in (net.conv_out.kernel, net.conv_out.edge_kernel, net.conv_out.bias):
    v.assign(tf.random.stateless_normal(v.shape, [5, 6]) * 0.1)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = net(x)
    loss = tf.reduce_sum(y * tf.sin(y))
  return [y, *tape.gradient(loss, [x] + list(net.trainable_variables))]


@needs_kernels
def test_network_same_with_and_without_kernels(monkeypatch):
  with_kernels = _network_outputs_and_grads()
  monkeypatch.setenv(kernels.ENV_SWITCH, "0")
  kernels._reset_for_tests()  # pylint: disable=protected-access
  try:
    without = _network_outputs_and_grads()
  finally:
    monkeypatch.delenv(kernels.ENV_SWITCH)
    kernels._reset_for_tests()  # pylint: disable=protected-access
  for a, b in zip(with_kernels, without):
    _assert_matches(a, b)


def test_missing_or_broken_library_falls_back_with_the_fix(monkeypatch, tmp_path):
  if not kernels.cpu_can_run():
    pytest.skip("the loader stops at the CPU check first")
  built = kernels.library_path()
  monkeypatch.delenv(kernels.ENV_SWITCH, raising=False)
  missing = tmp_path / "missing.so"
  monkeypatch.setattr(kernels, "library_path", lambda: str(missing))
  monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
  try:
    kernels._reset_for_tests()  # pylint: disable=protected-access
    assert not kernels.available() and kernels.needs_build()
    assert "python -m glow_tf.kernels.build" in kernels.unavailable_reason()
    missing.write_bytes(b"not a shared library")
    kernels._reset_for_tests()  # pylint: disable=protected-access
    assert not kernels.available()
    assert "does not load" in kernels.unavailable_reason()
    assert "rebuild" in kernels.unavailable_reason()
    if CAN_RUN:  # a library built from older sources lacks a newer op
      monkeypatch.setattr(kernels, "library_path", lambda: built)
      monkeypatch.setattr(kernels, "_OPS", kernels._OPS + ("glow_no_such_op",))  # pylint: disable=protected-access
      kernels._reset_for_tests()  # pylint: disable=protected-access
      assert not kernels.available()
      assert "out of date (no glow_no_such_op)" in kernels.unavailable_reason()
  finally:
    monkeypatch.undo()
    kernels._reset_for_tests()  # pylint: disable=protected-access


def test_build_without_compiler_names_the_fix(monkeypatch, tmp_path):
  if not kernels.cpu_can_run():
    pytest.skip("build() builds nothing on this CPU")
  monkeypatch.setenv("CXX", "no-such-compiler-glow")
  with pytest.raises(RuntimeError, match="g\\+\\+"):
    build_lib.build(str(tmp_path / "k.so"))
  assert not list(tmp_path.iterdir())  # nothing half-written


def test_cpu_flags_parses_cpuinfo():
  text = "processor : 0\nflags\t\t: fpu sse avx2 fma\n"
  assert kernels.cpu_flags(text) == {"fpu", "sse", "avx2", "fma"}
  assert kernels.cpu_flags("no flags here") is None
  assert kernels.cpu_can_run({"sse", "avx2", "fma"})
  assert not kernels.cpu_can_run({"sse", "avx"}) and not kernels.cpu_can_run(set())
  assert nn.native_bfloat16("flags : avx2 amx_bf16") is True
  assert nn.native_bfloat16("flags : avx2 fma") is False


@needs_kernels
def test_model_under_xla_uses_tensorflow_ops():
  """XLA has no kernel for GlowConv3x3: a jit-compiled model must not emit it."""
  import glow_tf  # pylint: disable=import-outside-toplevel
  model = glow_tf.GlowModel(image_shape=(16, 16, 3), n_levels=1, depth=1, width=32)
  x = tf.random.stateless_uniform([2, 16, 16, 3], [1, 2], -.5, .5)
  plain = tf.function(model.distribution.log_prob)
  jit = tf.function(model.distribution.log_prob, jit_compile=True)
  assert "GlowConv3x3" in {op.type for op in _all_ops(plain.get_concrete_function(x).graph)}
  assert "GlowConv3x3" not in {op.type for op in _all_ops(jit.get_concrete_function(x).graph)}
  np.testing.assert_allclose(jit(x).numpy(), plain(x).numpy(), rtol=1e-5)


def _all_ops(graph):
  ops = list(graph.get_operations())
  for f in graph._functions.values():  # pylint: disable=protected-access
    if getattr(f, "graph", None) is not None:
      ops += _all_ops(f.graph)
  return ops
