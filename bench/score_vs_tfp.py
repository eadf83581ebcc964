"""Scoring throughput: score.py's path (`glow_tf.scoring.Scorer`) vs tfp.bijectors.Glow's log_prob.

For configurations of `vs_tfp_glow.py` (same architectures, actnorms
initialised on the same batch), times passes over a set of uint8 images, in
batches of the config's size (or `--batch`):

* `ours Scorer`: score.py's path, one `Scorer` kept across passes
  (dequantisation draws from the image indices, the gathered results, the
  per-image records streamed to a CSV file), under the default strategy;
* `ours score_images`: a new `score_images` call per pass, which traces its
  step anew (the path as it was before the Scorer kept its trace);
* `tfp plain` / `tfp jit`: tfp's `log_prob` of the same images plus uniform
  noise under one `tf.function` (plain and XLA), as a tfp user would write it.

The first pass (which traces) is reported apart; the steady figure is the
median of `--rounds` further passes, the implementations interleaved pass by
pass so that the load of a shared machine falls on all of them alike.

  python bench/score_vs_tfp.py --configs=a,b --n_images=256 --rounds=3
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", default="a,b")
  p.add_argument("--n_images", type=int, default=256)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--batch", type=int, default=0, help="batch size (default: the config's)")
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  import vs_tfp_glow
  from glow_tf import scoring
  print(f"CPU: {vs_tfp_glow.cpu_description()}; {args.n_images} images per pass")
  out_dir = tempfile.mkdtemp(prefix="score_bench_")
  for name in args.configs.split(","):
    cfg = vs_tfp_glow.CONFIGS[name]
    shape, batch = list(cfg["image_shape"]), args.batch or cfg["batch"]
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, [args.n_images] + shape).astype(np.uint8)
    x_init = (images[:batch].astype(np.float32) + rng.uniform(size=[batch] + shape)) / 256. - .5
    ours = vs_tfp_glow.build_ours(cfg)
    ours.glow.initialize(tf.constant(x_init, tf.float32))
    image_set = scoring.ImageSet(
        tf.data.Dataset.from_tensor_slices(images).enumerate().map(
            lambda i, im: {"image": im, "index": i}), args.n_images, None, "random images")
    scorer = scoring.Scorer(ours)

    def ours_kept():
      out = scoring.OutputWriter(os.path.join(out_dir, "scores.csv"), overwrite=True)
      scorer.score(image_set, batch_size=batch, output=out)
      out.close()

    def ours_one_shot():
      scoring.score_images(ours, image_set, batch_size=batch)

    dist = vs_tfp_glow.build_tfp(cfg, tf.constant(x_init, tf.float32))

    def tfp_pass(fn):
      def run():
        for b in range(0, args.n_images, batch):
          x = (images[b:b + batch].astype(np.float32) + rng.uniform(size=[batch] + shape)) / 256.
          fn(tf.constant(x - .5, tf.float32)).numpy()
      return run

    passes = {"ours Scorer": ours_kept, "ours score_images": ours_one_shot,
              "tfp plain": tfp_pass(tf.function(dist.log_prob)),
              "tfp jit": tfp_pass(tf.function(dist.log_prob, jit_compile=True))}
    times = {k: [] for k in passes}
    for _ in range(1 + args.rounds):
      for k, run in passes.items():
        t = time.perf_counter()
        run()
        times[k].append(time.perf_counter() - t)
    for k, t in times.items():
      print(f"{name} batch {batch} {k:18s}: first pass {args.n_images / t[0]:7.1f} img/s, steady "
            f"{args.n_images / statistics.median(t[1:]):7.1f} img/s (passes "
            f"{', '.join(f'{args.n_images / s:.1f}' for s in t[1:])})", flush=True)
    print(f"{name}: ours Scorer traced {scorer.tracing_count()} time(s)")


if __name__ == "__main__":
  main()
