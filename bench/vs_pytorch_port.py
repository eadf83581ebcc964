"""glow_tf vs the PyTorch port users pick instead (rosinality/glow-pytorch), side by side.

The port is not part of this project: point `--port_dir` at a checkout of
https://github.com/rosinality/glow-pytorch and `--torch_python` at a Python
that has torch (and scipy, which the port imports), e.g.

  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 scipy
  git clone https://github.com/rosinality/glow-pytorch /tmp/glow-pytorch
  python bench/vs_pytorch_port.py --port_dir=/tmp/glow-pytorch --torch_python=/tmp/torchvenv/bin/python

Each configuration of `vs_tfp_glow.py` ((a), (b), (c)) is run by both in
alternation, each in its own process: the port's `Glow(in_channel,
n_flow=depth, n_block=levels, affine=True, conv_lu=True)` with its coupling
width set to the configuration's (the port hard-codes 512 as a default
argument, which this script overrides at run time; the port's code is not
copied or changed), trained with `torch.optim.Adam(lr=1e-4)` on a fixed
batch; ours exactly as in `vs_tfp_glow.py` (plain mode, Adam without
Polyak averages). Printed for each: time to the first finished train step
(the port initialises its actnorms in that step), median step time and
images/s, peak RSS, parameter count.
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_torch_child(args):
  import numpy as np
  import torch
  sys.path.insert(0, args.port_dir)
  import model as port  # rosinality/glow-pytorch's model.py
  sys.path.insert(0, HERE)
  import vs_tfp_glow  # pylint: disable=import-outside-toplevel
  cfg = vs_tfp_glow.CONFIGS[args.config]
  h, w, c = cfg["image_shape"]
  batch = cfg["batch"]
  # The port's AffineCoupling(in_channel, filter_size=512, affine=True): use our width.
  port.AffineCoupling.__init__.__defaults__ = (cfg["width"], True)
  torch.manual_seed(0)
  t_build = time.perf_counter()
  net = port.Glow(c, cfg["depth"], cfg["n_levels"], affine=True, conv_lu=True)
  build_s = time.perf_counter() - t_build
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, [batch, c, h, w]).astype(np.float32)
  x = torch.tensor(images / 256. - .5 + rng.uniform(0, 1. / 256, images.shape).astype(np.float32))
  d = h * w * c

  def step():
    log_p, logdet, _ = net(x)
    loss = (-(log_p + logdet).mean() + d * math.log(256.)) / (d * math.log(2.))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()

  t0 = time.perf_counter()
  loss0 = step()  # also initialises the actnorms (the port does it on the first call)
  first_step_s = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  print(json.dumps({
      "impl": "pytorch-port", "config": args.config, "build_s": build_s,
      "first_step_s": first_step_s, "step_s": step_s, "images_per_s": batch / step_s,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
      "params": int(sum(p.numel() for p in net.parameters())),
      "loss_first": loss0, "loss_last": loss, "torch": torch.__version__,
      "threads": torch.get_num_threads()}))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--port_dir", default=os.environ.get("GLOW_PYTORCH_DIR"))
  p.add_argument("--torch_python", default=sys.executable)
  p.add_argument("--configs", default="a,b")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--rounds", type=int, default=1, help="alternations per configuration")
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--config", help=argparse.SUPPRESS)
  args = p.parse_args()
  if not args.port_dir or not os.path.exists(os.path.join(args.port_dir, "model.py")):
    p.error("--port_dir must be a checkout of rosinality/glow-pytorch (its model.py); "
            "see the module docstring.")
  if args.child:
    run_torch_child(args)
    return
  results = []
  for config in args.configs.split(","):
    for _ in range(args.rounds):
      for impl in ("ours", "pytorch-port"):
        if impl == "ours":
          cmd = [sys.executable, os.path.join(HERE, "vs_tfp_glow.py"), "--child",
                 "--config", config, "--impl", "ours", "--mode", "plain",
                 "--steps", str(args.steps)]
        else:
          cmd = [args.torch_python, os.path.abspath(__file__), "--child", "--config", config,
                 "--port_dir", args.port_dir, "--steps", str(args.steps)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode:
          print(f"{config} {impl}: FAILED\n{res.stderr[-1500:]}", flush=True)
          continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        r["impl"], r["config"] = impl, config
        results.append(r)
        print(f"{config} {impl:12}: first step {r['first_step_s']:6.2f} s, step "
              f"{r['step_s']:6.3f} s = {r['images_per_s']:6.1f} img/s, peak RSS "
              f"{r['peak_rss_gb']:.2f} GB, {r['params']:,} params", flush=True)
  print("\nratios ours/port (median over rounds; speed >1 is faster, first step <1 is better)")
  for config in args.configs.split(","):
    o = [r for r in results if r["config"] == config and r["impl"] == "ours"]
    t = [r for r in results if r["config"] == config and r["impl"] == "pytorch-port"]
    if o and t:
      med = lambda rs, k: statistics.median(r[k] for r in rs)
      print(f"{config}: train img/s {med(o, 'images_per_s'):.1f} vs {med(t, 'images_per_s'):.1f} "
            f"= x{med(o, 'images_per_s') / med(t, 'images_per_s'):.2f}; first step "
            f"{med(o, 'first_step_s'):.2f} s vs {med(t, 'first_step_s'):.2f} s")


if __name__ == "__main__":
  main()
