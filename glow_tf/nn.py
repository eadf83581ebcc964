"""The convolutional layers of Glow's coupling networks and priors.

Plain `tf.Module`s holding `tf.Variable`s (no Keras), so that every parameter
is tracked by the bijectors that own them and by `tf.train.Checkpoint`.

The original pads its "SAME" 3x3 convolutions with an extra input channel that
is 1 on the zero-padded border and 0 inside ("edge bias"), so a filter can tell
padding from a zero activation. That channel's contribution does not depend on
the batch: we compute it once per call as a `[H, W, out]` map from the border
slice of the kernel and add it to an ordinary SAME convolution of the data,
which is the same function as the original's concatenate-and-VALID-convolve
at a fraction of the cost.

Every layer computes with its variables given explicitly: `params()` returns
them as a nested dict (attribute name -> variable or sub-dict) and
`apply(params, x)` is the layer's function of that structure, so that one
trace can serve many layers of the same shape (`glow_tf.tracing`);
`layer(x)` is `layer.apply(layer.params(), x)`.

Speed: every per-channel scale that follows a convolution (the actnorm after
the hidden convolutions, `exp(3 * log_scale)` after the zero convolution) is
folded into the small kernel and a bias instead of being applied to the large
activation, `(conv(x, K) + e + b) * s = conv(x, K * s) + (e + b) * s`, and the
1x1 convolution is a matmul followed by `bias_add`. This is the same function
of the same variables (to float32 rounding) with fewer passes over the
activations, forward and backward.

Mixed precision: with `compute_dtype=tf.bfloat16` the hidden layers keep
float32 variables (and fold the scales in float32) but convolve and multiply
in bfloat16, which hardware with native bfloat16 runs several times faster
(`glow_tf.hardware` says where). The zero convolution after them stays
float32: its outputs are the shift and log-scale of the coupling, and
rounded to bfloat16 they made training diverge in spikes. The 1x1 layer's
bias gradient sums in float32 (`glow_tf.ops.matmul_channels`): TensorFlow's
CPU `BiasAddGrad` sums bfloat16 in bfloat16, far off for the hidden
actnorm's gradients (docs/performance.md). The coupling networks are
the only place mixed precision is used: each coupling inverts itself exactly
whatever precision its network computes in, since encoding and decoding
evaluate the same network on the same input. A whole flow's round
trip is exact to float32 rounding except where float32 rounding in other
layers moves a network input across a bfloat16 rounding boundary: then to
bfloat16 resolution (about 1e-3 on images in [-0.5, 0.5]).
"""

from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import hardware
from glow_tf import normalization
from glow_tf.ops import Dim, matmul_channels, static_hw
from glow_tf.tracing import no_autograph

__all__ = ["EdgeConv2D", "ZeroConv2D", "CouplingNetwork", "LinearZeros", "COMPUTE_DTYPES",
           "compute_dtype", "deinterleaved", "conv2d_3x3", "thin_output_conv2d"]


# The compute dtype of each of `glow_tf.config.PRECISIONS` (None: the variables').
COMPUTE_DTYPES = {"float32": None, "mixed_bfloat16": tf.bfloat16}
assert set(COMPUTE_DTYPES) | {"auto"} == set(config_lib.PRECISIONS)


def compute_dtype(precision: str) -> Optional[tf.DType]:
  """`"float32"` -> None (compute in the variables' dtype); `"mixed_bfloat16"` -> bfloat16; `"auto"`: either.

  `"auto"` is this machine's choice (`glow_tf.hardware.resolve_precision`).
  """
  precision = hardware.resolve_precision(precision)[0]
  if precision not in COMPUTE_DTYPES:
    raise ValueError(f"unknown precision {precision!r}; use one of {sorted(COMPUTE_DTYPES)}.")
  return COMPUTE_DTYPES[precision]


def deinterleaved(num_channels: int) -> Tuple[int, ...]:
  """The channel order `[0, 2, 4, ..., 1, 3, 5, ...]`: outputs `[a0, b0, a1, b1, ...]` as `[a..., b...]`."""
  return tuple(range(0, num_channels, 2)) + tuple(range(1, num_channels, 2))


