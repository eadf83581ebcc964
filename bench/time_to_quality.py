"""Time to quality: test bits/dim reached by glow_tf and tfp.bijectors.Glow in the same wall-clock budget.

Both train with train.py's step, `glow_tf.steps.build_train_step`, on
batches from `glow_tf.steps.with_noise` under the default strategy: ours
with its `GlowModel` and `GlowOptimizer`, tfp's through a thin adapter
(its loss in the same bits/dim, its `tf_keras` Adam applied only where the
step is finite). A step whose loss or gradients are not finite makes no
update, as in train.py (`StepResult.finite`), and is counted as skipped; a
run with `--max_nonfinite_steps` skipped in a row is reported as diverged and
stops.

Both train the same architecture (32x32x1 Fashion-MNIST, `--n_levels`
levels of `--depth` steps, coupling networks of `--width`, affine coupling,
LU 1x1 convolutions) with the same optimiser (Adam, `--lr`), the same batches
in the same order and the same preprocessing (8-bit images, `x = (img + u) /
256 - 0.5`, `u ~ U[0, 1)`), in one process. They take turns: each trains for
`--slice_seconds` of its own wall-clock time, then the other, so that load on
the shared machine hits both alike. Each one's clock includes its tracing and
first step (what a user waits for), not the evaluations. At every
`--eval_every` fraction of the budget both are evaluated on the same test
images (raw weights for both: no Polyak averaging), and at the end on the
whole test set.

  python bench/time_to_quality.py                  # 15 minutes each
  python bench/time_to_quality.py --minutes=2 --n_test_partial=500   # a quick look
  python bench/time_to_quality.py --jit=tfp        # tfp in its XLA mode
  python bench/time_to_quality.py --impls=ours,ours-bf16   # float32 vs mixed_bfloat16
  python bench/time_to_quality.py --impls=ours,ours-bf16 --steps=3500 --eval_every=0.1
      # the same number of steps each (step-matched, not time-matched)
  python bench/time_to_quality.py --impls=ours,ours-bf16 --steps=3500 --seed=1
      # another draw of the batches' order, the noise and ours' initial weights

`ours-bf16` is ours with `precision="mixed_bfloat16"` (what `--precision=auto`
picks on a GPU or a CPU with AMX). With `--steps` each trains that many steps
instead of a time budget and is evaluated every `--eval_every` of them; the
lines then also give the mean and the largest training loss since the last
evaluation, where a loss spike shows.

Data: Fashion-MNIST from Debian's `dataset-fashion-mnist` (or `--data_dir`).
"""

