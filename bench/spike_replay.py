"""Where a training step's spike comes from: the image, the layer and the quantity that exploded.

Replays a run of train.py up to the step before `--step` (from the newest of
its checkpoints before it, into a scratch directory: the run itself is not
touched; resuming is bit-exact, so this is the run's own trajectory), then
takes that step's batch and noise as train.py draws them and prints
(with no checkpoint before the step, from the run's start: its seed fixes
it; run it on as many cores as the run had, e.g. under `taskset`, so that
TensorFlow sums in the same order):

* the batch's loss, and each image's bits/dim (the worst few);
* for the worst image against the batch's median image, level by level:
  each flow step's log-det and the split prior's smallest log-scale and
  largest |standardised latent| (`eps`), and the prior's log-density terms.

The layer whose figures differ by orders of magnitude for that one image is
the one that exploded.

  python bench/spike_replay.py --logdir=runs/fmnist --step=2833
"""

import argparse
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def replay(logdir: str, step: int):
  """Replays the run in `logdir` to the end of step `step - 1` in a scratch directory.

  Returns `(trainer, config, scratch, start)`: the `train_lib.Trainer` there
  (close it, and remove `scratch`, when done), the run's config and the
  checkpoint it started from (`""`: the run's start).
  """
  import dataclasses
  from glow_tf import rundir, train_lib
  run = rundir.RunDir(logdir)
  config = run.read_config()
  before = [c for c in run.training_checkpoints() if int(c.rsplit("-", 1)[1]) < step]
  # (none before the step: the run is replayed from its start, which its seed fixes)
  start = max(before, key=lambda c: int(c.rsplit("-", 1)[1])) if before else ""
  scratch = tempfile.mkdtemp(prefix="spike_replay_")
  train = dataclasses.replace(config.train, logdir=scratch, restore_path=start,
                              max_steps=step - 1, time_budget_minutes=None,
                              epochs_full_valid=10 ** 6,
                              epochs_full_sample=10 ** 6, checkpoint_every_minutes=10 ** 6)
  trainer = train_lib.prepare(dataclasses.replace(config, train=train),
                              stream=open(os.devnull, "w"))
  if int(trainer.step.numpy()) < step - 1:
    trainer.train()
  assert int(trainer.step.numpy()) == step - 1
  return trainer, config, scratch, start


def batch_at(trainer, step: int):
  """The batch (`{'image', 'label', 'noise'}`) that train.py trains step `step` on."""
  from glow_tf import steps
  train = trainer.config.train
  index = step - 1  # step N trains on batch N - 1
  data = steps.with_noise(trainer.dataset.train_dataset(trainer.schedule.images_per_step,
                                                        train.seed, start_step=index),
                          train.seed, steps.TRAIN_NOISE_STREAM, first_batch=index)
  return next(iter(data))


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--logdir", required=True, help="the run's train.py --logdir")
  p.add_argument("--step", type=int, required=True, help="the step to look at (1-based)")
  p.add_argument("--worst", type=int, default=5, help="images to list")
  args = p.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import tensorflow as tf
  from glow_tf.bijectors import squeeze as squeeze_lib

  trainer, config, scratch, start = replay(args.logdir, args.step)
  try:
    model, glow = trainer.model, trainer.model.glow
    batch = batch_at(trainer, args.step)
    labels = batch.get("label") if config.model.ycond else None
    bits = model.losses(batch["image"], labels, noise=batch["noise"])["bits_x"].numpy()
    print(f"step {args.step} (replayed from {start or 'the start'}): batch loss {bits.mean():.6g} bits/dim; "
          f"median image {np.median(bits):.6g}")
    order = np.argsort(-bits)
    for i in order[:args.worst]:
      print(f"  image {i} of the batch: {bits[i]:.6g} bits/dim")
    worst, median = int(order[0]), int(order[len(order) // 2])
    x = model.preprocess(batch["image"], batch["noise"])
    z = tf.gather(x, [worst, median])
    print(f"level by level, image {worst} (worst) | image {median} (median):")
    for level, level_steps in enumerate(glow.levels):
      z = squeeze_lib.squeeze(z)
      for k, step in enumerate(level_steps):
        z, ldj = step.inverse_with(step.params(), z)
        ldj = np.broadcast_to(ldj.numpy(), [2])
        print(f"  level {level} step {k}: log-det {ldj[0]:.6g} | {ldj[1]:.6g}; "
              f"max |z| {np.abs(z[0].numpy()).max():.4g} | {np.abs(z[1].numpy()).max():.4g}")
      if level < len(glow.levels) - 1:
        z1, z2 = tf.split(z, 2, axis=-1)
        mean, log_scale = glow.priors[level](z1)
        eps = ((z2 - mean) * tf.exp(-log_scale)).numpy()
        ls = log_scale.numpy()
        for name, a, b in (("smallest log-scale", ls[0].min(), ls[1].min()),
                           ("sum of log-scales", ls[0].sum(), ls[1].sum()),
                           ("max |eps|", np.abs(eps[0]).max(), np.abs(eps[1]).max()),
                           ("sum eps^2 / 2", 0.5 * np.square(eps[0].astype(np.float64)).sum(),
                            0.5 * np.square(eps[1].astype(np.float64)).sum())):
          print(f"  level {level} split prior, {name}: {a:.6g} | {b:.6g}")
        z = z1
    print(f"  top latent: sum z^2 / 2 {0.5 * np.square(z[0].numpy()).sum():.6g} | "
          f"{0.5 * np.square(z[1].numpy()).sum():.6g}")
    trainer.close()
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  main()