def _border_patches(height, width, kh, kw, np_dtype):
  """`[H, W, kh, kw]`: the border indicator seen by each filter tap at each pixel."""
  a, b = (kh - 1) // 2, (kw - 1) // 2
  border = np.ones([height + 2 * a, width + 2 * b], np_dtype)
  border[a:a + height, b:b + width] = 0
  patches = np.zeros([height, width, kh, kw], np_dtype)
  for i in range(kh):
    for j in range(kw):
      patches[:, :, i, j] = border[i:i + height, j:j + width]
  return patches


def edge_term(kernel_edge: tf.Tensor, height: Dim, width: Dim) -> tf.Tensor:
  """The border channel's contribution, `[H, W, out]`, for kernel `[kh, kw, out]`."""
  kh, kw = kernel_edge.shape[0], kernel_edge.shape[1]
  if isinstance(height, int) and isinstance(width, int):
    patches = _border_patches(height, width, kh, kw,
                              kernel_edge.dtype.as_numpy_dtype)
    out = kernel_edge.shape[-1]
    flat = tf.matmul(patches.reshape([height * width, kh * kw]),
                     tf.reshape(kernel_edge, [kh * kw, out]))
    return tf.reshape(flat, [height, width, out])
  # Unknown spatial size: convolve the border map itself.
  a, b = (kh - 1) // 2, (kw - 1) // 2
  ones = tf.ones([1, height, width, 1], kernel_edge.dtype)
  border = 1. - tf.pad(ones, [[0, 0], [a, a], [b, b], [0, 0]])
  return tf.nn.conv2d(border, kernel_edge[:, :, None, :], 1, "VALID")[0]


def _reversed_taps_3x3(t, height, width):
  """`[B, H, W, 9 * C]`: the 9 one-pixel shifts of `t` `[B, H, W, C]`, zero-filled.

  Tap `k = 3 * i + j` holds `t[p - (i - 1, j - 1)]` at pixel `p`: the output
  pixel whose 3x3 "SAME" filter reads `p` through tap `(i, j)`.
  """
  padded = tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]])
  return tf.concat([padded[:, 2 - i:2 - i + height, 2 - j:2 - j + width, :]
                    for i in range(3) for j in range(3)], axis=-1)


def _thin_output_grads(x, kernel, dy):
  """`(dx, dK)` of `conv2d(x, kernel, "SAME")` (3x3) as two matmuls; see `thin_output_conv2d`."""
  height, width = static_hw(x)
  channels, out = kernel.shape[2], kernel.shape[3]
  dy9 = tf.reshape(_reversed_taps_3x3(dy, height, width), [-1, 9 * out])
  # [3, 3, C, out] -> [9 * out, C]: row (3i + j) * out + o is K[i, j, :, o].
  k9 = tf.reshape(tf.transpose(kernel, [0, 1, 3, 2]), [9 * out, channels])
  dx = tf.reshape(tf.matmul(dy9, k9), tf.shape(x))
  dk = tf.matmul(tf.reshape(x, [-1, channels]), dy9, transpose_a=True)  # [C, 9 * out]
  dk = tf.transpose(tf.reshape(dk, [channels, 3, 3, out]), [1, 2, 0, 3])
  return dx, dk


