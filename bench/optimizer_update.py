"""The optimiser's update alone, by optimiser, side by side in one process; and its share of a step.

Model (a) (or `--config`) of `vs_tfp_glow.py` is built and initialised once;
fixed random gradients of its weights' shapes are fed to each optimiser's
`apply_gradients` inside a `tf.function`, timed in interleaved rounds:

* `fused`: `glow_tf.optim.GlowOptimizer` (Adamax with Polyak averages, the
  training default) with the compiled kernels: one op for all weights;
* `per_variable`: the same optimiser with `fused=False`: TensorFlow's
  `ResourceApplyAdaMax` and `ResourceApplyGradientDescent`, per variable
  (what it did before the fused op);
* `tf_keras`, `keras`: `tf_keras.optimizers.Adam`, Keras 3's `Adam`
  (built first, so each traces once).

Each update call also pays for passing the captured variables into the
function, which a training step pays once for its forward pass anyway. So
the whole training step of (a) (loss, gradients, update) is timed too, in
the same rounds, once with each GlowOptimizer path, and TensorFlow's
profiler measures the fused op's own time inside that step: its share of
the step is the figure issue 20's 3% is about. First-update times include
tracing.

  python bench/optimizer_update.py --config=a --rounds=30
"""

import argparse
import tempfile
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def profiled_op_ms(fn, steps, op_type, logdir):
  """Mean time (ms) per call of `fn` spent in ops of type `op_type`, from TensorFlow's profiler."""
  import glob
  import tensorflow as tf
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  tf.profiler.experimental.start(logdir)
  for _ in range(steps):
    fn()
  tf.profiler.experimental.stop()
  space = xplane_pb2.XSpace()
  with open(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))[0], "rb") as f:
    space.ParseFromString(f.read())
  total_ps = 0
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        if names.get(event.metadata_id, "").endswith(":" + op_type):
          total_ps += event.duration_ps
  return total_ps / 1e9 / steps


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="a")
  p.add_argument("--rounds", type=int, default=30)
  p.add_argument("--optimizers", default="fused,per_variable,tf_keras,keras")
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  import vs_tfp_glow
  from glow_tf import kernels, optim

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
  print(f"config {args.config}: {len(variables)} weight variables, {n_params:,} parameters; "
        f"kernels: {kernels.unavailable_reason() or 'available'}")

  def make(name):
    if name in ("fused", "per_variable"):
      optimizer = optim.GlowOptimizer("adamax", 1e-4, beta2=0.999, fused=name == "fused")
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

  runs = {}
  for name in args.optimizers.split(","):
    runs[name] = make(name)

  def make_step(fused):
    step_optimizer = optim.GlowOptimizer("adamax", 1e-4, beta2=0.999, fused=fused)
    step_optimizer.build(variables)

    @tf.function
    def train_step(x):
      with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model.distribution.log_prob(x))
      step_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return loss

    start = time.perf_counter()
    train_step(x).numpy()
    return train_step, time.perf_counter() - start

  steps = {"step, fused": make_step(True), "step, per-var": make_step(False)}
  times = {name: [] for name in list(runs) + list(steps)}
  for r in range(args.rounds):
    names = list(runs) + list(steps)
    for name in names if r % 2 == 0 else names[::-1]:
      start = time.perf_counter()
      if name in steps:
        steps[name][0](x).numpy()
      else:
        runs[name][0]()
        runs[name][2].iterations.numpy()  # waits for the update
      times[name].append(time.perf_counter() - start)
  step_ms = statistics.median(times["step, fused"]) * 1e3
  print(f"{'':13s} {'first update':>13s} {'update call':>12s} {'/ step':>7s}")
  for name, (_, first, _) in runs.items():
    ms = statistics.median(times[name]) * 1e3
    print(f"{name:13s} {first:11.2f} s {ms:9.2f} ms {100 * ms / step_ms:6.1f} %")
  for name, (_, first) in steps.items():
    print(f"training {name}: {statistics.median(times[name]) * 1e3:.1f} ms median, "
          f"first {first:.2f} s")
  ratios = [a / b for a, b in zip(times["step, fused"], times["step, per-var"])]
  print(f"fused/per-variable step, paired median: {statistics.median(ratios):.3f}")
  if kernels.available():
    op_ms = profiled_op_ms(lambda: steps["step, fused"][0](x).numpy(), 5, "GlowOptimizerUpdate",
                           tempfile.mkdtemp())
    print(f"the fused op inside the training step (profiler, 5 steps): {op_ms:.2f} ms, "
          f"{100 * op_ms / step_ms:.1f} % of the step")


if __name__ == "__main__":
  main()
