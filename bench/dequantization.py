"""Uniform against variational dequantisation, time-matched, on Fashion-MNIST.

Trains, through train.py and one after the other on the whole machine, the
15-minute recipe of docs/training.md (Adam 1e-3, 2 levels of depth 8,
width 128, batch 64, affine coupling, LU 1x1 convolutions, 8-bit images)
for `--minutes` each, with `--dequantization=uniform` and with
`--dequantization=variational`. Then each is scored by score.py on the test
images (all 10,000 by default), three ways:

* its own figure, K=1 (the run's objective: for variational, the
  variational bound with one draw of `q`);
* uniform noise, K=1 (`--dequantization=uniform`: the figure comparable
  with uniformly dequantised models and the literature);
* its own dequantisation with K=16 draws, importance-weighted
  (`--n_dequant_samples=16`: `q` as the proposal for variational).

  python bench/dequantization.py                      # 15 minutes each
  python bench/dequantization.py --minutes=60 --workdir=/tmp/dequant60
  python bench/dequantization.py --minutes=1 --n_test=200 --workdir=/tmp/dq   # a quick look
  python bench/dequantization.py --side_by_side       # both at once, one core each

`--side_by_side` trains (and scores) the two at the same time, each pinned to
one of the machine's first two cores: equal conditions in half the wall-clock
time, at half the compute of a whole-machine run.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from conditional_sr import RECIPE, mean_bits  # noqa: E402  # the same 15-minute recipe

SCORINGS = (("own, K=1", []), ("uniform, K=1", ["--dequantization=uniform"]),
            ("own, K=16", ["--n_dequant_samples=16"]))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--minutes", type=float, default=15.)
  p.add_argument("--workdir", default="/tmp/dequantization")
  p.add_argument("--n_test", type=int, default=0, help="test images to score (0: all)")
  p.add_argument("--measure_only", action="store_true", help="the runs exist: only score")
  p.add_argument("--side_by_side", action="store_true",
                 help="run the two at once, each pinned to one core")
  args = p.parse_args()
  import vs_tfp_glow  # pylint: disable=import-outside-toplevel
  log = lambda s: print(s, flush=True)
  log(f"CPU: {vs_tfp_glow.cpu_description()}; {args.minutes} minutes each"
      + (", side by side, one core each" if args.side_by_side else ""))
  kinds = ("uniform", "variational")
  jobs = [_job(kind, core if args.side_by_side else None, args, log)
          for core, kind in enumerate(kinds)]
  if args.side_by_side:
    from concurrent.futures import ThreadPoolExecutor  # pylint: disable=import-outside-toplevel
    with ThreadPoolExecutor(len(jobs)) as pool:
      result = dict(zip(kinds, pool.map(lambda job: job(), jobs)))
  else:
    result = {kind: job() for kind, job in zip(kinds, jobs)}
  print(json.dumps(result))


def _job(kind, core, args, log):
  """Trains (unless --measure_only) and scores one dequantisation; `core`: pin to it."""
  logdir = os.path.join(args.workdir, kind)
  pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))

  def call(cmd):
    log(" ".join(cmd))
    subprocess.run([sys.executable] + cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, text=True, preexec_fn=pin)

  def job():
    if not args.measure_only:
      start = time.time()
      call(["train.py"] + RECIPE + [f"--dequantization={kind}",
                                     f"--time_budget_minutes={args.minutes}", f"--logdir={logdir}"])
      log(f"{kind}: trained in {time.time() - start:.0f} s")
    with open(os.path.join(logdir, "test.txt")) as f:
      steps = [json.loads(line) for line in f][-1]["step"]
    result = {"steps": steps}
    for name, extra in SCORINGS:
      out = os.path.join(args.workdir, f"{kind}_{name.replace(', ', '_').replace('=', '')}.csv")
      call(["score.py", f"--logdir={logdir}", f"--output={out}", "--overwrite"] + extra
           + ([f"--max_images={args.n_test}"] if args.n_test else []))
      result[name], n = mean_bits(out)
    log(f"{kind} ({steps} steps, {n} test images): " + ", ".join(
        f"{name} {result[name]:.4f}" for name, _ in SCORINGS) + " bits/dim")
    return result

  return job


if __name__ == "__main__":
  main()
