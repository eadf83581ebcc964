"""The spike guard: a finite but enormous step is skipped exactly; a healthy run is unchanged."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from glow_tf import spike_guard, train_lib
from tests import multi_worker
from tests.conftest import two_replica_strategy
from tests.test_train import ROOT, small_config


def test_statistics_warm_up_then_flag_loss_and_gradient_spikes():
  guard = spike_guard.SpikeGuard(threshold=10., warmup=3, decay=0.9)
  figure = lambda loss, norm: (tf.constant(loss, tf.float32), tf.constant(norm, tf.float32))
  assert not bool(guard.is_spike(*figure(5e15, 1.)))  # no statistics yet: warm-up
  assert not bool(guard.is_spike(*figure(np.inf, 1.)))  # (not finite: not a spike)
  for loss in (3.0, 3.2, 2.8):
    guard.update(*figure(loss, 2.), tf.constant(True), tf.constant(False))
  # A plain mean for the first 1 / (1 - decay) steps, and of the deviations from the
  # running mean before each step (the first step's counted as 0).
  np.testing.assert_allclose(guard.loss.numpy(), [3.0, (0. + 0.2 + 0.3) / 3], rtol=1e-6)
  assert int(guard.count.numpy()) == 3
  assert bool(guard.is_spike(*figure(5e15, 2.)))
  assert bool(guard.is_spike(*figure(3.0, 2e4)))  # the gradient norm alone
  assert not bool(guard.is_spike(*figure(3.5, 20.)))  # within the floors: 0.5 bits, e^3
  before = [v.numpy() for v in guard.variables]
  guard.update(*figure(np.inf, np.nan), tf.constant(False), tf.constant(True))  # a skipped step
  for a, v in zip(before, guard.variables):
    if v is not guard.spikes:
      np.testing.assert_array_equal(a, v.numpy())
  assert int(guard.spikes.numpy()) == 1
  with pytest.raises(ValueError, match="spike_threshold must be > 0"):
    spike_guard.SpikeGuard(threshold=0.)


def _inject_spike_at(monkeypatch, call):
  """train.py's step, but the `call`-th step sees a split prior predicting a log-scale of -15.

  Returns a list that receives, for that step, whether each variable of the
  run (weights, optimiser, guard but its spike count) came out unchanged.
  """
  build = train_lib.steps_lib.build_train_step
  unchanged = []

  def build_with_spike(model, optimizer, *args, **kwargs):
    step = build(model, optimizer, *args, **kwargs)
    guard = kwargs["spike_guard"]
    calls = [0]

    def spiking_step(iterator, stop_requested=False):
      calls[0] += 1
      if calls[0] != call:
        return step(iterator, stop_requested)
      bias = model.glow.priors[0].conv.bias
      saved = bias.numpy()
      state = [v for v in model.variables + optimizer.variables + guard.variables
               if v is not guard.spikes]
      before = [v.numpy() for v in state]
      bias.assign(tf.fill(bias.shape, -15.))  # one batch's loss is ~1e12 bits/dim, finite
      result = step(iterator, stop_requested)
      bias.assign(saved)
      unchanged.extend(np.array_equal(a, v.numpy()) for a, v in zip(before, state))
      assert result.finite and result.spike, result
      return result

    return spiking_step

  monkeypatch.setattr(train_lib.steps_lib, "build_train_step", build_with_spike)
  return unchanged


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_spiking_step_is_skipped_exactly_and_the_run_goes_on(tmp_path, monkeypatch, replicas):
  unchanged = _inject_spike_at(monkeypatch, call=6)
  strategy = two_replica_strategy() if replicas == 2 else tf.distribute.get_strategy()
  config = small_config(tmp_path / "run", max_steps=10, epochs=1, spike_warmup_steps=3)
  trainer = train_lib.prepare(config, strategy=strategy)
  before, _ = trainer.evaluate()
  assert trainer.train() == 10
  assert unchanged and all(unchanged)  # weights, moments, averages, statistics, count
  assert int(trainer.optimizer.iterations.numpy()) == 9
  assert int(trainer.spike_guard.spikes.numpy()) == 1
  after, _ = trainer.evaluate()
  assert after["bits_x"] < before["bits_x"]
  with open(tmp_path / "run" / "events.txt") as f:
    events = [json.loads(line)["event"] for line in f]
  assert any(e.startswith("step 6: loss spike") for e in events), events
  # The guard is checkpointed with the run.
  again = train_lib.prepare(config, strategy=strategy)
  assert int(again.spike_guard.spikes.numpy()) == 1
  assert int(again.spike_guard.count.numpy()) == 9
  again.close()


def test_the_guard_leaves_a_healthy_run_bit_identical(tmp_path):
  weights = {}
  for guard in (True, False):
    config = small_config(tmp_path / str(guard), max_steps=20, epochs=1, spike_guard=guard,
                          spike_warmup_steps=5)
    trainer = train_lib.prepare(config)
    assert trainer.train() == 20
    weights[guard] = [v.numpy() for v in trainer.variables]
    if guard:  # the guard was armed for most of the run and skipped nothing
      assert int(trainer.spike_guard.count.numpy()) == 20
      assert int(trainer.spike_guard.spikes.numpy()) == 0
    else:
      assert trainer.spike_guard is None
  for a, b in zip(weights[True], weights[False]):
    np.testing.assert_array_equal(a, b)


def test_a_rollback_restores_a_checkpoint_written_without_the_guard(tmp_path):
  """A run resumed with the guard on rolls back to its checkpoint from before (no guard in it)."""
  logdir = tmp_path / "run"
  old = train_lib.prepare(small_config(logdir, max_steps=2, epochs=1, spike_guard=False))
  assert old.train() == 2  # checkpoint of step 2, without spike statistics
  old.close()
  trainer = train_lib.prepare(small_config(logdir, max_steps=5, epochs=1, max_nonfinite_steps=2,
                                           max_rollbacks=1))
  assert int(trainer.step.numpy()) == 2 and trainer.spike_guard is not None
  actnorm = trainer.model.glow.levels[0][0].actnorm
  actnorm.shift.assign(tf.fill(actnorm.shift.shape, np.nan))  # undone by the rollback
  assert trainer.train() == 5
  assert int(trainer.recovery.rollbacks.numpy()) == 1
  assert all(np.all(np.isfinite(v.numpy())) for v in trainer.variables)
  trainer.close()


# Worker `index` of 2: train.py's run in process under MultiWorkerMirroredStrategy, where
# worker 1's batch of step 6 alone spikes (its split prior predicts a log-scale of -15).
SPIKING_WORKER = r'''
import json, sys
import tensorflow as tf
from glow_tf import train_lib
from tests.test_train import small_config

index, logdir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
strategy = tf.distribute.MultiWorkerMirroredStrategy()
build = train_lib.steps_lib.build_train_step
seen = {}

def build_with_spike(model, optimizer, *args, **kwargs):
  step = build(model, optimizer, *args, **kwargs)
  calls = [0]
  def spiking_step(iterator, stop_requested=False):
    calls[0] += 1
    if calls[0] != 6:
      return step(iterator, stop_requested)
    bias = model.glow.priors[0].conv.bias
    saved = bias.numpy()
    if index == 1:
      bias.assign(tf.fill(bias.shape, -15.))
    result = step(iterator, stop_requested)
    bias.assign(saved)
    seen.update(finite=bool(result.finite), spike=bool(result.spike))
    return result
  return spiking_step

train_lib.steps_lib.build_train_step = build_with_spike
config = small_config(logdir, max_steps=10, epochs=1, spike_warmup_steps=3)
trainer = train_lib.train_and_evaluate(config, strategy=strategy)
seen.update(iterations=int(trainer.optimizer.iterations.numpy()),
            spikes=int(trainer.spike_guard.spikes.numpy()),
            weights=[v.numpy().tolist() for v in trainer.variables[:6]])
# The evaluation's median (each worker scores its share) against numpy's over every image.
import numpy as np
from tests.test_train import every_test_image_bits
figures, n = trainer.evaluate()
bits = every_test_image_bits(trainer)
seen.update(median=figures["bits_x_median"], n=n, numpy_median=float(np.median(bits)),
            n_images=len(bits))
json.dump(seen, open(out, "w"))
'''


@pytest.mark.slow  # two worker processes
def test_two_workers_skip_a_spike_of_one_workers_batch_alike(tmp_path):
  """Only worker 1's batch spikes; the summed loss is the same on both, and both skip the step.

  Both then report the test median over every image of both workers.
  """
  ports = multi_worker.free_ports(2)
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  outs = [tmp_path / f"worker{i}.json" for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-c", SPIKING_WORKER, str(i), str(tmp_path / "run"),
                             str(outs[i])], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(env, **multi_worker.tf_config(ports, i)))
           for i in range(2)]
  try:
    results = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
  seen = [json.loads(o.read_text()) for o in outs]
  for s in seen:
    assert s["finite"] and s["spike"], s  # worker 0's own batch was ordinary
    assert s["iterations"] == 9 and s["spikes"] == 1, s
  assert seen[0]["weights"] == seen[1]["weights"]
  for s in seen:  # the test median is gathered over both workers' images
    assert s["n"] == s["n_images"] == 128, s
    assert s["median"] == pytest.approx(s["numpy_median"], rel=1e-5), s
