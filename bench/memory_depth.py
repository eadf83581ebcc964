"""Peak memory of a training step as depth grows: ordinary backprop vs recompute_gradients.

Each (depth, mode) runs in its own process. "Step memory" is TensorFlow's own
count of tensor bytes on the CPU (`tf.config.experimental.get_memory_info`):
the peak during steady training steps minus what stays alive between steps
(weights, optimiser slots), i.e. activations, gradients and temporaries.
Peak RSS is printed too; it also counts the optimised graph, kernels and
malloc's caches, which grow with depth whatever the backprop does. With
`recompute_gradients` the backward pass rebuilds each flow step's input from
its output, so that memory should stay flat in depth.

  python bench/memory_depth.py                  # depths 8 and 32, 32x32x3, width 128, batch 32
  python bench/memory_depth.py --depths=8,16,32 --batch=64
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def rss_gb():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 2 ** 20
  return 0.


def child(args):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  # TF keeps allocator statistics on the CPU only with its oneDNN allocator (on by
  # default on Intel CPUs with AVX-512, off on e.g. AMD EPYC) or its BFC allocator.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import numpy as np
  import tensorflow as tf
  import glow_tf
  from glow_tf import optim
  if os.environ.get("GLOW_NO_GRAPPLER"):
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

  model = glow_tf.GlowModel(image_shape=(32, 32, 3), n_levels=3, depth=args.depth,
                            width=args.width, flow_coupling=1,
                            recompute_gradients=args.recompute)
  images = np.random.RandomState(0).randint(0, 256, [args.batch, 32, 32, 3]).astype(np.uint8)
  model.initialize(images, seed=[0, 0])
  variables = list(model.trainable_variables)
  opt = optim.GlowOptimizer("adamax", 1e-4)
  opt.build(variables)

  @tf.function
  def step(x):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(model.losses(x, noise=0.5)["loss"])
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  step.get_concrete_function(tf.TensorSpec(images.shape, tf.uint8))
  base = rss_gb()
  float(step(images))  # the first run also optimises and instantiates the graph
  # TensorFlow's own count of live tensor bytes on the CPU device: exact,
  # unlike RSS, which also holds the graph, kernels and malloc's free lists.
  resting = tf.config.experimental.get_memory_info("CPU:0")["current"]
  tf.config.experimental.reset_memory_stats("CPU:0")
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    float(step(images))
    times.append(time.perf_counter() - t0)
  tensor_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  print(json.dumps({"depth": args.depth, "recompute": args.recompute, "base_gb": base,
                    "peak_gb": peak, "rss_step_memory_gb": peak - base,
                    "resting_tensor_gb": resting / 2 ** 30,
                    "step_memory_gb": (tensor_peak - resting) / 2 ** 30,
                    "step_s": statistics.median(times), "params": model.num_parameters()}))


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--depths", default="8,32")
  parser.add_argument("--width", type=int, default=128)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--recompute", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(args)
    return
  results = {}
  for depth in [int(d) for d in args.depths.split(",")]:
    for recompute in (False, True):
      cmd = [sys.executable, __file__, "--child", f"--depth={depth}", f"--width={args.width}",
             f"--batch={args.batch}", f"--steps={args.steps}"] + (["--recompute"] if recompute else [])
      out = subprocess.run(cmd, capture_output=True, text=True)
      if out.returncode:
        print(f"depth {depth} recompute={recompute}: FAILED\n{out.stderr[-1500:]}")
        continue
      r = json.loads(out.stdout.strip().splitlines()[-1])
      results[(depth, recompute)] = r
      print(f"depth {depth:3} {'recompute' if recompute else 'ordinary ':9}: step memory "
            f"{r['step_memory_gb'] * 1024:.0f} MB (peak RSS {r['peak_gb']:.2f} GB, "
            f"{r['rss_step_memory_gb']:.2f} GB over the RSS after tracing), "
            f"step {r['step_s']:.3f} s, {r['params']:,} params", flush=True)
  depths = sorted({d for d, _ in results})
  if len(depths) >= 2:
    lo, hi = depths[0], depths[-1]
    for recompute in (False, True):
      if (lo, recompute) in results and (hi, recompute) in results:
        a, b = results[(lo, recompute)], results[(hi, recompute)]
        print(f"{'recompute' if recompute else 'ordinary'}: step memory depth {hi} / depth {lo} = "
              f"x{b['step_memory_gb'] / a['step_memory_gb']:.2f}; peak RSS x"
              f"{b['peak_gb'] / a['peak_gb']:.2f}")
    for depth in depths:
      if (depth, False) in results and (depth, True) in results:
        print(f"depth {depth}: recompute costs x"
              f"{results[(depth, True)]['step_s'] / results[(depth, False)]['step_s']:.2f} step time")


if __name__ == "__main__":
  main()