import argparse
import math
import os
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--minutes", type=float, default=15.)
  p.add_argument("--steps", type=int, default=0,
                 help="train this many steps each instead of --minutes (step-matched)")
  p.add_argument("--n_levels", type=int, default=2)
  p.add_argument("--depth", type=int, default=8)
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--lr", type=float, default=5e-4)
  p.add_argument("--slice_seconds", type=float, default=30.)
  p.add_argument("--eval_every", type=float, default=1 / 3, help="fraction of the budget")
  p.add_argument("--n_test_partial", type=int, default=2000)
  p.add_argument("--data_dir", default=None)
  p.add_argument("--seed", type=int, default=0,
                 help="seeds the batches' order, the dequantisation noise, the initialisation "
                      "batch and ours' initial weights (the same for every implementation)")
  p.add_argument("--max_nonfinite_steps", type=int, default=None,
                 help="consecutive skipped (non-finite) steps before a run is reported as "
                      "diverged and stops (default: train.py's)")
  p.add_argument("--impls", default="ours,tfp", help="comma-separated: ours, ours-bf16, tfp")
  p.add_argument("--jit", default="",
                 help="comma-separated implementations (ours, tfp) whose loss and gradient "
                      "computation is compiled with XLA (build_train_step's jit_compile=True): "
                      "compare each in its faster mode, "
                      "e.g. --jit=tfp where tfp trains faster under XLA (bench/RESULTS.md)")
  args = p.parse_args()
  jit = set(filter(None, args.jit.split(",")))
  if not jit <= {"ours", "tfp"}:
    p.error(f"--jit takes ours and/or tfp, got {args.jit!r}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  import tf_keras
  from glow_tf import data as data_lib
  from glow_tf import config as config_lib
  from glow_tf import optim, steps as steps_lib
  if args.max_nonfinite_steps is None:
    args.max_nonfinite_steps = config_lib.TrainConfig.max_nonfinite_steps
  if args.max_nonfinite_steps < 1:
    p.error(f"--max_nonfinite_steps must be at least 1, got {args.max_nonfinite_steps}")
  import vs_tfp_glow

  # dal=0: the recipe measured in RESULTS.md trains on the images as they are.
  ds = data_lib.load(data_lib.DataConfig(dataset="fashion_mnist", data_dir=args.data_dir, dal=0))
  shape = ds.image_shape
  d = int(np.prod(shape))
  test = np.concatenate([b["image"].numpy() for b in ds.test_dataset(1000)])
  init_images = ds.init_batch(256, seed=args.seed)["image"]

  def dequantise(images, noise):  # uint8 images, noise in [0, 1) -> x = (img + u) / 256 - 0.5
    return (tf.cast(images, tf.float32) + tf.cast(noise, tf.float32)) / 256. - .5

  def preprocess(images, seed):
    return dequantise(images, tf.random.stateless_uniform(tf.shape(images), seed))

  def bpd(log_prob_nats):  # continuous density on [-0.5, 0.5) -> discrete bits/dim
    return -(log_prob_nats - d * math.log(256.)) / (d * math.log(2.))

  # (Not a seed `with_noise` draws the training batches' noise from: [seed * 1000 + stream, i].)
  x_init = preprocess(init_images, [1, args.seed])

  class TfpModel:
    """What `build_train_step` uses of a `GlowModel`, for tfp's flow: its loss in bits/dim."""
    config = types.SimpleNamespace(ycond=False)

    def __init__(self, dist):
      self.dist = dist
      self.trainable_variables = list(dist.trainable_variables)

    def losses(self, images, labels=None, noise=None):
      del labels
      bits = bpd(self.dist.log_prob(dequantise(images, noise)))
      return {"bits_x": bits, "loss": bits}

  class GatedOptimizer:
    """A Keras optimiser with `GlowOptimizer.apply_gradients`'s `apply_if`: the update only where true."""

    def __init__(self, optimizer):
      self.optimizer = optimizer

    def apply_gradients(self, grads_and_vars, apply_if=None):
      grads_and_vars = list(grads_and_vars)

      def apply():
        self.optimizer.apply_gradients(grads_and_vars)
        return tf.constant(True)

      return tf.cond(apply_if, apply, lambda: tf.constant(False))

  strategy = tf.distribute.get_strategy()

  class Runner:
    def __init__(self, name):
      self.name = name
      self.clock = 0.
      self.steps = 0
      data = steps_lib.with_noise(ds.train_dataset(args.batch, seed=args.seed), seed=args.seed,
                                  stream=steps_lib.TRAIN_NOISE_STREAM)  # the same batches and noise
      self.iterator = iter(strategy.experimental_distribute_dataset(data))
      self.history = []
      self.losses = []  # training losses since the last evaluation
      self.last_loss = math.nan  # the last finite one
      self.diverged = None  # the step at which it stopped: too many non-finite steps in a row
      self.skipped = []  # the (1-based) steps whose loss or gradients were not finite
      self.skipped_in_a_row = 0
      t0 = time.perf_counter()
      cfg = dict(image_shape=shape, n_levels=args.n_levels, depth=args.depth, width=args.width,
                 seed=args.seed)
      if name in ("ours", "ours-bf16"):
        if name == "ours-bf16":
          cfg["precision"] = "mixed_bfloat16"
        model = vs_tfp_glow.build_ours(cfg)
        model.glow.initialize(x_init)
        self.dist = model.distribution
        optimizer = optim.GlowOptimizer("adam", args.lr, beta1=0.9, beta2=0.999, epsilon=1e-7)
        optimizer.build(list(model.trainable_variables))
      else:
        self.dist = vs_tfp_glow.build_tfp(cfg, x_init)
        model = TfpModel(self.dist)
        keras_optimizer = tf_keras.optimizers.Adam(args.lr, jit_compile=False)
        keras_optimizer.build(model.trainable_variables)  # its slots exist before the step's tf.cond
        optimizer = GatedOptimizer(keras_optimizer)
      self.train_step = steps_lib.build_train_step(model, optimizer, strategy, args.batch,
                                                   tf.Variable(0, dtype=tf.int64),
                                                   jit_compile=name in jit)
      dist = self.dist

      @tf.function
      def eval_step(images, seed):
        return tf.reduce_sum(bpd(dist.log_prob(preprocess(images, seed))))

      self.eval_step = eval_step
      self.clock += time.perf_counter() - t0
      self.n_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))

    def train_for(self, seconds, until_step=math.inf):
      t0 = time.perf_counter()
      while time.perf_counter() - t0 < seconds and self.steps < until_step:
        result = self.train_step(self.iterator)
        self.steps += 1
        loss = float(result.sums["loss"]) / args.batch
        if not result.finite:  # no update was made
          self.skipped.append(self.steps)
          self.skipped_in_a_row += 1
          print(f"{self.name}: loss {loss} or its gradients not finite at step "
                f"{self.steps}: update skipped", flush=True)
          if self.skipped_in_a_row == args.max_nonfinite_steps:
            self.diverged = self.steps
            print(f"{self.name}: {args.max_nonfinite_steps} non-finite steps in a row: "
                  "diverged, stops training", flush=True)
            break
          continue
        self.skipped_in_a_row = 0
        self.last_loss = loss
        self.losses.append(loss)
      self.clock += time.perf_counter() - t0

    def evaluate(self, n):
      total = 0.
      for i in range(0, n, 500):
        total += float(self.eval_step(test[i:i + 500], tf.constant([2, i])))
      return total / n

  by_steps = args.steps > 0
  budget = args.steps if by_steps else args.minutes * 60.
  budget_text = f"{args.steps} steps" if by_steps else f"{args.minutes:g} min"
  print(f"budget {budget_text} each; "
        f"{args.n_levels} levels x depth {args.depth}, "
        f"width {args.width}, batch {args.batch}, Adam lr {args.lr}; training steps under "
        f"XLA: {', '.join(sorted(jit)) or 'none'}; seed {args.seed}", flush=True)
  runners = [Runner(name) for name in args.impls.split(",")]
  for r in runners:
    print(f"{r.name}: {r.n_params:,} parameters, built in {r.clock:.1f} s", flush=True)
  marks = [budget * min(1., args.eval_every * k) for k in range(1, int(math.ceil(1 / args.eval_every)) + 1)]
  for mark in marks:
    if by_steps:
      for r in runners:
        if r.diverged is None:
          r.train_for(math.inf, until_step=int(round(mark)))
    live = lambda r: r.clock < mark and r.diverged is None
    while not by_steps and any(live(r) for r in runners):
      for r in runners:
        if live(r):
          r.train_for(min(args.slice_seconds, mark - r.clock))
    final = mark >= budget
    n = len(test) if final else min(args.n_test_partial, len(test))
    for r in runners:
      if r.diverged is not None:
        print(f"{r.name:4s} diverged at step {r.diverged}", flush=True)
        continue
      value = r.evaluate(n)
      r.history.append((r.clock, r.steps, value))
      since = (f", training loss since the last evaluation: mean {sum(r.losses) / len(r.losses):.3f},"
               f" max {max(r.losses):.3f}" if by_steps and r.losses else "")
      r.losses = []
      print(f"{r.name:9s} after {r.clock / 60:5.1f} min, {r.steps:6d} steps "
            f"({r.steps * args.batch / r.clock:5.1f} img/s incl. start-up): test bits/dim "
            f"{value:.4f} on {n} images (train batch loss {r.last_loss:.3f}{since})", flush=True)
  print(f"\nafter {budget_text} each:")
  for r in runners:
    last = f"{r.history[-1][2]:.4f} bits/dim" if r.history else "no evaluation"
    state = f", diverged at step {r.diverged}" if r.diverged else ""
    if r.skipped:
      state += f", {len(r.skipped)} non-finite step(s) skipped: {r.skipped[:10]}"
    print(f"  {r.name}: {last} ({r.steps} steps{state})")


if __name__ == "__main__":
  main()
