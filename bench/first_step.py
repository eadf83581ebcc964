"""Where the time to train.py's first finished step goes: build, initialise, trace, optimise, run.

train.py's step is `glow_tf.steps.build_train_step`: with the fused update
one `tf.function` (batch, loss, gradients, all-reduce, the update gated on
their finiteness), otherwise two (`step` computes, `apply` updates). This builds configuration `--config` of
`vs_tfp_glow.py` as train.py does (a `GlowModel`, the data-dependent
initialisation, `GlowOptimizer` built first, the default strategy) on
synthetic uint8 images, and times each phase separately:

* the model's construction and its initialisation pass;
* per function: tracing (`get_concrete_function`: Python builds the graph),
  then its first call (TensorFlow's graph optimisations, grappler, and the
  first execution); then the mean of 5 whole steps;

Each `--optimizer` runs in a fresh process (`fused`: the one-op update, the
default; `per_variable`: `GlowOptimizer(fused=False)`), so each pays its
own tracing.

  python bench/first_step.py --config=a
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(config: str, optimizer_name: str, grappler: dict) -> dict:
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
  optimizer = optim.GlowOptimizer("adamax", 1e-3, beta2=0.999, fused=optimizer_name == "fused")
  optimizer.build(list(model.trainable_variables))
  counter = tf.Variable(0, dtype=tf.int64)
  step = steps.build_train_step(model, optimizer, strategy, cfg["batch"], counter)
  times["optimiser and step objects"] = time.perf_counter() - start

  data = steps.with_noise(tf.data.Dataset.from_tensor_slices({"image": images}).repeat()
                          .batch(cfg["batch"], drop_remainder=True), seed=0, stream=0)
  iterator = iter(strategy.experimental_distribute_dataset(data))
  next(iterator)  # the pipeline's own start-up is not the step's
  # One function where the fused update skips non-finite steps itself;
  # else `step` (compute) then `apply` (glow_tf.steps.TrainStep).
  fns = {"step": step._step, "apply": step._apply}  # pylint: disable=protected-access
  vote = tf.constant(0., tf.float32)
  ops = {}

  def run(name, args):
    start = time.perf_counter()
    concrete = fns[name].get_concrete_function(*args)
    times[f"{name}: trace"] = time.perf_counter() - start
    ops[name] = _ops(concrete)
    start = time.perf_counter()
    out = fns[name](*args)
    int(optimizer.iterations.numpy())
    times[f"{name}: first call (optimise + run)"] = time.perf_counter() - start
    return out

  out = run("step", (iterator, vote))
  if fns["apply"] is not None:
    run("apply", (out[0],))
  first_step = sum(v for k, v in times.items() if k.startswith(("step:", "apply:")))
  start = time.perf_counter()
  for _ in range(5):
    step(iterator)
  times["step afterwards (mean of 5)"] = (time.perf_counter() - start) / 5
  return {"times": times, "first_step": first_step, "ops": ops}


def _ops(concrete):
  """Ops of a traced function other than its inputs (each captured variable is a Placeholder)."""
  return sum(op.type != "Placeholder" for op in concrete.graph.get_operations())


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="a")
  p.add_argument("--optimizers", default="fused,per_variable")
  p.add_argument("--grappler", default="",
                 help="JSON options for tf.config.optimizer.set_experimental_options, e.g. "
                      "'{\"disable_meta_optimizer\": true}': what each graph pass costs")
  p.add_argument("--child", default="")
  args = p.parse_args()
  if args.child:
    print(json.dumps(child(args.config, args.child, json.loads(args.grappler or "{}"))))
    return
  sys.path.insert(0, HERE)
  import vs_tfp_glow
  print(f"CPU: {vs_tfp_glow.cpu_description()}; config {args.config}, train.py's step"
        + (f"; grappler {args.grappler}" if args.grappler else ""))
  results = {}
  for name in args.optimizers.split(","):
    out = subprocess.run([sys.executable, __file__, f"--config={args.config}", f"--child={name}",
                          f"--grappler={args.grappler}"],
                         capture_output=True, text=True, check=True)
    results[name] = json.loads(out.stdout.strip().splitlines()[-1])
  names = list(results)
  keys = list(dict.fromkeys(k for n in names for k in results[n]["times"]))
  cell = lambda n, key, fmt: fmt.format(results[n][key[0]][key[1]]) if key[1] in results[n][key[0]] else "-"
  print(f"{'phase (s)':40s}" + "".join(f"{n:>14s}" for n in names))
  for key in keys:
    print(f"{key:40s}" + "".join(f"{cell(n, ('times', key), '{:.3f}'):>14s}" for n in names))
  print(f"{'first finished step (traces + first calls)':40s}"
        + "".join(f"{results[n]['first_step']:14.3f}" for n in names))
  for fn in ("step", "apply"):
    print(f"{'ops in ' + fn + ' (not counting inputs)':40s}"
          + "".join(f"{cell(n, ('ops', fn), '{:d}'):>14s}" for n in names))


if __name__ == "__main__":
  main()
