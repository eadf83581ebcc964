"""A user's own training loop over glow_tf's bijectors: time to the first step, by optimiser.

The README's library path: `glow_tf.Glow` inside a `tfd.TransformedDistribution`
(here through `GlowModel.distribution`, configuration (a) or (b) of
`vs_tfp_glow.py`), a `tf.function` training step, and a stock optimiser.
Each optimiser runs in a fresh process (so each pays its own tracing) and
reports the time to its first finished step and its median step afterwards:

* `keras`: Keras 3's `keras.optimizers.Adam` (what `tf.optimizers.Adam` is);
* `tf_keras`: `tf_keras.optimizers.Adam` (Keras 2, which TFP builds on);
* `glow`: `glow_tf.optim.GlowOptimizer("adam", polyak=False)`, the
  original's Adam, its slots stacked by shape (a few ops per shape).

`--build` creates each optimiser's slots (`optimizer.build(variables)`)
before the first step; without it they are created inside the first
`tf.function` call, which makes TensorFlow trace the step twice.

  python bench/library_first_step.py --config=a --optimizers=keras,tf_keras,glow
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(config: str, optimizer_name: str, steps: int, build: bool) -> dict:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.path.insert(0, os.path.dirname(HERE))
  sys.path.insert(0, HERE)
  import numpy as np
  import tensorflow as tf
  import vs_tfp_glow
  from glow_tf import optim

  cfg = vs_tfp_glow.CONFIGS[config]
  h, w, c = cfg["image_shape"]
  x = tf.constant(np.random.RandomState(0).uniform(-.5, .5, [cfg["batch"], h, w, c]), tf.float32)
  model = vs_tfp_glow.build_ours(cfg)
  model.glow.initialize(x)
  distribution, variables = model.distribution, list(model.trainable_variables)
  if optimizer_name == "keras":
    import keras
    optimizer = keras.optimizers.Adam(1e-4)
  elif optimizer_name == "tf_keras":
    import tf_keras
    optimizer = tf_keras.optimizers.Adam(1e-4)
  else:
    optimizer = optim.GlowOptimizer("adam", 1e-4, polyak=False)

  if build:
    optimizer.build(variables)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(distribution.log_prob(x))
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  start = time.perf_counter()
  step(x).numpy()
  first = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step(x).numpy()
    times.append(time.perf_counter() - start)
  return {"first": first, "step": statistics.median(times), "variables": len(variables)}


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="a")
  p.add_argument("--optimizers", default="keras,tf_keras,glow")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--build", action="store_true", help="build the slots before the first step")
  p.add_argument("--child", default="")
  args = p.parse_args()
  if args.child:
    print(json.dumps(child(args.config, args.child, args.steps, args.build)))
    return
  sys.path.insert(0, HERE)
  import vs_tfp_glow
  print(f"CPU: {vs_tfp_glow.cpu_description()}; config {args.config}; slots built "
        f"{'before the first step' if args.build else 'in it'}")
  for name in args.optimizers.split(","):
    out = subprocess.run([sys.executable, __file__, f"--config={args.config}", f"--child={name}",
                          f"--steps={args.steps}"] + (["--build"] if args.build else []),
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{name:9s} first step {result['first']:6.1f} s, then {result['step'] * 1e3:6.1f} ms a "
          f"step ({result['variables']} variables)")


if __name__ == "__main__":
  main()