def thin_output_conv2d(x: tf.Tensor, kernel: tf.Tensor, matmul_forward: bool = False) -> tf.Tensor:
  """A 3x3 stride-1 "SAME" convolution with matmul backprops, for `out << in`.

  The same function as `tf.nn.conv2d(x, kernel, 1, "SAME")`: that very op, or
  with `matmul_forward` one matmul `x @ K` `[B, H, W, 9 * out]` whose 9 taps
  are shifted and summed (faster when `out` is tiny). Its gradients are two
  matmuls against the 9 shifts of the thin output gradient `dy`
  (`[B, H, W, 9 * out]`, cheap to form):
  `dx = shifts(dy) @ K^T` and `dK = x^T @ shifts(dy)`, one pass over the wide
  `x`. TensorFlow's CPU `Conv2DBackpropFilter`/`Conv2DBackpropInput` are slow
  for this shape (docs/performance.md).

  Args:
    x: `[B, H, W, C]` with static `H`, `W`.
    kernel: `[3, 3, C, out]`, the same dtype as `x`.
    matmul_forward: Python `bool`, see above.
  Returns:
    `[B, H, W, out]`.
  """
  height, width = static_hw(x)
  channels, out = kernel.shape[2], kernel.shape[3]

  @tf.custom_gradient
  def conv(x, kernel):
    if matmul_forward:  # y = sum over taps k of shift_k(x @ K_k): one pass over x
      k9f = tf.reshape(tf.transpose(kernel, [2, 0, 1, 3]), [channels, 9 * out])
      y9 = tf.matmul(tf.reshape(x, [-1, channels]), k9f)
      y9 = tf.reshape(y9, tf.concat([tf.shape(x)[:3], [9 * out]], 0))
      padded = tf.pad(y9, [[0, 0], [1, 1], [1, 1], [0, 0]])
      y = tf.add_n([padded[:, i:i + height, j:j + width, (3 * i + j) * out:(3 * i + j + 1) * out]
                    for i in range(3) for j in range(3)])
    else:
      y = tf.nn.conv2d(x, kernel, 1, "SAME")
    return y, lambda dy: _thin_output_grads(x, kernel, dy)

  return conv(x, kernel)


def conv2d_3x3(x: tf.Tensor, kernel: tf.Tensor, bias: Optional[tf.Tensor] = None, relu: bool = False
               ) -> tf.Tensor:
  """`relu(tf.nn.conv2d(x, kernel, 1, "SAME") + bias)` for a 3x3 kernel.

  Where the output has at most a quarter of the input's channels on an image
  of at least 8x8 (Glow's zero convolutions), differentiated by matmuls
  (`thin_output_conv2d`), with a matmul forward pass from a sixteenth;
  TensorFlow's conv2d elsewhere. The rule is by shape only, the same on
  every device.

  Args:
    x: `[B, H, W, C]`.
    kernel: `[3, 3, C, out]`.
    bias: `None` or `[H, W, out]` (a bias map, the same for every image).
    relu: Python `bool`: apply `tf.nn.relu` last.
  Returns:
    `[B, H, W, out]`.
  """
  h, w = static_hw(x)
  kh, kw, in_c, out_c = kernel.shape
  thin = (kh == 3 and kw == 3 and isinstance(h, int) and isinstance(w, int)
          and h * w >= 64 and 4 * out_c <= in_c)
  if thin:
    y = thin_output_conv2d(x, kernel, matmul_forward=16 * out_c <= in_c)
  else:
    y = tf.nn.conv2d(x, kernel, 1, "SAME")
  if bias is not None:
    y = y + bias
  return tf.nn.relu(y) if relu else y


