"""The optimiser's update alone, by optimiser, side by side in one process; and its share of a step.

Model (a) (or `--config`) of `vs_tfp_glow.py` is built and initialised once;
fixed random gradients of its weights' shapes are fed to each optimiser's
`apply_gradients` inside a `tf.function`, timed in interleaved rounds:

* `glow`: `glow_tf.optim.GlowOptimizer` (Adamax with Polyak averages, the
  training default): TensorFlow's `ResourceApplyAdaMax` per variable, and
  `ResourceApplyGradientDescent` for its Polyak average;
* `tf_keras`, `keras`: `tf_keras.optimizers.Adam`, Keras 3's `Adam`
  (built first, so each traces once).

Each update call also pays for passing the captured variables into the
function, which a training step pays once for its forward pass anyway. So
the whole training step of the same model (loss, gradients, GlowOptimizer's
update) is timed too, in the same rounds, and each update is given as a
share of it. First-update times include tracing.

  python bench/optimizer_update.py --config=a --rounds=30
  python bench/optimizer_update.py --optimizers=glow,tf_keras
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

OPTIMIZERS = ("glow", "tf_keras", "keras")


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="a")
  p.add_argument("--rounds", type=int, default=30)
  p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                 help="comma-separated: " + ", ".join(OPTIMIZERS))
  args = p.parse_args()
  names = args.optimizers.split(",")
  if not set(names) <= set(OPTIMIZERS):
    p.error(f"--optimizers takes {', '.join(OPTIMIZERS)}; got {args.optimizers!r}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  import vs_tfp_glow
  from glow_tf import optim

  cfg = vs_tfp_glow.CONFIGS[args.config]
  h, w, c = cfg["image_shape"]
  rng = np.random.RandomState(0)
  x = tf.constant(rng.uniform(-.5, .5, [cfg["batch"], h, w, c]).astype(np.float32))
  model = vs_tfp_glow.build_ours(cfg)
  model.glow.initialize(x)
  variables = list(model.trainable_variables)
  grads = [tf.constant(rng.randn(*v.shape).astype(np.float32) * 1e-3) for v in variables]
  n_params = sum(int(np.prod(v.shape)) for v in variables)
  print(f"CPU: {vs_tfp_glow.cpu_description()}")
  print(f"config {args.config}: {len(variables)} weight variables, {n_params:,} parameters")

  def glow_optimizer():
    return optim.GlowOptimizer("adamax", 1e-4, beta2=0.999)

  def make(name):
    if name == "glow":
      optimizer = glow_optimizer()
    elif name == "tf_keras":
      import tf_keras
      optimizer = tf_keras.optimizers.Adam(1e-4)
    else:
      import keras
      optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(variables)
    update = tf.function(lambda: optimizer.apply_gradients(zip(grads, variables)))
    start = time.perf_counter()
    update()
    first = time.perf_counter() - start
    return update, first, optimizer

  runs = {name: make(name) for name in names}

  step_optimizer = glow_optimizer()
  step_optimizer.build(variables)

  @tf.function
  def train_step(x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(model.distribution.log_prob(x))
    step_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  start = time.perf_counter()
  train_step(x).numpy()
  step_first = time.perf_counter() - start

  step_name = "training step"
  times = {name: [] for name in list(runs) + [step_name]}
  for r in range(args.rounds):
    order = list(times)
    for name in order if r % 2 == 0 else order[::-1]:
      start = time.perf_counter()
      if name == step_name:
        train_step(x).numpy()
      else:
        runs[name][0]()
        runs[name][2].iterations.numpy()  # waits for the update
      times[name].append(time.perf_counter() - start)
  step_ms = statistics.median(times[step_name]) * 1e3
  print(f"{'':13s} {'first update':>13s} {'update call':>12s} {'/ step':>7s}")
  for name, (_, first, _) in runs.items():
    ms = statistics.median(times[name]) * 1e3
    print(f"{name:13s} {first:11.2f} s {ms:9.2f} ms {100 * ms / step_ms:6.1f} %")
  print(f"training step with GlowOptimizer (loss, gradients, update): {step_ms:.1f} ms median, "
        f"first {step_first:.2f} s")


if __name__ == "__main__":
  main()
