"""glow_tf vs tfp.bijectors.Glow, side by side, at the identical architecture.

For each configuration and each implementation x mode (plain, jit_compile) a
fresh subprocess builds the flow, trains `--steps` Adam steps on a fixed
batch, and reports: time to the first finished train step (trace + compile +
run), median step time and images/s, log_prob and sampling throughput, peak
RSS and parameter count. The runs alternate ours/theirs so that drift of
the shared machine hits both. Ratios are ours / theirs.

  python bench/vs_tfp_glow.py                       # configs a and b
  python bench/vs_tfp_glow.py --configs=a,b,c --steps=6
  python bench/vs_tfp_glow.py --configs=a --modes=plain --impls=ours
  python bench/vs_tfp_glow.py --modes=plain --impls=ours,tfp,ours-bf16   # + mixed precision
  python bench/vs_tfp_glow.py --rounds=2    # every run twice, interleaved; medians

`ours-bf16` is ours with `precision="mixed_bfloat16"` (coupling networks in
bfloat16, float32 weights): not the same arithmetic as tfp's, so its ratio
is reported apart from the like-for-like float32 comparison.

Optimiser: Adam (lr 1e-4) for both; ours is the original's Adam
(`glow_tf.optim.GlowOptimizer`, its slots stacked by shape, `polyak=False`: tfp's has no weight
averaging either), tfp's is `tf_keras.optimizers.Adam`.

Architecture: affine coupling, LU-decomposed 1x1 convolutions, `L` levels of
`K` steps, coupling networks of the given width (3x3 conv, 1x1 conv, 3x3
conv). The coupling networks differ in detail: ours is the original's
(actnorm after the hidden convolutions, edge-bias padding, learned output
scale), tfp's `GlowDefaultNetwork` has biases instead; both have the same
convolution shapes and so the same FLOPs up to elementwise work.
"""

import argparse
import importlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "a": dict(image_shape=(32, 32, 3), n_levels=3, depth=8, width=128, batch=32),
    "b": dict(image_shape=(32, 32, 1), n_levels=2, depth=16, width=256, batch=64),
    "c": dict(image_shape=(32, 32, 3), n_levels=3, depth=32, width=512, batch=16),
}


def conv_flops(cfg, ours):
  """Multiply-adds x 2 of one forward pass per image, from the convolution shapes."""
  h, w, c = cfg["image_shape"]
  width, flops = cfg["width"], 0
  for level in range(cfg["n_levels"]):
    h, w, c = h // 2, w // 2, c * 4
    px = h * w
    half = c // 2
    per_step = (9 * (half + ours) * width + width * width + 9 * (width + ours) * c) * px
    per_step += c * c * px  # the 1x1 invertible convolution
    flops += cfg["depth"] * per_step
    if level < cfg["n_levels"] - 1:
      flops += 9 * (half + ours) * c * px  # split prior
      c //= 2
  return 2 * flops


def build_ours(cfg, package="glow_tf"):
  """Ours at `cfg`'s architecture, from `package` (another name: another revision's copy of glow_tf)."""
  glow_tf = importlib.import_module(package)
  model = glow_tf.GlowModel(image_shape=cfg["image_shape"], n_levels=cfg["n_levels"],
                            depth=cfg["depth"], width=cfg["width"], flow_coupling=1,
                            lu_decomposed=True, learntop=False,
                            recompute_gradients=cfg.get("recompute", False),
                            precision=cfg.get("precision", "float32"),
                            seed=cfg.get("seed", 0))
  return model


def build_tfp(cfg, x):
  """tfp.bijectors.Glow at `cfg`'s architecture as a distribution, actnorms initialised on `x`."""
  import numpy as np
  import tensorflow_probability as tfp
  tfd, tfb = tfp.distributions, tfp.bijectors
  glow = tfb.Glow(output_shape=cfg["image_shape"], num_glow_blocks=cfg["n_levels"],
                  num_steps_per_block=cfg["depth"],
                  coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=cfg["width"]),
                  exit_bijector_fn=tfb.GlowDefaultExitNetwork)
  dist = tfd.TransformedDistribution(
      tfd.Sample(tfd.Normal(0., 1.), int(np.prod(cfg["image_shape"]))), glow)
  dist.log_prob(x)  # its actnorm initialises on the first call
  return dist


