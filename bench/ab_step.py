"""Paired A/B of train.py's training step: this checkout's glow_tf against another revision's.

Step times on shared machines drift by up to 30% between processes, which
hides changes of a few percent. This runs configuration `--config` of
`vs_tfp_glow.py` in fresh processes, alternating base and new (ABBA order
over `--rounds`), each building train.py's step (`glow_tf.steps.build_train_step`:
the model, its data-dependent initialisation, `GlowOptimizer` with Polyak
averages, the finiteness-gated update) on synthetic images. Each process
reports its first finished step (trace, graph optimisation, first run) and
the median of `--steps` later steps. Printed: both medians over the rounds,
and the median of the per-round ratios new/base (< 1: this checkout is
faster). `--base=HEAD` against an unchanged tree is an A/A run: its ratio
shows the noise floor.

  python bench/ab_step.py --base=HEAD --config=a --rounds=4 --steps=12
  python bench/ab_step.py --base=/path/to/other/checkout --config=b
  python bench/ab_step.py --base=HEAD --config=a --in_process --steps=30

`--base` is a git revision (exported to a temporary directory) or the
directory of another checkout, used as it is. `--in_process` builds both
steps in one process instead (the base's glow_tf copied as package
`glow_tf_base`) and alternates single steps, ABBA: finer for the step time,
while each first step then pays for what the other already loaded.
"""

import argparse
import atexit
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build_step(config: str, package: str = "glow_tf"):
  """train.py's step of `config` with `package`'s glow_tf: `(run one step, seconds to build)`."""
  import numpy as np
  import tensorflow as tf
  import vs_tfp_glow
  optim = importlib.import_module(package + ".optim")
  steps_lib = importlib.import_module(package + ".steps")
  cfg = vs_tfp_glow.CONFIGS[config]
  h, w, c = cfg["image_shape"]
  images = np.random.RandomState(0).randint(0, 256, [4 * cfg["batch"], h, w, c]).astype(np.uint8)
  strategy = tf.distribute.get_strategy()
  start = time.perf_counter()
  model = vs_tfp_glow.build_ours(cfg, package)
  model.initialize(tf.constant(images[:cfg["batch"]]))
  optimizer = optim.GlowOptimizer("adamax", 1e-4, beta2=0.999)
  optimizer.build(list(model.trainable_variables))
  step = steps_lib.build_train_step(model, optimizer, strategy, cfg["batch"],
                                    tf.Variable(0, dtype=tf.int64))
  data = steps_lib.with_noise(tf.data.Dataset.from_tensor_slices({"image": images}).repeat()
                              .batch(cfg["batch"], drop_remainder=True), seed=0, stream=0)
  iterator = iter(strategy.experimental_distribute_dataset(data))
  return (lambda: step(iterator)), time.perf_counter() - start


def child(root: str, config: str, steps: int) -> dict:
  """train.py's step of `config`, with `root`'s glow_tf: first step and median step, seconds."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.path.insert(0, root)
  sys.path.insert(0, HERE)
  from glow_tf import optim
  assert os.path.dirname(os.path.dirname(os.path.abspath(optim.__file__))) == os.path.abspath(root)
  step, build = build_step(config)
  start = time.perf_counter()
  first = step()
  first_time = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return {"build": build, "first_step": first_time, "step": statistics.median(times),
          "first_loss": float(first.sums["loss"])}


def _scratch(prefix: str) -> str:
  """A temporary directory, removed when this process exits."""
  path = tempfile.mkdtemp(prefix=prefix)
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return path


def checkout(base: str) -> str:
  """The directory holding `base`'s `glow_tf`: `base` itself, or a git revision exported to a temporary one."""
  if os.path.isdir(base):
    return base
  into = _scratch("glow_ab_base_")
  archive = subprocess.run(["git", "-C", ROOT, "archive", base, "glow_tf"],
                           check=True, capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
  return into


def as_base_package(base: str) -> str:
  """A temporary directory holding `base`'s glow_tf (see `checkout`) as package `glow_tf_base`.

  Put it on `sys.path` to import both revisions in one process.
  """
  source = os.path.join(checkout(base), "glow_tf")
  into = _scratch("glow_ab_package_")
  shutil.copytree(source, os.path.join(into, "glow_tf_base"))
  for folder, _, files in os.walk(into):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        with open(path) as f:
          text = f.read().replace("glow_tf", "glow_tf_base")
        with open(path, "w") as f:
          f.write(text)
  return into


def in_process(base: str, config: str, steps: int) -> None:
  """Both steps in this process, `base`'s glow_tf as `glow_tf_base`; single steps alternated ABBA."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.path.insert(0, as_base_package(base))
  sys.path.insert(0, ROOT)
  run = {}
  for name, package in (("base", "glow_tf_base"), ("new", "glow_tf")):
    step, _ = build_step(config, package)
    start = time.perf_counter()
    step()
    print(f"  {name}: first step {time.perf_counter() - start:.2f} s (in one process)")
    run[name] = step
  for _ in range(2):
    run["base"]()
    run["new"]()
  times = {"base": [], "new": []}
  for i in range(steps):
    for name in (("base", "new") if i % 2 == 0 else ("new", "base")):
      start = time.perf_counter()
      run[name]()
      times[name].append(time.perf_counter() - start)
  ratio = statistics.median(n / b for n, b in zip(times["new"], times["base"]))
  print(f"step: base median {statistics.median(times['base']) * 1e3:.1f} ms, new median "
        f"{statistics.median(times['new']) * 1e3:.1f} ms; new/base paired median {ratio:.3f}")


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--base", default="HEAD", help="git revision or checkout directory")
  p.add_argument("--config", default="a")
  p.add_argument("--steps", type=int, default=12, help="timed steps per process")
  p.add_argument("--rounds", type=int, default=4, help="processes of each")
  p.add_argument("--in_process", action="store_true", help="both steps in one process (above)")
  p.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    print(json.dumps(child(args.child, args.config, args.steps)))
    return
  base = checkout(args.base)
  sys.path.insert(0, HERE)
  import vs_tfp_glow
  print(f"CPU: {vs_tfp_glow.cpu_description()}; config {args.config}; base {args.base}; "
        + (f"{args.steps} steps each, in one process" if args.in_process
           else f"{args.rounds} rounds of {args.steps} steps"))
  if args.in_process:
    in_process(base, args.config, args.steps)
    return
  results = {"base": [], "new": []}
  for i in range(args.rounds):
    order = ["base", "new"] if i % 2 == 0 else ["new", "base"]
    for name in order:
      out = subprocess.run([sys.executable, __file__, f"--child={base if name == 'base' else ROOT}",
                            f"--config={args.config}", f"--steps={args.steps}"],
                           capture_output=True, text=True, check=True)
      results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(f"  round {i} {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[name][-1].items()),
            flush=True)
  for key in ("first_step", "step"):
    b = [r[key] for r in results["base"]]
    n = [r[key] for r in results["new"]]
    ratio = statistics.median(x / y for x, y in zip(n, b))
    print(f"{key}: base median {statistics.median(b):.3f} s, new median {statistics.median(n):.3f} s; "
          f"new/base per-round median {ratio:.3f}")


if __name__ == "__main__":
  main()
