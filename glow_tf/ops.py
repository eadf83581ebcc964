"""Tensor helpers shared by the layers (`glow_tf.nn`) and the bijectors (`glow_tf.bijectors`).

Shape bookkeeping for image tensors `[B, H, W, C]` and the channel matmul
that replaces 1x1 convolutions. This module imports nothing from glow_tf.
"""

from typing import Callable, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

__all__ = ["fold_batch", "unfold_batch", "num_pixels", "static_hw", "np_dtype",
           "matmul_channels"]

# Type hints: what `tf.convert_to_tensor` accepts (tensors, arrays, Python
# numbers and lists), and a dimension that is a Python int when static, else a
# scalar tensor (as `static_hw` returns).
TensorLike = tf.types.experimental.TensorLike
Dim = Union[int, tf.Tensor]


def fold_batch(t: tf.Tensor, event_ndims: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """Reshapes `t` `[..., *event]` to `[N, *event]`; returns it and the batch shape `[...]`."""
  shape = tf.shape(t)
  batch_shape = shape[:-event_ndims] if event_ndims else shape
  event_shape = shape[tf.rank(t) - event_ndims:]
  flat = tf.reshape(t, tf.concat([[-1], event_shape], axis=0))
  static = t.shape[len(t.shape) - event_ndims:] if t.shape.rank is not None else None
  if static is not None:
    flat = tf.ensure_shape(flat, [None] + static.as_list())
  return flat, batch_shape


def unfold_batch(t: tf.Tensor, batch_shape: tf.Tensor, event_ndims: int) -> tf.Tensor:
  """Inverse of `fold_batch` for a tensor `[N, *event]` (event_ndims may differ)."""
  event_shape = tf.shape(t)[1:] if event_ndims else tf.constant([], tf.int32)
  return tf.reshape(t, tf.concat([batch_shape, event_shape], axis=0))


def num_pixels(t: tf.Tensor) -> Union[float, tf.Tensor]:
  """H * W of a rank-4 tensor `[B, H, W, C]` (a Python float when static)."""
  h, w = t.shape[1], t.shape[2]
  if h is not None and w is not None:
    return float(h * w)
  shape = tf.shape(t)
  return tf.cast(shape[1] * shape[2], t.dtype)


def static_hw(t: tf.Tensor) -> Tuple[Dim, Dim]:
  """`(H, W)` of `[B, H, W, C]`: Python ints when static, else scalar tensors."""
  h, w = t.shape[1], t.shape[2]
  if h is None or w is None:
    shape = tf.shape(t)
    return shape[1], shape[2]
  return h, w


def np_dtype(dtype: Union[tf.DType, np.dtype, str]) -> np.dtype:
  """The numpy dtype of a TensorFlow dtype (`tf.float32` -> `np.float32`)."""
  return np.dtype(tf.as_dtype(dtype).as_numpy_dtype)


def matmul_channels(x: tf.Tensor, kernel: tf.Tensor, transpose_kernel: bool = False,
                    bias: Optional[tf.Tensor] = None,
                    activation: Optional[Callable[[tf.Tensor], tf.Tensor]] = None) -> tf.Tensor:
  """`x` `[..., C]` times `kernel` `[C, out]` over the channel axis: `[..., out]`.

  A reshape to a `[N, C]` matrix and one matmul, which is faster on CPU
  than `einsum` or a 1x1 `conv2d` for Glow's shapes (docs/performance.md).
  With `transpose_kernel`, `kernel` is `[out, C]` and the product uses its
  transpose without materialising it. `bias` `[out]` and `activation` (such
  as `tf.nn.relu`) are applied to the `[N, out]` product before it is
  reshaped back, where TensorFlow fuses them into the matmul (`_FusedMatMul`:
  no separate passes over the output).

  In bfloat16 the bias is added with `+`, not `tf.nn.bias_add`: the gradient
  of `bias_add` is `BiasAddGrad`, whose CPU kernel sums bfloat16 in
  bfloat16, so that a sum over thousands of rows stalls (8,192 rows of 1.0
  sum to 512), where the gradient of `+` is a `Sum`, which accumulates in
  float32.
  """
  c, out = kernel.shape[0], kernel.shape[-1]
  if transpose_kernel:
    c, out = out, c
  shape = x.shape
  y = tf.matmul(tf.reshape(x, [-1, c]), kernel, transpose_b=transpose_kernel)
  if bias is not None:
    y = tf.nn.bias_add(y, bias) if y.dtype != tf.bfloat16 else y + bias
  if activation is not None:
    y = activation(y)
  if shape.is_fully_defined():
    return tf.reshape(y, shape[:-1].as_list() + [out])
  return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [out]], 0))