@no_autograph
class EdgeConv2D(tf.Module):
  """Stride-1 "SAME" convolution with the original's edge-bias channel, then an actnorm.

  `y = actnorm(conv(x, kernel) + edge(edge_kernel))`, where `kernel`
  `[kh, kw, C, out]` and `edge_kernel` `[kh, kw, out]` together are the
  original's `[kh, kw, C + 1, out]` kernel, initialised N(0, 0.05^2). 1x1
  layers have no padding and no edge channel, and their kernel is a `[C, out]`
  matrix. The actnorm (`glow_tf.normalization`, data-dependent init, as the
  original's `conv2d(..., do_actnorm=True)`) is folded into the kernel.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, seed: Optional[int] = None,
               dtype: tf.DType = tf.float32, compute_dtype: Optional[tf.DType] = None, name: str = "conv"):
    super().__init__(name=name)
    self._edge = kernel_size > 1
    self._compute_dtype = compute_dtype
    k = kernel_size
    with self.name_scope:
      init = np.random.RandomState(seed).normal(
          0., 0.05, [k, k, in_channels + int(self._edge), out_channels])
      init = init.astype(dtype.as_numpy_dtype)
      if self._edge:
        self.kernel = tf.Variable(init[:, :, :in_channels], name="kernel")
        self.edge_kernel = tf.Variable(init[:, :, in_channels], name="edge_kernel")
      else:
        self.kernel = tf.Variable(init[0, 0], name="kernel")
      self.actnorm = normalization.ActNormVariables(out_channels, dtype=dtype, name="actnorm")

  def params(self) -> dict:
    """`{"kernel", ["edge_kernel",] "actnorm": {"shift", "log_scale"}}`: the variables."""
    params = {"kernel": self.kernel, "actnorm": self.actnorm.params()}
    if self._edge:
      params["edge_kernel"] = self.edge_kernel
    return params

  def _convolve(self, params, x):
    """x: `[B, H, W, C]` -> `[B, H, W, out]` (before actnorm, unfused)."""
    if not self._edge:
      return matmul_channels(x, params["kernel"])
    y = tf.nn.conv2d(x, params["kernel"], 1, "SAME")
    h, w = static_hw(x)
    return y + edge_term(params["edge_kernel"], h, w)

  def apply(self, params: dict, x: tf.Tensor,
            activation: Optional[Callable[[tf.Tensor], tf.Tensor]] = None) -> tf.Tensor:
    """`activation(actnorm(conv(x)))`, with the actnorm folded into the kernel.

    Args:
      params: the variables' structure, as `params()`.
      x: `[B, H, W, C]`.
      activation: `None` or an elementwise function such as `tf.nn.relu`.
    Returns:
      `[B, H, W, out]`.
    """
    scale = tf.exp(normalization.log_scale(params["actnorm"]))
    shift = params["actnorm"]["shift"]
    kernel = params["kernel"] * scale
    if not self._edge:
      bias = shift * scale
    else:
      h, w = static_hw(x)
      bias = (edge_term(params["edge_kernel"], h, w) + shift) * scale
    if self._compute_dtype is not None:
      x, kernel, bias = (tf.cast(t, self._compute_dtype) for t in (x, kernel, bias))
    if not self._edge:  # matmul, bias and activation fused (`_FusedMatMul`)
      return matmul_channels(x, kernel, bias=bias, activation=activation)
    relu = activation is tf.nn.relu
    y = conv2d_3x3(x, kernel, bias, relu=relu)
    return y if activation is None or relu else activation(y)

  def __call__(self, x: tf.Tensor, activation: Optional[Callable[[tf.Tensor], tf.Tensor]] = None) -> tf.Tensor:
    """`apply` with this layer's variables."""
    return self.apply(self.params(), x, activation)

  def initialize(self, x: tf.Tensor) -> tf.Tensor:
    """Initialises the actnorm from `x`'s batch `[B, H, W, C]`; returns the output before `activation`."""
    h = self._convolve(self.params(), x)
    normalization.initialize(self.actnorm.params(), h)
    return normalization.normalize(self.actnorm.params(), h)


