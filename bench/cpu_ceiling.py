"""How close TensorFlow's ops come, at Glow's shapes, to TensorFlow's own best rate on this CPU.

Prints, on this CPU, with TensorFlow's default threads (every core):

1. the reference: the float32 GFLOP/s of a large square matmul
   (`[--reference_size]^2 x [--reference_size]^2`), about the best rate
   TensorFlow's CPU kernels reach here (no compiled code of our own: this
   is a ceiling for TensorFlow's ops, not the hardware's FMA peak);
2. TensorFlow's ops at configuration (a)'s shapes (batch 32, width 128):
   the 1x1 layer's matmul forward and both gradients at the three levels,
   a wide 3x3 convolution (128 -> 128) for comparison, and the thin 3x3
   layers (first convolution 6 -> 128, zero convolution 128 -> 12) at the
   first level; each as ms, GFLOP/s and a share of the reference.

The shares show where Glow's small shapes leave the CPU idle (per-op fixed
costs, thin convolutions) against what TensorFlow does with a shape that
suits it.

  python bench/cpu_ceiling.py
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def timed(fn, repeats):
  """Median seconds per call of `fn` over 5 rounds of `repeats` calls, after 2 warm-up calls."""
  import numpy as np
  fn(), fn()
  times = []
  for _ in range(5):
    start = time.perf_counter()
    for _ in range(repeats):
      fn()
    times.append((time.perf_counter() - start) / repeats)
  return float(np.median(times))


def reference(size):
  """(what, FLOPs, seconds) of TensorFlow's `size` x `size` float32 matmul."""
  import tensorflow as tf
  a, b = tf.random.normal([size, size]), tf.random.normal([size, size])
  matmul = tf.function(lambda: tf.matmul(a, b))
  return (f"matmul [{size}, {size}] x [{size}, {size}]", 2 * size ** 3,
          timed(matmul, max(1, 2 ** 31 // size ** 3)))


def glow_figures(repeats):
  """[(what, FLOPs, seconds)] of TensorFlow's ops at configuration (a)'s shapes."""
  import tensorflow as tf

  def run(fn):
    return timed(tf.function(fn), repeats)

  rows = []
  for level, side in enumerate((16, 8, 4), 1):
    n = 32 * side * side
    x, w = tf.random.normal([n, 128]), tf.random.normal([128, 128])
    dy, b = tf.random.normal([n, 128]), tf.random.normal([128])
    flops = 2 * n * 128 * 128
    rows += [
        (f"1x1 layer, level {level}: relu(x W + b)", flops,
         run(lambda: tf.nn.relu(tf.matmul(x, w) + b))),
        (f"1x1 layer, level {level}: dy W^T", flops,
         run(lambda: tf.matmul(dy, w, transpose_b=True))),
        (f"1x1 layer, level {level}: x^T dy", flops,
         run(lambda: tf.matmul(x, dy, transpose_a=True))),
    ]
  conv = lambda cin, cout: (tf.random.normal([32, 16, 16, cin]), tf.random.normal([3, 3, cin, cout]))
  for cin, cout, what in ((128, 128, "wide 3x3 conv 128 -> 128"),
                          (6, 128, "first conv 6 -> 128"), (128, 12, "zero conv 128 -> 12")):
    xi, k = conv(cin, cout)
    rows.append((f"{what}, level 1", 2 * 8192 * 9 * cin * cout,
                 run(lambda: tf.nn.conv2d(xi, k, 1, "SAME"))))
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reference_size", type=int, default=1024,
                 help="side of the square matmul taken as TensorFlow's best rate")
  p.add_argument("--repeats", type=int, default=40, help="calls per timed round of each op")
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import vs_tfp_glow
  print(f"CPU: {vs_tfp_glow.cpu_description()}; {os.cpu_count()} threads")
  what, flops, seconds = reference(args.reference_size)
  best = flops / seconds / 1e9
  print(f"reference: TensorFlow's {what}, float32: {best:.1f} GFLOP/s")
  print("TensorFlow's ops at configuration (a)'s shapes (batch 32, width 128):")
  print(f"  {'op':46s} {'ms':>7s} {'GFLOP/s':>8s} {'of ref.':>8s}")
  for what, flops, seconds in glow_figures(args.repeats):
    rate = flops / seconds / 1e9
    print(f"  {what:46s} {seconds * 1e3:7.3f} {rate:8.1f} {rate / best:8.0%}")


if __name__ == "__main__":
  main()
