"""Time to the first training batch after resuming at step N: the working tree vs a git revision.

A resumed run must produce the batches (and dequantisation noise) an
uninterrupted run would have at step N. This measures, for each N, the
seconds from building train.py's input pipeline (data set loaded, as the
trainer does) to holding its first batch, on two data sources written here:
a folder of 64x64 PNG files and the original's TFRecord shards (64x64, r06),
batch 16 as in issue 19's measurement. `--base` is the revision to compare
against (exported by `git archive` as package `glow_tf_base`); its pipeline is
rebuilt the way its trainer built it (decode, batch, noise, then skip N).
(The two orders differ since each epoch got its own seed; that a resumed
pipeline gives the uninterrupted one's batches is tested in
`tests/test_data.py` and, through train.py, by the SIGKILL and SIGTERM tests.)

  python bench/resume_time.py --base=pre-restructure --steps=10,1000,10000,100000 \
      --max_base_step=10000
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_sources(root, n, size=64):
  import numpy as np
  import tensorflow as tf
  from PIL import Image
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, [n, size, size, 3]).astype(np.uint8)
  folder = os.path.join(root, "folder")
  os.makedirs(folder)
  for i, image in enumerate(images):
    Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.png"))
  shards = os.path.join(root, "shards")
  res = int(np.log2(size))
  for split in ("train", "validation"):
    os.makedirs(os.path.join(shards, split))
    for shard in range(4):
      path = os.path.join(shards, split, f"{split}-r{res:02d}-s-{shard:04d}-of-0004.tfrecords")
      with tf.io.TFRecordWriter(path) as w:
        for image in images[shard::4]:
          feature = {
              "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(image.shape))),
              "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
              "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))}
          w.write(tf.train.Example(features=tf.train.Features(feature=feature))
                  .SerializeToString())
  return {"folder": ("folder", folder), "shards": ("celeba", shards)}


def first_batch_new(dataset, data_dir, step, batch):
  from glow_tf import config, data, steps
  ds = data.load(config.DataConfig(dataset=dataset, data_dir=data_dir, image_size=64))
  pipeline = steps.with_noise(ds.train_dataset(batch, seed=0, start_step=step), 0,
                              steps.TRAIN_NOISE_STREAM, first_batch=step)
  return next(iter(pipeline))


def first_batch_base(dataset, data_dir, step, batch):
  import tensorflow as tf
  from glow_tf_base import data
  ds = data.load(data.DataConfig(dataset=dataset, data_dir=data_dir, image_size=64,
                                 n_batch_train=batch, seed=0))

  def add(index, b):  # the base trainer's _with_noise (seed 0, stream 0)
    b = dict(b)
    b["noise"] = tf.random.stateless_uniform(tf.shape(b["image"]),
                                             tf.stack([tf.constant(0, tf.int64), index]))
    return b
  pipeline = ds.train_dataset(batch).enumerate().map(add).skip(step)
  return next(iter(pipeline))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--base", default="pre-restructure", help="git revision to compare against")
  p.add_argument("--steps", default="10,1000,10000,100000")
  p.add_argument("--max_base_step", type=int, default=10000,
                 help="skip the base at larger steps (it grows linearly: minutes)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--n_images", type=int, default=2000)
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import ab_step
  sys.path.insert(0, ab_step.as_base_package(args.base))
  cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                       text=True).stdout.split(":")[-1].strip()
  print(f"CPU: {cpu}; batch {args.batch}; {args.n_images} images of 64x64x3")
  sources = write_sources(tempfile.mkdtemp(), args.n_images)
  for name, (dataset, data_dir) in sources.items():
    for step in (int(s) for s in args.steps.split(",")):
      row = {}
      for impl, fn in (("new", first_batch_new), ("base", first_batch_base)):
        if impl == "base" and step > args.max_base_step:
          continue
        t = time.perf_counter()
        row[impl] = (fn(dataset, data_dir, step, args.batch), time.perf_counter() - t)
      base = f"base {row['base'][1]:7.2f} s" if "base" in row else "base (not run)"
      print(f"{name:7s} step {step:7d}: new {row['new'][1]:6.2f} s, {base}", flush=True)


if __name__ == "__main__":
  main()
