"""Glow's zero convolutions: TF's conv2d kernels vs `glow_tf.nn.thin_output_conv2d`.

The last layer of every coupling network is a 3x3 convolution from the hidden
width (128-512) down to a few channels (the shift and scale of half the
image's channels). TensorFlow's CPU kernels for the backprops of such a thin
convolution are slow; `thin_output_conv2d` computes them as matmuls against
the 9 shifts of the thin output gradient (and, with `matmul_forward`, the
forward pass as one matmul whose 9 taps are shifted and summed).

`glow_tf.nn.conv2d_3x3` (the zero convolutions' op) picks by shape only, the
same on every device: matmul gradients where `out * 4 <= in` on images of at
least 8x8, with the matmul forward pass too from `out * 16 <= in`;
TensorFlow's conv2d elsewhere. This prints, for the zero convolutions of
configurations (a) and (b) of `vs_tfp_glow.py`, the time of the forward pass
and of the forward pass plus both gradients, each both ways, TF's two
backprop kernels alone, and which path `conv2d_3x3` takes there (read from
the ops of its traced gradient, not from the rule above).

  python bench/zero_conv.py
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# [batch, height, width, hidden width] -> out channels: (a) and (b)'s levels.
SHAPES = [(32, 16, 16, 128, 12), (32, 8, 8, 128, 24), (32, 4, 4, 128, 48),
          (64, 16, 16, 256, 4), (64, 8, 8, 256, 8)]


def path_of_conv2d_3x3(x, k):
  """Which path `glow_tf.nn.conv2d_3x3` takes for `x`, `k`: from the ops of its traced gradient."""
  import tensorflow as tf
  from glow_tf import nn

  def forward_and_grads(x, k):
    with tf.GradientTape() as tape:
      tape.watch([x, k])
      y = nn.conv2d_3x3(x, k)
    return tape.gradient(y, [x, k], output_gradients=tf.ones_like(y))

  graph = tf.function(forward_and_grads, autograph=False).get_concrete_function(x, k).graph
  ops = {op.type for op in graph.get_operations()}
  if ops & {"Conv2DBackpropInput", "Conv2DBackpropFilter"}:
    return "conv2d"
  return "matmul gradients" if "Conv2D" in ops else "matmul forward and gradients"


def main():
  argparse.ArgumentParser(description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  from glow_tf import nn
  from microbench import grads, timed

  print(f"{'[B, H, W, C] -> out':24s} {'path':28s} | {'forward ms':>15s} | "
        f"{'fwd + grads ms':>15s} | TF's Conv2DBackpropInput, ...Filter ms")
  print(f"{'':24s} {'':28s} | {'conv2d   ours':>15s} | {'conv2d   ours':>15s} |")
  for b, h, w, c, out in SHAPES:
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(b, h, w, c).astype(np.float32))
    k = tf.constant(rng.randn(3, 3, c, out).astype(np.float32) * .05)
    dy = tf.constant(rng.randn(b, h, w, out).astype(np.float32))
    path = path_of_conv2d_3x3(x, k)
    mm_fwd = path == "matmul forward and gradients"
    ours = lambda a, kk, mm_fwd=mm_fwd: nn.thin_output_conv2d(a, kk, matmul_forward=mm_fwd)
    tf_conv = lambda a, kk: tf.nn.conv2d(a, kk, 1, "SAME")
    fwd = (timed(tf_conv, x, k), timed(ours, x, k))
    both = (timed(grads(tf_conv), x, k, dy), timed(grads(ours), x, k, dy))
    dx = timed(lambda d, kk: tf.raw_ops.Conv2DBackpropInput(
        input_sizes=[b, h, w, c], filter=kk, out_backprop=d, strides=[1, 1, 1, 1],
        padding="SAME"), dy, k)
    dk = timed(lambda a, d: tf.raw_ops.Conv2DBackpropFilter(
        input=a, filter_sizes=[3, 3, c, out], out_backprop=d, strides=[1, 1, 1, 1],
        padding="SAME"), x, dy)
    print(f"{str([b, h, w, c]) + ' -> ' + str(out):24s} {path:28s} | {fwd[0]:6.2f} {fwd[1]:7.2f} "
          f"| {both[0]:6.2f} {both[1]:7.2f} | {dx:6.2f} {dk:7.2f}", flush=True)
  print("\n'ours' is thin_output_conv2d at every shape (with the matmul forward pass where "
        "conv2d_3x3 uses it); 'path' is what conv2d_3x3 (the zero convolutions' op) uses there.")


if __name__ == "__main__":
  main()
