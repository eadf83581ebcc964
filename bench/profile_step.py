"""Where a training step's (or `--log_prob`'s) time goes: TF op types ranked by time, from the profiler.

Builds one implementation at a configuration of `vs_tfp_glow.py`, runs a few
training steps under `tf.profiler.experimental`, and prints the total time
per op type (summed over the executor's op events on all threads, so the sum
can exceed wall time on 2 cores), the op count per step and the wall time.

  python bench/profile_step.py --config=a --impl=ours
  python bench/profile_step.py --config=b --impl=tfp --top=25
  python bench/profile_step.py --config=a --impl=ours --log_prob --steps=10
  python bench/profile_step.py --config=a --batch=1   # the step's fixed cost: ~no arithmetic
"""

import argparse
import collections
import glob
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="a")
  p.add_argument("--impl", default="ours", choices=["ours", "tfp"])
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=20)
  p.add_argument("--recompute", action="store_true")
  p.add_argument("--batch", type=int, default=0,
                 help="images per step instead of the configuration's (1: what a step "
                      "costs beyond its arithmetic, e.g. the per-op overhead)")
  p.add_argument("--log_prob", action="store_true",
                 help="profile log_prob of the batch (scoring) instead of a training step")
  p.add_argument("--names", default="",
                 help="also list the op names of these types (comma-separated)")
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  import tf_keras
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  import vs_tfp_glow

  cfg = dict(vs_tfp_glow.CONFIGS[args.config])
  cfg["recompute"] = args.recompute
  cfg["batch"] = args.batch or cfg["batch"]
  h, w, c = cfg["image_shape"]
  d = h * w * c
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, [cfg["batch"], h, w, c]).astype(np.float32)
  x = tf.constant(images / 256. - .5 + rng.uniform(0, 1. / 256, images.shape).astype(np.float32))
  if args.impl == "ours":
    from glow_tf import optim
    model = vs_tfp_glow.build_ours(cfg)
    model.glow.initialize(x)
    log_prob = model.distribution.log_prob
    optimizer = optim.GlowOptimizer("adam", 1e-4, beta1=0.9, beta2=0.999, epsilon=1e-7,
                                    polyak=False)
    optimizer.build(list(model.trainable_variables))
  else:
    model = vs_tfp_glow.build_tfp(cfg, x)
    log_prob = model.log_prob
    optimizer = tf_keras.optimizers.Adam(1e-4, jit_compile=False)
  variables = list(model.trainable_variables)

  @tf.function
  def train_step(x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(log_prob(x)) / (d * math.log(2.)) + 8.
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss

  if args.log_prob:
    train_step = tf.function(log_prob, autograph=False)
  for _ in range(2):
    train_step(x).numpy()
  t = time.perf_counter()
  for _ in range(args.steps):
    train_step(x).numpy()
  wall = (time.perf_counter() - t) / args.steps
  logdir = tempfile.mkdtemp()
  tf.profiler.experimental.start(logdir)
  for _ in range(args.steps):
    train_step(x).numpy()
  tf.profiler.experimental.stop()
  path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  by_type, count = collections.Counter(), collections.Counter()
  by_name = collections.Counter()
  show = set(filter(None, args.names.split(",")))
  for plane in space.planes:
    names = {k: m.name for k, m in plane.event_metadata.items()}
    for line in plane.lines:
      for ev in line.events:
        name = names.get(ev.metadata_id, "")
        if ":" not in name:  # TF op events are "name:Type"
          continue
        op_type = name.rsplit(":", 1)[1]
        if op_type in ("__inference", "") or op_type.startswith("__"):
          continue
        by_type[op_type] += ev.duration_ps / 1e12
        count[op_type] += 1
        if op_type in show:
          by_name[name] += ev.duration_ps / 1e12
  total = sum(by_type.values())
  n_ops = sum(count.values()) / args.steps
  what = "log_prob" if args.log_prob else "train step"
  print(f"{args.impl} config {args.config} (batch {cfg['batch']}) {what}: wall {wall * 1e3:.1f} ms/step, "
        f"{n_ops:.0f} op events/step, op time {total / args.steps * 1e3:.1f} ms/step")
  print(f"{'op type':32s} {'ms/step':>9s} {'share':>6s} {'count/step':>10s} {'us/op':>8s}")
  for op_type, sec in by_type.most_common(args.top):
    n = count[op_type] / args.steps
    print(f"{op_type:32s} {sec / args.steps * 1e3:9.2f} {sec / total:6.1%} {n:10.0f} "
          f"{sec / count[op_type] * 1e6:8.1f}")

  for name, sec in by_name.most_common(args.top):
    print(f"  {sec / args.steps * 1e3:8.2f} ms  {name}")


if __name__ == "__main__":
  main()
