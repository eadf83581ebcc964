"""Alternatives to TensorFlow's convolution ops at Glow's thin convolution shapes, side by side.

Glow's coupling networks have two 3x3 convolutions with few channels on one
side: the first (half the image's channels in, the hidden width out) and the
zero convolution (hidden width in, a few channels out). TensorFlow's CPU
convolutions run them well below its matmul rate. This prints, for configuration
(a)'s shapes of `vs_tfp_glow.py` (and (b)'s first level), what each
alternative formulation costs, so that the choices in `glow_tf.nn` can be
re-checked on a new machine:

1. the first convolution: `tf.nn.conv2d` with TF's gradients against im2col
   (9 shifted slices concatenated) and one matmul, forward and both gradients;
2. the zero convolution's forward pass: `tf.nn.conv2d` against one matmul
   `x @ K` `[N, 9 * out]` whose 9 taps are shifted and summed (the matmul alone,
   and the shift-and-add as slices, as a depthwise convolution, in tap-major
   layout);
3. the 9 shifts of a thin gradient: padded slices + concat
   (`glow_tf.nn._reversed_taps_3x3`) against `tf.image.extract_patches`;
4. a weight gradient `x^T dy` with large `N`: `transpose_a` against the other
   ways of writing it.

  python bench/conv_alternatives.py
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  argparse.ArgumentParser(description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  from glow_tf import nn
  from microbench import grads, timed

  def conv2d(x, k):
    return tf.nn.conv2d(x, k, 1, "SAME")

  def im2col_conv(x, k):
    _, h, w, c = x.shape
    out = k.shape[-1]
    p = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    patches = tf.concat([p[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], -1)
    y = tf.matmul(tf.reshape(patches, [-1, 9 * c]), tf.reshape(k, [9 * c, out]))
    return tf.reshape(y, [-1, h, w, out])

  rng = np.random.RandomState(0)
  normal = lambda *shape: tf.constant(rng.randn(*shape).astype(np.float32))

  print("1. first convolution [B, H, W, C] -> out: ms (forward | forward + both gradients)")
  for b, h, w, c, out in [(32, 16, 16, 6, 128), (32, 8, 8, 12, 128), (32, 4, 4, 24, 128),
                          (64, 16, 16, 2, 256)]:
    x, k, dy = normal(b, h, w, c), normal(3, 3, c, out), normal(b, h, w, out)
    err = max(float(tf.reduce_max(tf.abs(u - v)))
              for u, v in zip(grads(conv2d)(x, k, dy), grads(im2col_conv)(x, k, dy)))
    print(f"  {str([b, h, w, c]):18s} -> {out:3d}  conv2d {timed(conv2d, x, k):6.2f} | "
          f"{timed(grads(conv2d), x, k, dy):6.2f}   im2col {timed(im2col_conv, x, k):6.2f} | "
          f"{timed(grads(im2col_conv), x, k, dy):6.2f}   (max grad difference {err:.0e})")

  print("2. zero convolution forward [B, H, W, C] -> out: ms")
  for b, h, w, c, out in [(32, 16, 16, 128, 12), (32, 8, 8, 128, 24), (64, 16, 16, 256, 4)]:
    x, k = normal(b, h, w, c), normal(3, 3, c, out)
    k9 = tf.reshape(tf.transpose(k, [2, 0, 1, 3]), [c, 9 * out])
    onehot = np.zeros([3, 3, 9 * out, 1], np.float32)
    for i in range(3):
      for j in range(3):
        onehot[i, j, (3 * i + j) * out:(3 * i + j + 1) * out, 0] = 1.
    onehot = tf.constant(onehot)

    def y9_of(x, k9):
      return tf.reshape(tf.matmul(tf.reshape(x, [-1, c]), k9), [b, h, w, 9 * out])

    def by_slices(y9):
      p = tf.pad(y9, [[0, 0], [1, 1], [1, 1], [0, 0]])
      return tf.add_n([p[:, i:i + h, j:j + w, (3 * i + j) * out:(3 * i + j + 1) * out]
                       for i in range(3) for j in range(3)])

    def by_depthwise(y9):
      z = tf.nn.depthwise_conv2d(y9, onehot, [1, 1, 1, 1], "SAME")
      return tf.reduce_sum(tf.reshape(z, [b, h, w, 9, out]), 3)

    def tap_major(y9):
      t = tf.transpose(tf.reshape(y9, [b, h, w, 9, out]), [3, 0, 1, 2, 4])
      p = tf.pad(t, [[0, 0], [0, 0], [1, 1], [1, 1], [0, 0]])
      return tf.add_n([p[3 * i + j, :, i:i + h, j:j + w, :] for i in range(3) for j in range(3)])

    y9 = y9_of(x, k9)
    want = conv2d(x, k)
    for f in (by_slices, by_depthwise, tap_major):
      np.testing.assert_allclose(f(y9).numpy(), want.numpy(), rtol=1e-3, atol=1e-3)
    print(f"  {str([b, h, w, c]):18s} -> {out:3d}  conv2d {timed(conv2d, x, k):6.2f}   "
          f"matmul {timed(y9_of, x, k9):6.2f} + shift-add: slices {timed(by_slices, y9):5.2f}, "
          f"depthwise {timed(by_depthwise, y9):5.2f}, tap-major {timed(tap_major, y9):5.2f}")

  print("3. the 9 shifts of a thin gradient [B, H, W, out]: ms")
  for b, h, w, out in [(32, 16, 16, 12), (32, 8, 8, 24), (64, 16, 16, 4)]:
    dy = normal(b, h, w, out)
    patches = lambda t: tf.image.extract_patches(t, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1],
                                                 "SAME")
    slices = lambda t, h=h, w=w: nn._reversed_taps_3x3(t, h, w)  # pylint: disable=protected-access
    print(f"  {str([b, h, w, out]):18s}  pad + slices + concat {timed(slices, dy):5.2f}   "
          f"extract_patches {timed(patches, dy):5.2f}")

  print("4. weight gradient x^T dy, x [N, M], dy [N, K]: GFLOP/s")
  for n, m, kk in [(8192, 128, 128), (8192, 128, 108), (2048, 128, 216)]:
    x, dy = normal(n, m), normal(n, kk)
    forms = {
        "transpose_a": lambda x, dy: tf.matmul(x, dy, transpose_a=True),
        "(dy^T x)^T": lambda x, dy: tf.transpose(tf.matmul(dy, x, transpose_a=True)),
        "transpose(x) @ dy": lambda x, dy: tf.matmul(tf.transpose(x), dy),
        "einsum": lambda x, dy: tf.einsum("nm,nk->mk", x, dy),
        "8 chunks": lambda x, dy: tf.reduce_sum(tf.matmul(
            tf.reshape(x, [8, -1, m]), tf.reshape(dy, [8, -1, kk]), transpose_a=True), 0),
    }
    flops = 2. * n * m * kk / 1e6
    print(f"  [{n}, {m}]^T [{n}, {kk}]  " + "   ".join(
        f"{name} {flops / timed(f, x, dy):5.1f}" for name, f in forms.items()))


if __name__ == "__main__":
  main()
