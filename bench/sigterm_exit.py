"""Seconds from SIGTERM to the exit of train.py, with its checkpoint written.

Starts `train.py` on Fashion-MNIST with the architecture given, waits until
it has logged a few training steps, sends SIGTERM and times the exit. Prints
the exit code (75 expected), the step of the checkpoint written and the
seconds, for each round. The step in flight finishes first, so the figure is
about one step plus writing the checkpoint.

  python bench/sigterm_exit.py --rounds=3 -- --n_levels=3 --depth=8 --width=128
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--after_steps", type=int, default=20, help="send SIGTERM after this step")
  p.add_argument("train_args", nargs="*", help="architecture flags for train.py (after --)")
  args = p.parse_args()
  cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                       text=True).stdout.split(":")[-1].strip()
  print(f"CPU: {cpu}; train.py --dataset=fashion_mnist {' '.join(args.train_args)}")
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  for r in range(args.rounds):
    logdir = tempfile.mkdtemp()
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--dataset=fashion_mnist",
           "--log_every_steps=1", "--epochs_warmup=0", f"--logdir={logdir}"] + args.train_args
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
      if line.startswith(f"step {args.after_steps} "):
        break
    proc.send_signal(signal.SIGTERM)
    t = time.perf_counter()
    rest = proc.stdout.read()
    proc.wait()
    seconds = time.perf_counter() - t
    stopped = [s for s in rest.splitlines() if s.startswith("stopped by")]
    print(f"round {r + 1}: exit {proc.returncode} after {seconds:.2f} s; "
          f"{stopped[0] if stopped else 'no stop line'}")


if __name__ == "__main__":
  main()
