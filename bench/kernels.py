"""glow_tf's compiled CPU kernels against TensorFlow's, op by op, at Glow's thin shapes.

For each shape of configurations (a) and (b) of `vs_tfp_glow.py` that the
kernels serve, prints the median time per call of TensorFlow's op(s) and of
the kernel, and their ratio, so that `glow_tf.nn`'s choice of path can be
re-checked on a new machine:

1. forward `relu(conv2d(x, K) + bias)` of the coupling network's first
   convolution (TF: Conv2D, then add and ReLU; the kernel: one pass);
2. forward `conv2d(x, K) + bias` of the zero convolution;
3. the first convolution's kernel gradient (TF: Conv2DBackpropFilter);
4. the first convolution's input gradient (TF: Conv2DBackpropInput).

Needs the kernels built (`python -m glow_tf.kernels.build`).

  python bench/kernels.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (what, x shape [N, H, W, C], out channels); (a) is 32x32x3 with 3 levels and
# width 128 at batch 32, (b) 32x32x1 with 2 levels and width 256 at batch 64.
FIRST = [("(a) level 1", (32, 16, 16, 6), 128), ("(a) level 2", (32, 8, 8, 12), 128),
         ("(a) level 3", (32, 4, 4, 24), 128), ("(b) level 1", (64, 16, 16, 2), 256),
         ("(b) level 2", (64, 8, 8, 4), 256)]
ZERO = [("(a) level 1", (32, 16, 16, 128), 12), ("(a) level 2", (32, 8, 8, 128), 24),
        ("(a) level 3", (32, 4, 4, 128), 48), ("(b) level 2", (64, 8, 8, 256), 8)]


def main():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  from glow_tf import kernels
  from microbench import timed

  if not kernels.available():
    sys.exit(f"bench/kernels.py: {kernels.unavailable_reason()}")
  strides = [1, 1, 1, 1]

  def row(name, shape, out, tf_ms, ours_ms):
    flops = 2 * np.prod(shape) * 9 * out
    print(f"| {name} | `{list(shape)}` -> {out} | {tf_ms:.2f} ({flops / tf_ms / 1e6:.0f}) "
          f"| {ours_ms:.2f} ({flops / ours_ms / 1e6:.0f}) | {tf_ms / ours_ms:.2f}x |", flush=True)

  header = "| shape | x -> out | TF: ms (GFLOP/s) | kernel: ms (GFLOP/s) | speed-up |\n|---|---|---|---|---|"
  rng = np.random.RandomState(0)

  def data(shape, out):
    x = tf.constant(rng.normal(size=shape), tf.float32)
    k = tf.constant(rng.normal(size=[3, 3, shape[3], out]), tf.float32)
    b = tf.constant(rng.normal(size=[shape[1], shape[2], out]), tf.float32)
    dy = tf.constant(rng.normal(size=shape[:3] + (out,)), tf.float32)
    return x, k, b, dy

  print("1. first convolution, forward relu(conv2d + bias)\n" + header)
  for name, shape, out in FIRST:
    x, k, b, _ = data(shape, out)
    row(name, shape, out,
        timed(lambda x, k, b: tf.nn.relu(tf.nn.conv2d(x, k, 1, "SAME") + b), x, k, b),
        timed(lambda x, k, b: kernels.conv3x3(x, k, b, relu=True), x, k, b))
  print("\n2. zero convolution, forward conv2d + bias\n" + header)
  for name, shape, out in ZERO:
    x, k, b, _ = data(shape, out)
    row(name, shape, out, timed(lambda x, k, b: tf.nn.conv2d(x, k, 1, "SAME") + b, x, k, b),
        timed(lambda x, k, b: kernels.conv3x3(x, k, b), x, k, b))
  print("\n3. first convolution, kernel gradient\n" + header)
  for name, shape, out in FIRST:
    x, k, _, dy = data(shape, out)
    row(name, shape, out,
        timed(lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=k.shape, out_backprop=dy, strides=strides,
            padding="SAME"), x, dy),
        timed(kernels.conv3x3_backprop_filter, x, dy))
  print("\n4. first convolution, input gradient\n" + header)
  for name, shape, out in FIRST:
    x, k, _, dy = data(shape, out)
    row(name, shape, out,
        timed(lambda k, dy: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x.shape, filter=k, out_backprop=dy, strides=strides,
            padding="SAME"), k, dy),
        timed(kernels.conv3x3_backprop_input, dy, k))


if __name__ == "__main__":
  main()
