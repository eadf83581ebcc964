"""Where the time to train.py's first finished step goes: build, initialise, trace, optimise, run.

train.py's step is `glow_tf.steps.build_train_step`: one `tf.function`
(batch, loss, gradients, all-reduce, the update gated on their finiteness
inside the graph). This builds configuration `--config` of `vs_tfp_glow.py`
as train.py does (a `GlowModel`, the data-dependent initialisation,
train.py's `GlowOptimizer` (Adamax with Polyak averages) built first, the
default strategy) on synthetic uint8 images, in a fresh process, and times
each phase separately:

* importing TensorFlow and glow_tf;
* the model's construction and its initialisation pass;
* the step's tracing (`get_concrete_function`: Python builds the graph),
  then its first call (TensorFlow's graph optimisations, grappler, and the
  first execution); then the mean of 5 whole steps.

It also counts the ops of the traced step. `--grappler` passes options to
`tf.config.optimizer.set_experimental_options` in that process, to see what
each graph pass costs.

  python bench/first_step.py --config=a
  python bench/first_step.py --config=a --grappler='{"disable_meta_optimizer": true}'
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(config: str, grappler: dict) -> dict:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.path.insert(0, os.path.dirname(HERE))
  sys.path.insert(0, HERE)
  t0 = time.perf_counter()
  import numpy as np
  import tensorflow as tf
  if grappler:
    tf.config.optimizer.set_experimental_options(grappler)
  import vs_tfp_glow
  from glow_tf import optim, steps
  times = {"import": time.perf_counter() - t0}

  cfg = vs_tfp_glow.CONFIGS[config]
  h, w, c = cfg["image_shape"]
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, [4 * cfg["batch"], h, w, c]).astype(np.uint8)
  strategy = tf.distribute.get_strategy()

  start = time.perf_counter()
  model = vs_tfp_glow.build_ours(cfg)
  times["build model"] = time.perf_counter() - start
  start = time.perf_counter()
  model.initialize(tf.constant(images[:cfg["batch"]]))
  times["initialise (data-dependent pass)"] = time.perf_counter() - start
  start = time.perf_counter()
  optimizer = optim.GlowOptimizer("adamax", 1e-3, beta2=0.999)
  optimizer.build(list(model.trainable_variables))
  counter = tf.Variable(0, dtype=tf.int64)
  step = steps.build_train_step(model, optimizer, strategy, cfg["batch"], counter)
  times["optimiser and step objects"] = time.perf_counter() - start

  data = steps.with_noise(tf.data.Dataset.from_tensor_slices({"image": images}).repeat()
                          .batch(cfg["batch"], drop_remainder=True), seed=0, stream=0)
  iterator = iter(strategy.experimental_distribute_dataset(data))
  next(iterator)  # the pipeline's own start-up is not the step's
  fn = step._step  # pylint: disable=protected-access  # the step's one tf.function
  vote = tf.constant(0., tf.float32)
  start = time.perf_counter()
  concrete = fn.get_concrete_function(iterator, vote)
  times["step: trace"] = time.perf_counter() - start
  ops = _ops(concrete)
  start = time.perf_counter()
  fn(iterator, vote)
  int(optimizer.iterations.numpy())
  times["step: first call (optimise + run)"] = time.perf_counter() - start
  first_step = times["step: trace"] + times["step: first call (optimise + run)"]
  start = time.perf_counter()
  for _ in range(5):
    step(iterator)
  times["step afterwards (mean of 5)"] = (time.perf_counter() - start) / 5
  return {"times": times, "first_step": first_step, "ops": ops, "tracings": step.tracing_count()}


def _ops(concrete):
  """Ops of a traced function other than its inputs (each captured variable is a Placeholder)."""
  return sum(op.type != "Placeholder" for op in concrete.graph.get_operations())


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="a")
  p.add_argument("--grappler", default="",
                 help="JSON options for tf.config.optimizer.set_experimental_options, e.g. "
                      "'{\"disable_meta_optimizer\": true}': what each graph pass costs")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(child(args.config, json.loads(args.grappler or "{}"))))
    return
  sys.path.insert(0, HERE)
  import vs_tfp_glow
  print(f"CPU: {vs_tfp_glow.cpu_description()}; config {args.config}, train.py's step"
        + (f"; grappler {args.grappler}" if args.grappler else ""))
  out = subprocess.run([sys.executable, __file__, f"--config={args.config}", "--child",
                        f"--grappler={args.grappler}"],
                       capture_output=True, text=True, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  print(f"{'phase':44s} {'s':>8s}")
  for key, value in result["times"].items():
    print(f"{key:44s} {value:8.3f}")
  print(f"{'first finished step (trace + first call)':44s} {result['first_step']:8.3f}")
  print(f"ops in the step (not counting inputs): {result['ops']}; "
        f"traced {result['tracings']} time(s)")


if __name__ == "__main__":
  main()
