"""The exported SavedModel against the library: export size and time, load time, images/s.

Exports the shipped model (`pretrained/fashion_mnist`) with export.py's
library call, loads it with `tf.saved_model.load` (the load alone; TensorFlow
is already imported), and times, in this one process and after a warm-up
call each, the exported `sample` and `bits_per_dim` against the library's
`GlowModel.sample` and `GlowModel.bits_per_dim` (eager, as sample.py calls
them, and under `tf.function`).

  python bench/export_speed.py --batch=64 --repeats=5
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _rate(fn, n, repeats):
  fn()  # warm-up (traces)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return n / sorted(times)[len(times) // 2]


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  from glow_tf import config as config_lib
  from glow_tf import export as export_lib
  from glow_tf import sampling
  import vs_tfp_glow
  print(f"CPU: {vs_tfp_glow.cpu_description()}; batch {args.batch}")
  work = tempfile.mkdtemp(prefix="export_speed_")
  try:
    out = os.path.join(work, "fashion_mnist")
    start = time.perf_counter()
    result = export_lib.export(config_lib.ExportConfig(logdir=sampling.SHIPPED_MODEL, output=out),
                               log=lambda *_: None)
    export_s = time.perf_counter() - start
    pb = os.path.getsize(os.path.join(out, "saved_model.pb"))
    print(f"export: {export_s:.1f} s; {result.size_bytes / 1e6:.2f} MB "
          f"(saved_model.pb {pb / 1e6:.2f} MB, variables {(result.size_bytes - pb) / 1e6:.2f} MB)")
    start = time.perf_counter()
    served = tf.saved_model.load(out)
    load_s = time.perf_counter() - start
    images = served.sample(args.batch, 0.7, [0, 0])["images"]
    first_s = time.perf_counter() - start - load_s
    print(f"load: {load_s:.2f} s (tf.saved_model.load); first sample call after it: "
          f"{first_s:.2f} s")
    model = sampling.load_model(sampling.SHIPPED_MODEL).model
    n, t, seed = args.batch, 0.7, tf.constant([1, 2], tf.int64)
    lib_sample = tf.function(lambda: model.sample(n, t, seed=seed), autograph=False)
    lib_bpd = tf.function(lambda x: model.bits_per_dim(x, noise=0.5), autograph=False)
    rows = [
        ("sample", "export", lambda: served.sample(n, t, seed)),
        ("sample", "library, tf.function", lambda: lib_sample()),
        ("sample", "library, eager", lambda: model.sample(n, t, seed=seed)),
        ("bits_per_dim", "export", lambda: served.bits_per_dim(images)),
        ("bits_per_dim", "library, tf.function", lambda: lib_bpd(images)),
        ("bits_per_dim", "library, eager", lambda: model.bits_per_dim(images, noise=0.5)),
    ]
    np.testing.assert_allclose(served.bits_per_dim(images), lib_bpd(images), atol=1e-5)
    print("| function | path | images/s |\n|---|---|---|")
    for name, path, fn in rows:
      print(f"| {name} | {path} | {_rate(fn, n, args.repeats):.0f} |")
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