def run_child(args):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import numpy as np
  import tensorflow as tf
  import tf_keras

  cfg = dict(CONFIGS[args.config])
  cfg["recompute"] = args.recompute
  if args.impl == "ours-bf16":  # ours with precision="mixed_bfloat16"
    cfg["precision"] = "mixed_bfloat16"
  h, w, c = cfg["image_shape"]
  d = h * w * c
  batch = cfg["batch"]
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, [batch, h, w, c]).astype(np.uint8)
  x = tf.constant(images.astype(np.float32) / 256. - .5
                  + rng.uniform(0, 1. / 256, images.shape).astype(np.float32))
  jit = args.mode == "jit"
  if args.impl.startswith("ours"):  # the same Adam update, in the original's form (no Polyak averages, as tfp's)
    from glow_tf import optim
    optimizer = optim.GlowOptimizer("adam", 1e-4, beta1=0.9, beta2=0.999, epsilon=1e-7,
                                    polyak=False)
  else:  # what a tfp.bijectors.Glow user would write
    optimizer = tf_keras.optimizers.Adam(1e-4, jit_compile=False)

  t_build = time.perf_counter()
  if args.impl.startswith("ours"):
    model = build_ours(cfg)
    model.glow.initialize(x)  # explicit data-dependent init
    log_prob = model.distribution.log_prob
    sample = model.distribution.sample
  else:
    dist = build_tfp(cfg, x)
    model = dist
    log_prob = dist.log_prob
    sample = dist.sample
  build_s = time.perf_counter() - t_build
  variables = list(model.trainable_variables)
  if args.impl.startswith("ours"):
    optimizer.build(variables)  # slots before tracing (as train.py does)

  def loss_fn(x):
    return -tf.reduce_mean(log_prob(x)) / (d * math.log(2.)) + 8.

  @tf.function(jit_compile=jit)
  def train_step(x):
    with tf.GradientTape() as tape:
      loss = loss_fn(x)
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss

  t0 = time.perf_counter()
  loss0 = float(train_step(x))
  first_step_s = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    loss = float(train_step(x))
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)

  lp = tf.function(log_prob, jit_compile=jit)
  lp(x)
  t0 = time.perf_counter()
  for _ in range(3):
    lp(x).numpy()
  lp_ips = 3 * batch / (time.perf_counter() - t0)
  sm = tf.function(lambda: sample(batch, seed=1), jit_compile=jit)
  sm()
  t0 = time.perf_counter()
  for _ in range(3):
    sm().numpy()
  sample_ips = 3 * batch / (time.perf_counter() - t0)

  n_params = int(sum(np.prod(v.shape) for v in variables))
  flops = 3 * conv_flops(cfg, ours=int(args.impl.startswith("ours"))) * batch
  if args.impl.startswith("ours") and args.recompute:
    flops = flops * 4 // 3  # one more forward pass
  print(json.dumps({
      "impl": args.impl, "mode": args.mode, "config": args.config, "recompute": args.recompute,
      "build_s": build_s, "first_step_s": first_step_s, "step_s": step_s,
      "images_per_s": batch / step_s, "log_prob_images_per_s": lp_ips,
      "sample_images_per_s": sample_ips, "peak_rss_gb": resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
      "params": n_params, "loss_first": loss0, "loss_last": loss,
      "gflops_per_step": flops / 1e9, "gflop_per_s": flops / 1e9 / step_s}))


def cpu_description():
  """The CPU's model name and the vector extensions that matter here (from /proc/cpuinfo)."""
  try:
    info = open("/proc/cpuinfo").read()
  except OSError:
    return "unknown CPU"
  model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.startswith("model name")), "unknown CPU")
  flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                    if line.startswith("flags")), []))
  ext = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
  return f"{model}, {os.cpu_count()} cores, {' '.join(ext) or 'no AVX2'}"


def machine_peak():
  """Achieved GFLOP/s of a plain conv2d and a matmul on this machine."""
  import tensorflow as tf
  out = {}
  x = tf.random.normal([32, 16, 16, 128])
  k = tf.random.normal([3, 3, 128, 128])
  conv = tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"))
  a, b = tf.random.normal([2048, 2048]), tf.random.normal([2048, 2048])
  mm = tf.function(lambda: tf.matmul(a, b))
  for name, fn, flops in (("conv2d_3x3_128", conv, 2 * 32 * 16 * 16 * 9 * 128 * 128),
                          ("matmul_2048", mm, 2 * 2048 ** 3)):
    fn()
    t0 = time.perf_counter()
    for _ in range(10):
      fn().numpy()
    out[name] = flops * 10 / (time.perf_counter() - t0) / 1e9
  return out