@no_autograph
class ZeroConv2D(tf.Module):
  """The original's `conv2d_zeros`: a zero-initialised 3x3 edge-bias convolution.

  `y = (conv(x) + bias) * exp(3 * log_scale)`, all variables starting at zero
  so the layer outputs zeros at initialisation. With `in_channels=0` it only
  ever sees zeros (the original's learned top prior, `conv2d_zeros` of a
  zero tensor): then only the edge term, bias and scale exist (`on_zeros`).
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dtype: tf.DType = tf.float32,
               name: str = "zero_conv"):
    super().__init__(name=name)
    k = kernel_size
    self._has_kernel = bool(in_channels)
    with self.name_scope:
      if in_channels:
        self.kernel = tf.Variable(tf.zeros([k, k, in_channels, out_channels], dtype),
                                  name="kernel")
      self.edge_kernel = tf.Variable(tf.zeros([k, k, out_channels], dtype), name="edge_kernel")
      self.bias = tf.Variable(tf.zeros([out_channels], dtype), name="bias")
      self.log_scale = tf.Variable(tf.zeros([out_channels], dtype), name="log_scale")

  def params(self) -> dict:
    """`{["kernel",] "edge_kernel", "bias", "log_scale"}`: the variables."""
    params = {"edge_kernel": self.edge_kernel, "bias": self.bias, "log_scale": self.log_scale}
    if self._has_kernel:
      params["kernel"] = self.kernel
    return params

  @staticmethod
  def _scale(params):
    return tf.exp(normalization.LOGSCALE_FACTOR * params["log_scale"])

  @staticmethod
  def _bias_map(params, height, width, scale):
    return (edge_term(params["edge_kernel"], height, width) + params["bias"]) * scale

  def apply(self, params: dict, x: tf.Tensor, out_order: Optional[Sequence[int]] = None) -> tf.Tensor:
    """x: `[B, H, W, C]` -> `[B, H, W, out]`, computed in the variables' dtype.

    A bfloat16 `x` (a mixed-precision coupling network's hidden layer) is
    cast up first: this layer's outputs are a coupling's shift and log-scale
    (or a prior's mean and log-scale), and rounded to bfloat16 they made
    training diverge in spikes (docs/performance.md).

    Args:
      params: the variables' structure, as `params()`.
      x: `[B, H, W, C]`, any float dtype.
      out_order: `None` or a permutation of the output channels (Python ints):
        output channel `i` is then the layer's channel `out_order[i]`. The
        permutation is applied to the small kernel, not to the output.
    """
    scale = self._scale(params)
    kernel = params["kernel"] * scale
    h, w = static_hw(x)
    bias_map = self._bias_map(params, h, w, scale)
    if out_order is not None:
      # Exact: a product with a 0/1 matrix (cheaper to differentiate than gather).
      perm = tf.constant(np.eye(len(out_order))[:, list(out_order)], kernel.dtype)
      kernel = matmul_channels(kernel, perm)
      bias_map = matmul_channels(bias_map, perm)
    return conv2d_3x3(tf.cast(x, kernel.dtype), kernel, bias_map)

  def __call__(self, x: tf.Tensor, out_order: Optional[Sequence[int]] = None) -> tf.Tensor:
    """`apply` with this layer's variables."""
    return self.apply(self.params(), x, out_order)

  def on_zeros(self, params: dict, height: int, width: int) -> tf.Tensor:
    """The output for an all-zero input, `[H, W, out]` (no convolution needed)."""
    return self._bias_map(params, height, width, self._scale(params))


@no_autograph
class CouplingNetwork(tf.Module):
  """NN() of the paper: 3x3 conv -> actnorm -> ReLU -> 1x1 conv -> actnorm -> ReLU -> zero 3x3 conv.

  Maps `[B, H, W, in]` to `[B, H, W, out]`; outputs zeros at initialisation.
  With `conditioning_channels=F > 0` (a conditional coupling), conditioning
  features `[B, H, W, F]` (or `[B, F]`, broadcast over the pixels) join the
  hidden activations at the 1x1 convolution's input: the condition reaches
  every output at the cost of `F` more inputs to the cheapest layer, not to
  the 3x3 one.
  """

  def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, seed: Optional[int] = 0,
               dtype: tf.DType = tf.float32, out_order: Optional[Sequence[int]] = None,
               compute_dtype: Optional[tf.DType] = None, conditioning_channels: int = 0,
               name: str = "nn"):
    """Creates the network.

    Args:
      in_channels, hidden_channels, out_channels: Python `int`s.
      seed: Python `int` or `None`, seeds the hidden kernels' initialisation.
      dtype: float dtype of the variables.
      out_order: `None` or a permutation of the output channels (see
        `ZeroConv2D.apply`); the variables keep the original's layout.
      compute_dtype: `None` (compute in `dtype`) or `tf.bfloat16` (mixed
        precision: float32 variables and output, bfloat16 arithmetic in the
        two hidden layers, float32 in the zero convolution).
      conditioning_channels: Python `int` `F`: the channels of the
        conditioning features `apply` takes (0: none).
      name: Python `str`.
    """
    super().__init__(name=name)
    self._out_order = None if out_order is None else tuple(int(i) for i in out_order)
    self._hidden_channels = hidden_channels
    self._conditioning_channels = int(conditioning_channels)
    with self.name_scope:
      self.conv1 = EdgeConv2D(in_channels, hidden_channels, 3, seed, dtype, compute_dtype,
                              "conv1")
      self.conv2 = EdgeConv2D(hidden_channels + self._conditioning_channels, hidden_channels, 1,
                              None if seed is None else seed + 1, dtype, compute_dtype, "conv2")
      self.conv_out = ZeroConv2D(hidden_channels, out_channels, 3, dtype, "conv_out")

  @property
  def hidden_channels(self) -> int:
    """The width of the hidden layers."""
    return self._hidden_channels

  def params(self) -> dict:
    """`{"conv1", "conv2", "conv_out"}`: the layers' variables (see their `params`)."""
    return {"conv1": self.conv1.params(), "conv2": self.conv2.params(),
            "conv_out": self.conv_out.params()}

  def apply(self, params: dict, x: tf.Tensor, features: Optional[tf.Tensor] = None) -> tf.Tensor:
    """x: `[B, H, W, in]` -> `[B, H, W, out]`, with the variables `params` (as `params()`).

    `features`: the conditioning features (`conditioning_channels > 0` only).
    Under mixed precision the hidden layers compute in bfloat16 and the zero
    convolution in float32 (`ZeroConv2D.apply`).
    """
    h = self.conv1.apply(params["conv1"], x, tf.nn.relu)
    h = self.conv2.apply(params["conv2"], self._with_features(h, features), tf.nn.relu)
    return self.conv_out.apply(params["conv_out"], h, self._out_order)

  def _with_features(self, h, features):
    if not self._conditioning_channels:
      return h
    features = tf.cast(features, h.dtype)
    if features.shape.rank == 2:
      features = tf.broadcast_to(features[:, None, None, :],
                                 tf.concat([tf.shape(h)[:3], tf.shape(features)[-1:]], 0))
    return tf.concat([h, features], -1)

  def __call__(self, x: tf.Tensor, features: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`apply` with this network's variables."""
    return self.apply(self.params(), x, features)

  def initialize(self, x: tf.Tensor, features: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Data-dependent init of the two actnorms from `x` `[B, H, W, in]`; returns the output."""
    h = tf.nn.relu(self.conv1.initialize(x))
    h = tf.nn.relu(self.conv2.initialize(self._with_features(h, features)))
    return self.conv_out(h, self._out_order)


@no_autograph
class LinearZeros(tf.Module):
  """The original's `linear_zeros`: `(x @ W + b) * exp(3 * log_scale)`, all zero-initialised."""

  def __init__(self, in_features: int, out_features: int, dtype: tf.DType = tf.float32,
               name: str = "linear_zeros"):
    super().__init__(name=name)
    with self.name_scope:
      self.kernel = tf.Variable(tf.zeros([in_features, out_features], dtype), name="kernel")
      self.bias = tf.Variable(tf.zeros([out_features], dtype), name="bias")
      self.log_scale = tf.Variable(tf.zeros([out_features], dtype), name="log_scale")

  def params(self) -> dict:
    """`{"kernel", "bias", "log_scale"}`: the variables."""
    return {"kernel": self.kernel, "bias": self.bias, "log_scale": self.log_scale}

  def apply(self, params: dict, x: tf.Tensor) -> tf.Tensor:
    """x: `[B, in]` -> `[B, out]`, with the variables `params` (as `params()`)."""
    return ((tf.matmul(x, params["kernel"]) + params["bias"])
            * tf.exp(normalization.LOGSCALE_FACTOR * params["log_scale"]))

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    """`apply` with this layer's variables."""
    return self.apply(self.params(), x)
