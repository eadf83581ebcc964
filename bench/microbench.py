"""Timing helpers shared by the convolution microbenchmarks (`zero_conv.py`, `conv_alternatives.py`).

Import after TensorFlow's log level is set: this module imports TensorFlow.
It measures nothing itself: run those scripts.
"""

import statistics
import time

import numpy as np
import tensorflow as tf


def timed(fn, *args, reps=20, rounds=3):
  """Median ms per call of `tf.function(fn)(*args)` over `rounds` rounds of `reps` calls."""
  fn = tf.function(fn, autograph=False)
  for _ in range(3):
    fn(*args)
  per_call = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    for _ in range(reps):
      out = fn(*args)
    tf.nest.map_structure(np.asarray, out)
    per_call.append((time.perf_counter() - t0) / reps * 1e3)
  return statistics.median(per_call)


def grads(conv):
  """`(x, k, dy) -> [d/dx, d/dk]` of `conv(x, k)` with output gradient `dy`."""
  def run(x, k, dy):
    with tf.GradientTape() as tape:
      tape.watch([x, k])
      y = conv(x, k)
    return tape.gradient(y, [x, k], output_gradients=dy)
  return run


if __name__ == "__main__":
  import argparse
  argparse.ArgumentParser(description=__doc__).parse_args()
  print("microbench.py holds timing helpers; run bench/zero_conv.py or bench/conv_alternatives.py.")