def print_result(r, tag=""):
  print(f"{r['config']} {r['mode']:5} {r['impl']:9}: first step {r['first_step_s']:6.1f} s, step "
        f"{r['step_s']:6.3f} s = {r['images_per_s']:6.1f} img/s, log_prob "
        f"{r['log_prob_images_per_s']:7.1f} img/s, sample {r['sample_images_per_s']:7.1f} "
        f"img/s, peak RSS {r['peak_rss_gb']:.2f} GB, {r['params']:,} params, "
        f"{r['gflop_per_s']:.1f} GFLOP/s{tag}", flush=True)


def median_result(rs):
  """One result from several rounds: the median of each figure (peak RSS: the largest)."""
  out = dict(rs[0])
  for k in ("first_step_s", "step_s", "log_prob_images_per_s", "sample_images_per_s"):
    out[k] = statistics.median(r[k] for r in rs)
  out["images_per_s"] = out["images_per_s"] * rs[0]["step_s"] / out["step_s"]
  out["gflop_per_s"] = out["gflops_per_step"] / out["step_s"]
  out["peak_rss_gb"] = max(r["peak_rss_gb"] for r in rs)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", default="a,b")
  parser.add_argument("--modes", default="plain,jit")
  parser.add_argument("--impls", default="ours,tfp")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--rounds", type=int, default=1,
                      help="run every (config, mode, impl) this many times, interleaved; "
                           "the summary takes the median of each figure over the rounds")
  parser.add_argument("--recompute", action="store_true",
                      help="ours with recompute_gradients (memory-free backprop)")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--config", help=argparse.SUPPRESS)
  parser.add_argument("--impl", help=argparse.SUPPRESS)
  parser.add_argument("--mode", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    run_child(args)
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  print("cpu:", cpu_description(), flush=True)
  print("machine:", json.dumps({k: round(v, 1) for k, v in machine_peak().items()}),
        "GFLOP/s", flush=True)
  runs = {}
  for config in args.configs.split(","):
    for rnd in range(args.rounds):
      for mode in args.modes.split(","):
        for impl in args.impls.split(","):
          cmd = [sys.executable, __file__, "--child", "--config", config, "--impl", impl,
                 "--mode", mode, "--steps", str(args.steps)]
          if args.recompute and impl.startswith("ours"):
            cmd.append("--recompute")
          res = subprocess.run(cmd, capture_output=True, text=True)
          if res.returncode:
            print(f"{config} {mode} {impl}: FAILED\n{res.stderr[-1500:]}", flush=True)
            continue
          r = json.loads(res.stdout.strip().splitlines()[-1])
          runs.setdefault((config, mode, impl), []).append(r)
          tag = f" (round {rnd + 1})" if args.rounds > 1 else ""
          print_result(r, tag)
  by = {key: median_result(rs) for key, rs in runs.items()}
  if args.rounds > 1:
    print(f"\nmedians over {args.rounds} interleaved rounds")
    for r in by.values():
      print_result(r)
  print("\nratios ours/tfp (speed: >1 is faster; first step and memory: <1 is better)")
  for config in args.configs.split(","):
    for mode in args.modes.split(","):
      for name in ("ours", "ours-bf16"):
        o, t = by.get((config, mode, name)), by.get((config, mode, "tfp"))
        if not (o and t):
          continue
        print(f"{config} {mode:5} {name:9}: train img/s x{o['images_per_s'] / t['images_per_s']:.2f}, "
              f"first step x{o['first_step_s'] / t['first_step_s']:.2f}, log_prob x"
              f"{o['log_prob_images_per_s'] / t['log_prob_images_per_s']:.2f}, sample x"
              f"{o['sample_images_per_s'] / t['sample_images_per_s']:.2f}, peak RSS x"
              f"{o['peak_rss_gb'] / t['peak_rss_gb']:.2f}")
    best_t = max((by[(config, m, "tfp")] for m in args.modes.split(",")
                  if (config, m, "tfp") in by), key=lambda r: r["images_per_s"], default=None)
    best_o = max((by[(config, m, "ours")] for m in args.modes.split(",")
                  if (config, m, "ours") in by), key=lambda r: r["images_per_s"], default=None)
    if best_t and best_o:
      print(f"{config} best vs best: ours {best_o['mode']} {best_o['images_per_s']:.1f} img/s vs "
            f"tfp {best_t['mode']} {best_t['images_per_s']:.1f} img/s = x"
            f"{best_o['images_per_s'] / best_t['images_per_s']:.2f}; first step "
            f"{best_o['first_step_s']:.1f} s vs {best_t['first_step_s']:.1f} s")


if __name__ == "__main__":
  main()
