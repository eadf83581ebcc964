"""The paper's architectures build and run on a CPU: log_prob of one image, one sample.

Each configuration runs in its own subprocess so that its peak RSS is its own.

  python bench/paper_configs.py                 # both: cifar10 and celeba_hq
  python bench/paper_configs.py --config=celeba_hq
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = {
    # The original's README: CIFAR-10 quantitative run and CelebA-HQ 256 run.
    "cifar10": dict(image_shape=(32, 32, 3), n_levels=3, depth=32, width=512,
                    flow_permutation=2, flow_coupling=1, learntop=True, n_bits_x=8),
    "celeba_hq": dict(image_shape=(256, 256, 3), n_levels=6, depth=32, width=512,
                      flow_permutation=2, flow_coupling=0, learntop=True, n_bits_x=5),
}


def run_one(name):
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import numpy as np
  import tensorflow as tf
  import glow_tf

  t0 = time.perf_counter()
  model = glow_tf.GlowModel(**CONFIGS[name])
  build_s = time.perf_counter() - t0
  h, w, c = model.image_shape
  image = np.random.RandomState(0).randint(0, 256, [1, h, w, c]).astype(np.uint8)
  t0 = time.perf_counter()
  model.initialize(image, seed=[0, 0])  # eager pass through every step
  init_s = time.perf_counter() - t0

  log_prob = tf.function(lambda x: model.bits_per_dim(x, seed=[1, 2]))
  sample = tf.function(lambda: model.sample(1, 0.7, seed=[3, 4]))
  out = {"config": name, "params": model.num_parameters(), "build_s": build_s,
         "init_eager_s": init_s}
  for what, fn, arg in (("log_prob", log_prob, (image,)), ("sample", sample, ())):
    t0 = time.perf_counter()
    value = fn(*arg)
    out[f"{what}_first_call_s"] = time.perf_counter() - t0  # trace + run
    t0 = time.perf_counter()
    value = fn(*arg)
    out[f"{what}_s"] = time.perf_counter() - t0
    if what == "log_prob":
      out["bits_per_dim"] = float(value[0])
    else:
      out["sample_shape"] = list(value.shape)
  out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  print(json.dumps(out))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--config", choices=sorted(CONFIGS), default=None)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    run_one(args.config)
    return
  names = [args.config] if args.config else sorted(CONFIGS)
  print(f"{'config':10} {'params':>12} {'log_prob 1st/steady (s)':>24} "
        f"{'sample 1st/steady (s)':>22} {'peak RSS GB':>11} {'bits/dim':>9}")
  for name in names:
    res = subprocess.run([sys.executable, __file__, "--config", name, "--child"],
                         capture_output=True, text=True)
    if res.returncode:
      print(name, "FAILED:", res.stderr[-2000:])
      continue
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"{name:10} {r['params']:>12,} {r['log_prob_first_call_s']:>11.1f} / "
          f"{r['log_prob_s']:<10.2f} {r['sample_first_call_s']:>10.1f} / {r['sample_s']:<9.2f} "
          f"{r['peak_rss_gb']:>11.2f} {r['bits_per_dim']:>9.3f}")
    print("  ", json.dumps(r))


if __name__ == "__main__":
  main()
