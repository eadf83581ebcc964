"""What to do with a spiking step: skip it (the spike guard), clip its gradient, or apply it.

Replays a run of train.py to the step before `--step` (as
`bench/spike_replay.py` does: bit-exact, from its newest checkpoint before
the step or from its start), then takes that step four ways from the same
state:

* `skip`: no update (what train.py's spike guard does);
* `clip_limit`: the gradient scaled to the largest global norm the guard
  lets through (its running mean log-norm plus `threshold` deviations);
* `clip_mean`: scaled to the guard's running geometric-mean norm;
* `apply`: the update as computed (what the original does).

The policy's step is computed eagerly and does not feed the guard's
statistics. Each then trains on for `--after` steps with train.py's own
step (the guard on), on the same batches and noise (a rollback there goes
back to the state after the policy's step), and is evaluated on the run's
test images. Printed per policy: the mean training loss over the first 50
and the remaining steps after the spike, and test bits/dim at the end, or
why the run could not go on. Run it on as
many cores as the run had (e.g. under `taskset`), so that TensorFlow sums in
the same order and the spike reproduces.

  taskset -c 0 python bench/spike_response.py --logdir=runs/fmnist --step=695 --after=200
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

POLICIES = ("skip", "clip_limit", "clip_mean", "apply")


def take_step(trainer, step: int, policy: str) -> dict:
  """Takes step `step` on `trainer` (at `step - 1`) under `policy`; returns its figures."""
  import numpy as np
  import tensorflow as tf
  import spike_replay
  model, guard = trainer.model, trainer.spike_guard
  batch = spike_replay.batch_at(trainer, step)
  variables = list(model.trainable_variables)
  conditions = model.batch_conditions(batch)
  with tf.GradientTape() as tape:
    out = model.losses(batch["image"], conditions["labels"], noise=batch["noise"],
                       conditioning=conditions["conditioning"])
    loss = tf.reduce_sum(out["loss"]) / trainer.schedule.images_per_step
  grads = tape.gradient(loss, variables)
  norm = float(tf.linalg.global_norm(grads).numpy())
  mean_log = float(guard.log_norm.numpy()[0])
  limit = float(np.exp(guard.limits().numpy()[1]))
  target = {"skip": None, "apply": norm, "clip_limit": min(norm, limit),
            "clip_mean": min(norm, float(np.exp(mean_log)))}[policy]
  if target is not None:
    scale = tf.constant(target / norm, tf.float32)
    optimizer = trainer.optimizer
    optimizer.apply_gradients([(g * tf.cast(scale, g.dtype), v) for g, v in zip(grads, variables)])
  trainer.step.assign_add(1)
  return {"loss": float(loss.numpy()), "grad_norm": norm,
          "guard_limit": limit, "applied_norm": target or 0.}


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--logdir", required=True, help="the run's train.py --logdir")
  p.add_argument("--step", type=int, required=True, help="the spiking step (1-based)")
  p.add_argument("--after", type=int, default=200, help="steps to train after it")
  p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated, of " + ", ".join(POLICIES))
  args = p.parse_args()
  policies = args.policies.split(",")
  if not set(policies) <= set(POLICIES):
    p.error(f"--policies: choose from {', '.join(POLICIES)}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import numpy as np
  import spike_replay
  import vs_tfp_glow
  from glow_tf import rundir, train_lib

  print(f"CPU: {vs_tfp_glow.cpu_description()}; {args.logdir} step {args.step}, "
        f"{args.after} steps after", flush=True)
  trainer, config, scratch, start = spike_replay.replay(args.logdir, args.step)
  try:
    state = trainer.save_checkpoint()
    trainer.close()
    for policy in policies:
      workdir = os.path.join(scratch, policy)
      train = dataclasses.replace(config.train, logdir=workdir, restore_path=state,
                                  max_steps=args.step - 1, time_budget_minutes=None,
                                  epochs_full_valid=10 ** 6, epochs_full_sample=10 ** 6,
                                  checkpoint_every_minutes=10 ** 6, log_every_steps=1)
      run = dataclasses.replace(config, train=train)
      trainer = train_lib.prepare(run, stream=open(os.devnull, "w"))
      figures = take_step(trainer, args.step, policy)
      try:
        trainer.save_checkpoint()
      except train_lib.TrainingError as e:  # the policy's update made the weights non-finite
        print(f"{policy:>10}: the step's loss {figures['loss']:.4g} bits/dim; {e}", flush=True)
        continue
      finally:
        trainer.close()
      # On from the step's checkpoint in `workdir`, with train.py's loop.
      train = dataclasses.replace(train, restore_path="", max_steps=args.step + args.after)
      trainer = train_lib.prepare(dataclasses.replace(run, train=train),
                                  stream=open(os.devnull, "w"))
      try:
        trainer.train()
      except train_lib.TrainingError as e:  # the policy left a run that cannot go on
        trainer.close()
        print(f"{policy:>10}: the step's loss {figures['loss']:.4g} bits/dim, gradient norm "
              f"{figures['grad_norm']:.4g} (guard's limit {figures['guard_limit']:.4g}, applied "
              f"{figures['applied_norm']:.4g}); the run could not go on: {str(e)[:160]}", flush=True)
        continue
      test, n_images = trainer.evaluate()
      trainer.close()
      logged = [json.loads(line) for line in open(rundir.RunDir(workdir).log_path("train"))]
      losses = [(r["step"], r["loss"]) for r in logged if r["step"] > args.step]
      first = np.mean([v for s, v in losses if s <= args.step + 50])
      rest = np.mean([v for s, v in losses if s > args.step + 50]) if args.after > 50 else float("nan")
      print(f"{policy:>10}: the step's loss {figures['loss']:.4g} bits/dim, gradient norm "
            f"{figures['grad_norm']:.4g} (guard's limit {figures['guard_limit']:.4g}, applied "
            f"{figures['applied_norm']:.4g}); training loss after it: steps 1-50 {first:.4f}, "
            f"51-{args.after} {rest:.4f}; test bits/dim at step {args.step + args.after} "
            f"({n_images} images): {test['bits_x']:.4f}", flush=True)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
  main()
