"""Conditional Glow on x4 super-resolution: Fashion-MNIST given its 8x8 downsampled image.

Trains, through train.py and one after the other on the whole machine, the
same architecture twice for `--minutes` each: unconditional, and
conditioned on the image area-downsampled by 4 (`--condition=lowres
--condition_factor=4`: 8x8 conditions of the 32x32 images). Then, on the
test images (all 10,000 by default):

* each model's test bits/dim through score.py (`-log2 p(x) / D` and
  `-log2 p(x | c) / D`, uniform dequantisation, K=1);
* the conditional model's temperature-0 sample given each condition (the
  decoded prior means, SRFlow's "mean image") against the truth, as PSNR on
  the 28x28 crop that holds the Fashion-MNIST image (the 32x32 images are
  padded by 2), beside bicubic upsampling of the same 8x8 condition;
* a grid of condition / samples (temperatures 0, 0.5, 0.8) / truth, written
  to `--grid`.

Both runs use the 15-minute recipe of docs/training.md (Adam 1e-3, 2 levels
of depth 8, width 128, batch 64, affine coupling, LU 1x1 convolutions,
8-bit images).

  python bench/conditional_sr.py                        # 15 minutes each
  python bench/conditional_sr.py --minutes=2 --n_test=500 --workdir=/tmp/sr   # a quick look
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
sys.path.insert(0, ROOT)

RECIPE = ["--dataset=fashion_mnist", "--n_levels=2", "--depth=8", "--width=128",
          "--n_batch_train=64", "--optimizer=adam", "--lr=0.001", "--epochs_warmup=0.2134",
          "--n_bits_x=8", "--flow_coupling=1", "--lu_decomposed", "--dal=0", "--n_train=-1",
          "--n_test=2000", "--epochs_full_valid=1", "--epochs_full_sample=100",
          "--log_every_steps=200"]
CONDITION = ["--condition=lowres", "--condition_factor=4"]


def run(args, log):
  """Runs a repository entry point (`args[0]`) with its flags; its output is kept quiet."""
  log(" ".join(args))
  subprocess.run([sys.executable] + args, cwd=ROOT, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _psnr(a, b):
  """PSNR in dB of uint8 images `[N, H, W, C]` against `b`, per image, averaged."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))
  return float(np.mean(10. * np.log10(255. ** 2 / np.maximum(mse, 1e-10))))


def measure(workdir, n_test, grid_path, log):
  """The figures of the two trained runs in `workdir`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from glow_tf import images as images_lib  # pylint: disable=import-outside-toplevel
  from glow_tf import sampling  # pylint: disable=import-outside-toplevel

  out = {}
  for name in ("unconditional", "conditional"):
    logdir = os.path.join(workdir, name)
    scores = os.path.join(workdir, f"{name}_scores.csv")
    run(["score.py", f"--logdir={logdir}", f"--output={scores}", "--overwrite"]
         + ([f"--max_images={n_test}"] if n_test else []), log)
    with open(os.path.join(logdir, "test.txt")) as f:
      last = [json.loads(line) for line in f][-1]
    bits, n = mean_bits(scores)
    out[name] = {"test_bits_per_dim": bits, "images": n, "steps": int(last["step"])}
  loaded = sampling.load_model(os.path.join(workdir, "conditional"))
  model = loaded.model
  data = sampling._dataset(loaded, None)  # pylint: disable=protected-access
  mean_psnr, bicubic_psnr, count = 0., 0., 0
  for batch in data.test_dataset(500):
    if n_test and count >= n_test:
      break
    images = batch["image"][:n_test - count] if n_test else batch["image"]
    truth = model.postprocess(model.preprocess(images, noise=0.5)).numpy()
    c = model.condition(images)
    mean = model.sample(1, 0., conditioning=c).numpy()[0]
    bicubic = tf.image.resize(c, model.image_shape[:2], method="bicubic")
    bicubic = model.postprocess(tf.clip_by_value(bicubic, -.5, .5 - 1e-6)).numpy()
    crop = lambda x: x[:, 2:30, 2:30]
    k = len(truth)
    mean_psnr += _psnr(crop(mean), crop(truth)) * k
    bicubic_psnr += _psnr(crop(bicubic), crop(truth)) * k
    count += k
  out["psnr_28x28"] = {"temperature_0": mean_psnr / count, "bicubic": bicubic_psnr / count,
                       "images": count}
  first = next(iter(data.test_dataset(6)))["image"]
  rows = sampling.conditional_grid(model, first, (0., .5, .8), 4, seed=0)
  images_lib.save_png(grid_path, sampling.finish_grid(rows, model.image_shape, 2))
  log(f"wrote {grid_path}")
  return out


def mean_bits(path):
  """The mean of score.py's `bits_per_dim` column in the CSV `path`, and the number of images."""
  with open(path) as f:
    column = f.readline().strip().split(",").index("bits_per_dim")
    values = [float(line.split(",")[column]) for line in f if line.strip()]
  return sum(values) / len(values), len(values)


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--minutes", type=float, default=15.)
  p.add_argument("--workdir", default="/tmp/conditional_sr")
  p.add_argument("--n_test", type=int, default=0, help="test images to measure (0: all)")
  p.add_argument("--grid", default=os.path.join(ROOT, "docs", "conditional_sr.png"))
  p.add_argument("--measure_only", action="store_true", help="the runs exist: only measure")
  args = p.parse_args()
  import vs_tfp_glow  # pylint: disable=import-outside-toplevel
  log = lambda s: print(s, flush=True)
  log(f"CPU: {vs_tfp_glow.cpu_description()}; {args.minutes} minutes each")
  if not args.measure_only:
    for name, extra in (("unconditional", []), ("conditional", CONDITION)):
      logdir = os.path.join(args.workdir, name)
      start = time.time()
      run(["train.py"] + RECIPE + extra
           + [f"--time_budget_minutes={args.minutes}", f"--logdir={logdir}"], log)
      log(f"{name}: trained in {time.time() - start:.0f} s")
  result = measure(args.workdir, args.n_test, args.grid, log)
  u, c = result["unconditional"], result["conditional"]
  log(f"test bits/dim ({c['images']} images): unconditional {u['test_bits_per_dim']:.4f} "
      f"({u['steps']} steps), conditional {c['test_bits_per_dim']:.4f} ({c['steps']} steps): "
      f"{100 * (1 - c['test_bits_per_dim'] / u['test_bits_per_dim']):.1f}% lower")
  s = result["psnr_28x28"]
  log(f"PSNR on the 28x28 crop ({s['images']} images): temperature-0 sample "
      f"{s['temperature_0']:.2f} dB, bicubic {s['bicubic']:.2f} dB")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
