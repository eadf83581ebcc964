"""Paired A/B of training-step time: the working tree's glow_tf against a git revision's, in one process.

Step times on shared machines drift by up to 30% between processes, which
hides changes of a few percent. This builds configuration `--config` of
`vs_tfp_glow.py` twice in one process, once from the working tree's
`glow_tf` and once from `--base` (a git revision, exported to a temporary
directory under another package name), and times their training steps
alternately (ABBA order), so drift hits both. It prints both medians and the
median of the per-pair ratios new/base (< 1: the working tree is faster), and
checks that both compute the same loss. `--base=HEAD` against an unchanged tree
is an A/A run: its ratio shows the noise floor.

The compiled kernels (`glow_tf.kernels`, gitignored) exist once per process:
the base loads the working tree's library and uses the gradient the working
tree registers for it (a second registration would fail), so both run the
same kernels; `GLOW_TF_KERNELS=0` compares them on TensorFlow's ops.

`--base=no-kernels` compares the working tree with itself traced without
the compiled kernels (`glow_tf.kernels.disabled()`): TensorFlow's ops only.

  python bench/ab_step.py --base=HEAD --config=a --steps=20
  python bench/ab_step.py --base=no-kernels --config=a
"""

import argparse
import importlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def export_base(ref, into):
  """`glow_tf` at git `ref` as package `glow_tf_base` under directory `into`."""
  archive = subprocess.run(["git", "-C", ROOT, "archive", ref, "glow_tf"],
                           check=True, capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
  os.rename(os.path.join(into, "glow_tf"), os.path.join(into, "glow_tf_base"))
  kernels_dir = os.path.join(ROOT, "glow_tf", "kernels")
  for folder, _, files in os.walk(os.path.join(into, "glow_tf_base")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        with open(path) as f:
          text = f.read().replace("glow_tf", "glow_tf_base")
        # One library and one gradient of its ops per process (see above).
        text = text.replace('@tf.RegisterGradient("GlowConv3x3")\n', "")
        text = text.replace("_HERE = os.path.dirname(os.path.abspath(__file__))",
                            f"_HERE = {kernels_dir!r}")
        with open(path, "w") as f:
          f.write(text)


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--base", default="HEAD",
                 help="git revision to compare against, or no-kernels (see above)")
  p.add_argument("--config", default="a")
  p.add_argument("--steps", type=int, default=20, help="timed steps of each")
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  no_kernels = args.base == "no-kernels"
  if not no_kernels:
    tmp = tempfile.mkdtemp()
    export_base(args.base, tmp)
    sys.path.insert(0, tmp)
  import numpy as np
  import tensorflow as tf
  import vs_tfp_glow
  importlib.import_module("glow_tf.nn")  # registers the kernels' gradient for both (see above)

  print(f"CPU: {vs_tfp_glow.cpu_description()}")
  cfg = vs_tfp_glow.CONFIGS[args.config]
  h, w, c = cfg["image_shape"]
  rng = np.random.RandomState(0)
  x = tf.constant(rng.uniform(-.5, .5, [cfg["batch"], h, w, c]).astype(np.float32))

  def make(package):
    optim = importlib.import_module(package + ".optim")
    model = vs_tfp_glow.build_ours(cfg, package)
    model.glow.initialize(x)
    optimizer = optim.GlowOptimizer("adam", 1e-4, polyak=False)
    variables = list(model.trainable_variables)
    optimizer.build(variables)

    @tf.function
    def step(x):
      with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model.distribution.log_prob(x)) / (h * w * c * math.log(2.))
      optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
      return loss

    t = time.perf_counter()
    loss = float(step(x))
    return step, loss, time.perf_counter() - t

  if no_kernels:
    from glow_tf import kernels
    with kernels.disabled():
      base, base_loss, base_first = make("glow_tf")
  else:
    base, base_loss, base_first = make("glow_tf_base")
  new, new_loss, new_first = make("glow_tf")
  print(f"first step: base {base_first:.1f} s, new {new_first:.1f} s; "
        f"first loss: base {base_loss:.6f}, new {new_loss:.6f}")
  if not math.isclose(base_loss, new_loss, rel_tol=1e-4):
    print("warning: the two compute different losses")
  for _ in range(2):
    base(x).numpy()
    new(x).numpy()
  times = {"base": [], "new": []}
  for i in range(args.steps):
    order = [("base", base), ("new", new)] if i % 2 == 0 else [("new", new), ("base", base)]
    for name, step in order:
      t = time.perf_counter()
      step(x).numpy()
      times[name].append(time.perf_counter() - t)
  ratios = [n / b for n, b in zip(times["new"], times["base"])]
  print(f"config {args.config}, {args.steps} steps each: base median "
        f"{statistics.median(times['base']) * 1e3:.1f} ms, new median "
        f"{statistics.median(times['new']) * 1e3:.1f} ms; new/base paired median "
        f"{statistics.median(ratios):.3f}")


if __name__ == "__main__":
  main()
