"""Scoring throughput: score.py's path (`glow_tf.scoring.score_images`) vs tfp.bijectors.Glow's log_prob.

For configurations of `vs_tfp_glow.py` (same architectures, actnorms
initialised on the same batch), times scoring a set of uint8 images: ours
through `score_images` (dequantisation draws, the streamed records, under
the default strategy), tfp's `log_prob` of the same dequantised images
under `tf.function` (plain and XLA), in batches of the config's size. Prints
images/s after a warm-up pass (the first pass, which traces, is reported
apart).

  python bench/score_vs_tfp.py --configs=a,b --n_images=512
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default="a,b")
  p.add_argument("--n_images", type=int, default=512)
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  import vs_tfp_glow
  from glow_tf import scoring
  cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                       text=True).stdout.split(":")[-1].strip()
  print(f"CPU: {cpu}; {args.n_images} images per pass")
  for name in args.configs.split(","):
    cfg = vs_tfp_glow.CONFIGS[name]
    shape, batch = list(cfg["image_shape"]), cfg["batch"]
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, [args.n_images] + shape).astype(np.uint8)
    x_init = (images[:batch].astype(np.float32) + rng.uniform(size=[batch] + shape)) / 256. - .5
    ours = vs_tfp_glow.build_ours(cfg)
    ours.glow.initialize(tf.constant(x_init, tf.float32))
    image_set = scoring.ImageSet(
        tf.data.Dataset.from_tensor_slices(images).enumerate().map(
            lambda i, im: {"image": im, "index": i}), args.n_images, None, "random images")
    times = []
    for _ in range(2):
      t = time.perf_counter()
      scoring.score_images(ours, image_set, batch_size=batch)
      times.append(time.perf_counter() - t)
    print(f"{name} ours score.py path : first pass {args.n_images / times[0]:7.1f} img/s, "
          f"then {args.n_images / times[1]:7.1f} img/s")
    dist = vs_tfp_glow.build_tfp(cfg, tf.constant(x_init, tf.float32))
    for jit in (False, True):
      fn = tf.function(dist.log_prob, jit_compile=jit)
      times = []
      for _ in range(2):
        t = time.perf_counter()
        for b in range(0, args.n_images, batch):
          x = (images[b:b + batch].astype(np.float32) + rng.uniform(size=[batch] + shape)) / 256.
          fn(tf.constant(x - .5, tf.float32)).numpy()
        times.append(time.perf_counter() - t)
      print(f"{name} tfp log_prob {'jit  ' if jit else 'plain'}: first pass "
            f"{args.n_images / times[0]:7.1f} img/s, then {args.n_images / times[1]:7.1f} img/s",
            flush=True)


if __name__ == "__main__":
  main()
