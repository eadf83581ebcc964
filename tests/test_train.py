"""Training: real runs on Fashion-MNIST, replicas, workers, kill-and-resume, the CLI."""

import dataclasses
import glob
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from typing import NamedTuple

import numpy as np
import pytest
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import hardware
from glow_tf import rundir
from glow_tf import train_lib
from tests import multi_worker
from tests.synthetic_data import FASHION_MNIST_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny architecture on Fashion-MNIST images (Debian's, else the tests' own IDX files).
SMALL = ["--dataset=fashion_mnist", "--n_levels=2", "--depth=2", "--width=16",
         "--train_subset=640", "--n_train=640", "--n_test=128", "--n_batch_train=32",
         "--n_batch_test=64",
         "--n_batch_init=64", "--n_sample=3", "--log_every_steps=5", "--epochs_warmup=0"
         ] + ([f"--data_dir={FASHION_MNIST_DIR}"] if FASHION_MNIST_DIR else [])


FAULT_ARGS = SMALL + ["--n_train=160", "--epochs_full_valid=100", "--epochs_full_sample=100",
                      "--quick_valid_batches=1"]  # 5 steps/epoch


def small_config(logdir, data_dir=FASHION_MNIST_DIR, **train_overrides):
  data = config_lib.DataConfig(dataset="fashion_mnist", data_dir=data_dir, train_subset=640,
                               n_test=128)
  model = config_lib.ModelConfig(image_shape=None, n_levels=2, depth=2, width=16,
                                 flow_coupling="affine")
  train = dict(logdir=str(logdir), n_train=640, n_batch_train=32, n_batch_test=64,
               n_batch_init=64, epochs_warmup=0., lr=0.003, n_sample=3, log_every_steps=5,
               epochs_full_valid=1, epochs_full_sample=1)
  train.update(train_overrides)
  return config_lib.RunConfig(data, model, config_lib.TrainConfig(**train))


def run_cli(args, timeout=600, env=None):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py")] + args,
                        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


class ShortRun(NamedTuple):
  """A 40-step run on Fashion-MNIST, shared by the tests of what a run leaves behind."""
  trainer: train_lib.Trainer
  logdir: str
  before: dict  # test figures before training
  after: dict  # and after
  steps: int


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
  logdir = tmp_path_factory.mktemp("short") / "run"
  trainer = train_lib.prepare(small_config(logdir, epochs=2, n_train=640))  # 2 x 20 steps
  before, n = trainer.evaluate()
  assert n == 128
  steps = trainer.train()
  after, _ = trainer.evaluate()
  return ShortRun(trainer, str(logdir), before, after, steps)


def _records(logdir, name):
  with open(os.path.join(logdir, name)) as f:
    return [json.loads(line) for line in f]


def test_short_real_training_lowers_test_bits_per_dim_with_one_trace(short_run):
  assert short_run.steps == 40
  assert short_run.after["bits_x"] < short_run.before["bits_x"] - 0.3, short_run
  # The step function was traced once, not per step (evaluation included).
  assert short_run.trainer.train_step().tracing_count() == 1


def test_a_run_writes_checkpoints_logs_summaries_samples_and_its_config(short_run):
  logdir = short_run.logdir
  assert tf.train.latest_checkpoint(os.path.join(logdir, "checkpoints")).endswith("ckpt-40")
  assert glob.glob(os.path.join(logdir, "tensorboard", "events.out.tfevents.*"))
  train_log = _records(logdir, "train.txt")
  assert train_log[-1]["step"] == 40 and "bits_x" in train_log[-1]
  assert os.path.getsize(os.path.join(logdir, "samples_latest.png")) > 100
  saved = rundir.RunDir(logdir).read_config()
  assert saved.model.image_shape == (32, 32, 1) and saved.model.n_classes is None


def test_each_epoch_evaluates_the_raw_and_the_polyak_weights(short_run):
  test_log = _records(short_run.logdir, "test.txt")
  assert [r["full"] for r in test_log] == [True, True]
  last = test_log[-1]
  assert last["n_test_images"] == 128 and last["n_images"] == 40 * 32
  # The raw figure is what evaluate() gives now.
  assert last["bits_x"] == pytest.approx(short_run.after["bits_x"], rel=1e-5)
  assert abs(last["polyak_bits_x"] - last["bits_x"]) > 1e-3
  assert last["bits_x_median"] > 0 and last["polyak_bits_x_median"] > 0


def every_test_image_bits(trainer):
  """Each test image's bits/dim with its evaluation noise, computed here in one process: `[n_test]`."""
  from glow_tf import steps  # pylint: disable=import-outside-toplevel
  train = trainer.config.train
  batches = steps.with_noise(trainer.dataset.test_dataset(train.n_batch_test), train.seed,
                             steps.TEST_NOISE_STREAM)
  return np.concatenate([trainer.model.losses(b["image"], noise=b["noise"])["bits_x"].numpy()
                         for b in batches])


def test_the_test_median_is_over_every_image_of_every_replica(tmp_path, two_replicas):
  trainer = train_lib.prepare(small_config(tmp_path / "run", max_steps=1, epochs=1),
                              strategy=two_replicas)
  figures, n = trainer.evaluate()
  bits = every_test_image_bits(trainer)
  assert len(bits) == n == 128
  assert figures["bits_x_median"] == pytest.approx(float(np.median(bits)), rel=1e-5)
  assert figures["bits_x"] == pytest.approx(float(np.mean(bits)), rel=1e-5)
  trainer.close()


def test_load_model_takes_the_asked_weights_and_by_default_the_better(short_run):
  from glow_tf import sampling  # pylint: disable=import-outside-toplevel
  trainer, logdir = short_run.trainer, short_run.logdir
  averaged = trainer.optimizer.polyak_values(trainer.variables)
  polyak = sampling.load_model(logdir, polyak=True)
  for a, b in zip(polyak.model.trainable_variables, averaged):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
  raw = sampling.load_model(logdir, polyak=False)
  for a, b in zip(raw.model.trainable_variables, trainer.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  last = _records(logdir, "test.txt")[-1]
  default = sampling.load_model(logdir)
  better_is_polyak = last["polyak_bits_x"] < last["bits_x"]
  assert default.polyak == better_is_polyak
  assert ("Polyak-averaged" if better_is_polyak else "raw") in default.weights
  assert f"{last['bits_x']:.4f} raw" in default.weights
  for a, b in zip(default.model.trainable_variables,
                  (polyak if better_is_polyak else raw).model.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_best_checkpoint_is_kept_apart_and_sample_uses_it(tmp_path):
  logdir = tmp_path / "run"
  config = small_config(logdir, epochs=3, n_train=320, keep_checkpoints=1)  # 3 x 10 steps
  trainer = train_lib.prepare(config)
  trainer.train()
  with open(rundir.RunDir(str(logdir)).log_path("test")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [10, 20, 30] and all(r["full"] for r in records)
  best = min(records, key=lambda r: min(r["bits_x"], r["polyak_bits_x"]))
  assert [r["best"] for r in records] == [
      min(r["bits_x"], r["polyak_bits_x"]) <= min(min(q["bits_x"], q["polyak_bits_x"])
                                                   for q in records[:i + 1])
      for i, r in enumerate(records)]
  run = rundir.RunDir(str(logdir))
  assert [os.path.basename(p) for p in run.training_checkpoints()] == ["ckpt-30"]  # rotated
  found = rundir.resolve_checkpoint(str(logdir), "best")
  assert found == run.best_checkpoint() and found.endswith(f"ckpt-{best['step']}")
  assert os.path.dirname(found) == run.best_checkpoint_dir
  from glow_tf import sampling
  loaded = sampling.load_model(str(logdir), restore_path="best")
  assert loaded.checkpoint == found and loaded.directory == str(logdir)
  assert f"at step {best['step']}" in loaded.weights
  path, grid = sampling.run(config_lib.SampleConfig(logdir=str(logdir), restore_path="best",
                                                    n_samples=2, output=str(tmp_path / "s.png")))
  assert os.path.exists(path) and grid.ndim == 3
  with pytest.raises(rundir.NoCheckpointError, match="no best checkpoint in .*epochs_full_valid"):
    rundir.resolve_checkpoint(str(tmp_path / "elsewhere"), "best")


def test_one_replica_equals_two_replicas(tmp_path, two_replicas):
  results = []
  for name, strategy in (("one", tf.distribute.get_strategy()), ("two", two_replicas)):
    config = small_config(tmp_path / name, max_steps=3, epochs=1, log_every_steps=1)
    trainer = train_lib.prepare(config, strategy=strategy)
    init = [v.numpy().copy() for v in trainer.variables]
    assert trainer.train() == 3
    with open(rundir.RunDir(str(tmp_path / name)).log_path("train")) as f:
      losses = [json.loads(line)["loss"] for line in f]
    assert len(losses) == 3
    results.append((init, losses, [v.numpy() for v in trainer.variables], trainer))
  (init1, loss1, w1, _), (init2, loss2, w2, t2) = results
  for a, b in zip(init1, init2):  # actnorm initialisation included
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(loss1, loss2, rtol=1e-5)
  for a, b in zip(w1, w2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert max(np.abs(a - b).max() for a, b in zip(w1, init1)) > 1e-3  # training moved them
  for v in t2.variables:  # and the two replicas hold identical copies
    copies = [c.numpy() for c in two_replicas.experimental_local_results(v)]
    np.testing.assert_array_equal(copies[0], copies[1])


@pytest.mark.slow  # an option off by default; a short run under XLA
def test_jit_compiled_training_steps(tmp_path):
  trainer = train_lib.prepare(small_config(tmp_path / "run", max_steps=3, epochs=1,
                                           jit_compile=True))
  before = [v.numpy().copy() for v in trainer.variables]
  assert trainer.train() == 3
  assert max(np.abs(a - v.numpy()).max() for a, v in zip(before, trainer.variables)) > 1e-4


def test_mixed_bfloat16_training_lowers_the_loss_and_restores(tmp_path, monkeypatch):
  config = small_config(tmp_path / "run", max_steps=12, epochs=1)
  config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                 precision="mixed_bfloat16"))
  monkeypatch.setattr(hardware, "fast_bfloat16", lambda: False)  # as on an AVX2-only CPU
  stream = io.StringIO()
  trainer = train_lib.prepare(config, stream=stream)
  assert "bfloat16 is not native and fast" in stream.getvalue()
  assert all(v.dtype == tf.float32 for v in trainer.variables)  # float32 master weights
  batch = trainer.dataset.init_batch(64, seed=0)["image"]
  before = float(tf.reduce_mean(trainer.model.bits_per_dim(batch, noise=0.5)))
  assert trainer.train() == 12
  after = float(tf.reduce_mean(trainer.model.bits_per_dim(batch, noise=0.5)))
  assert after < before - 0.1, (before, after)
  trainer.save_checkpoint()
  restored = train_lib.prepare(config)  # rebuilt from logdir: same precision, same weights
  assert restored.model.config.precision == "mixed_bfloat16"
  for a, b in zip(trainer.variables, restored.variables):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss, grads, finite", [
    (1., [[3., 0.], [[4.]]], True),
    (np.inf, [[3., 0.], [[4.]]], False),  # an overflowed loss (a -inf log-density)
    (1., [[3., np.nan], [[4.]]], False),
    (1., [[3., 0.], [[-np.inf]]], False),
    (1., [[1e20, 0.], [[4.]]], False),  # its square overflows float32: counted as non-finite
])
def test_finite_and_norm_is_the_steps_check(loss, grads, finite):
  from glow_tf import steps  # pylint: disable=import-outside-toplevel
  ok, norm = steps.finite_and_norm(tf.constant(loss, tf.float32),
                                   [tf.constant(g, tf.float32) for g in grads])
  assert bool(ok) is finite
  if finite:
    assert float(norm) == pytest.approx(5.)


def test_nonfinite_steps_are_skipped_then_stop_without_bad_checkpoints(tmp_path):
  """The one traced step skips the update itself: weights, moments, averages and count unchanged."""
  config = small_config(tmp_path / "run", epochs=100, max_nonfinite_steps=3,
                        nonfinite_policy="stop")
  trainer = train_lib.prepare(config)
  trainer.save_checkpoint()
  before = trainer.manager.checkpoints
  actnorm = trainer.model.glow.levels[0][0].actnorm
  weights = [v.numpy() for v in trainer.variables]
  slots = [v.numpy() for v in trainer.optimizer.variables]
  actnorm.shift.assign(tf.fill(actnorm.shift.shape, np.nan))
  with pytest.raises(train_lib.TrainingError, match="3 consecutive steps"):
    trainer.train()
  assert trainer.train_step().tracing_count() == 1
  for a, b in zip(slots, trainer.optimizer.variables):
    np.testing.assert_array_equal(a, b.numpy())
  assert trainer.manager.checkpoints == before
  assert int(trainer.optimizer.iterations.numpy()) == 0  # no update was applied
  for w, v in zip(weights, trainer.variables):  # the weights as they were (the NaNs injected)
    if v is not actnorm.shift:
      np.testing.assert_array_equal(w, v.numpy())
  with pytest.raises(train_lib.TrainingError, match="non-finite"):
    trainer.save_checkpoint()


@pytest.mark.parametrize("start", ["initialised", "restore_path"])
def test_a_divergence_before_the_first_checkpoint_rolls_back_to_the_start(tmp_path, monkeypatch, start):
  """A new run checkpoints its starting state: its steps 3 and 4 going non-finite roll back to it."""
  first_step, overrides = 0, {}
  if start == "restore_path":  # a new run from another run's checkpoint of step 2
    other = train_lib.prepare(small_config(tmp_path / "other", epochs=1, max_steps=2))
    assert other.train() == 2
    other.close()
    first_step, overrides = 2, dict(restore_path=str(tmp_path / "other"))
  build = train_lib.steps_lib.build_train_step

  def build_breaking(model, optimizer, *args, **kwargs):
    step, calls = build(model, optimizer, *args, **kwargs), [0]

    def breaking_step(iterator, stop_requested=False):
      calls[0] += 1
      if calls[0] not in (3, 4):
        return step(iterator, stop_requested)
      shift = model.glow.levels[0][0].actnorm.shift
      saved = shift.numpy()
      shift.assign(tf.fill(shift.shape, np.nan))  # this step's loss is NaN
      result = step(iterator, stop_requested)
      shift.assign(saved)
      return result

    return breaking_step

  monkeypatch.setattr(train_lib.steps_lib, "build_train_step", build_breaking)
  config = small_config(tmp_path / "run", epochs=1, max_steps=first_step + 6, max_nonfinite_steps=2,
                        checkpoint_every_minutes=1000., **overrides)  # no periodic checkpoint
  trainer = train_lib.prepare(config)
  assert trainer.train() == first_step + 6
  # Its first two steps undone, then six again.
  assert int(trainer.optimizer.iterations.numpy()) == first_step + 6
  with open(tmp_path / "run" / "events.txt") as f:
    events = [json.loads(line)["event"] for line in f]
  assert any(f"ckpt-{first_step} (step {first_step})" in e for e in events if "rolled back" in e), events
  trainer.close()


def test_rollback_policy_recovers_from_an_injected_nan(tmp_path):
  config = small_config(tmp_path / "run", epochs=1, max_steps=8, max_nonfinite_steps=2,
                        nonfinite_policy="rollback", rollback_lr_factor=0.25, max_rollbacks=1)
  trainer = train_lib.prepare(config)
  trainer.save_checkpoint()  # the last good checkpoint, at step 0
  actnorm = trainer.model.glow.levels[0][0].actnorm
  actnorm.shift.assign(tf.fill(actnorm.shift.shape, np.nan))  # every step is now non-finite
  assert trainer.train() == 8  # rolled back to step 0, then trained on
  assert all(np.all(np.isfinite(v.numpy())) for v in trainer.variables)
  assert int(trainer.optimizer.iterations.numpy()) == 8
  assert float(trainer.optimizer.learning_rate) == pytest.approx(0.003 * 0.25)
  with open(tmp_path / "run" / "events.txt") as f:
    events = [json.loads(line)["event"] for line in f]
  assert any("rolled back to" in e and "multiplied by 0.25" in e for e in events), events
  # The lowered rate and the count are checkpointed: a restart keeps them.
  again = train_lib.prepare(dataclasses.replace(
      config, train=dataclasses.replace(config.train, max_steps=16)))
  assert float(again.optimizer.learning_rate) == pytest.approx(0.003 * 0.25)
  assert int(again.recovery.rollbacks.numpy()) == 1
  # At most max_rollbacks: the next run of NaNs stops the run.
  actnorm = again.model.glow.levels[0][0].actnorm
  actnorm.shift.assign(tf.fill(actnorm.shift.shape, np.nan))
  with pytest.raises(train_lib.TrainingError, match="after 1 rollbacks"):
    again.train()


def test_multi_worker_training_keeps_workers_identical_and_stops_together(tmp_path):
  """2 workers train in step; SIGTERM to the non-chief stops both after the same step."""
  ports = multi_worker.free_ports(2)
  logdir = tmp_path / "run"
  env_base = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py")] + FAULT_ARGS +
      ["--strategy=multi_worker", "--epochs=1000", f"--logdir={logdir}"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
      env=dict(env_base, **multi_worker.tf_config(ports, i)))
      for i in range(2)]
  try:
    _wait_for(lambda: glob.glob(str(logdir / "checkpoints" / "ckpt-[1-9]*.index")), procs[0])
    procs[1].send_signal(signal.SIGTERM)  # the non-chief worker only
    outs = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [75, 75], [o[1][-2000:] for o in outs]
  assert "on 2 replica(s)" in outs[0][0]
  reports = [next(line for line in out.splitlines() if "weights sha256" in line)
             for out, _ in outs]
  steps = [int(r.split(" at step ")[1].split(";")[0]) for r in reports]
  digests = [r.split("sha256")[-1].strip() for r in reports]
  assert "stopped by a signal to another worker" in reports[0]
  assert "stopped by SIGTERM" in reports[1]
  assert steps[0] == steps[1] and digests[0] == digests[1], reports
  assert _final_weights(logdir)[1] == steps[0]  # the chief wrote that step's checkpoint


def _final_weights(logdir):
  reader = tf.train.load_checkpoint(os.path.join(logdir, "checkpoints"))
  names = sorted(k for k in reader.get_variable_to_shape_map()
                 if k.startswith("model/") and "OPTIMIZER_SLOT" not in k)
  return {k: reader.get_tensor(k) for k in names}, int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """An uninterrupted run of 6 epochs of 5 steps: its final weights, for the resume tests."""
  logdir = tmp_path_factory.mktemp("reference") / "run"
  reference = run_cli(FAULT_ARGS + ["--epochs=6", f"--logdir={logdir}"])
  assert reference.returncode == 0, reference.stderr[-3000:]
  # train.py prints the schedule at start (docs/reproducing.md, "From the original's commands").
  assert ("schedule: 32 images of 32x32 a step on 1 replica(s), 5 steps per epoch of 160 "
          "anchored images, warmup 0 steps, beta2 = Polyak decay = 1 - 1/5, init on 64 images"
          in reference.stdout), reference.stdout[:2000]
  assert "augmentation: random shifts (--dal=1)" in reference.stdout
  weights, step = _final_weights(logdir)
  assert step == 30
  return weights, step


@pytest.mark.slow  # (the SIGTERM test below checks the same exact continuation by default)
def test_sigkill_and_resume_continues_exactly(tmp_path, reference_run):
  args = FAULT_ARGS + ["--epochs=6"]  # 5 steps/epoch
  ref_weights, ref_step = reference_run

  logdir = tmp_path / "killed"
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + args +
                          [f"--logdir={logdir}"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  ckpt_dir = logdir / "checkpoints"
  while time.time() < deadline and proc.poll() is None:  # kill once 2 checkpoints exist
    if len(glob.glob(str(ckpt_dir / "ckpt-[1-9]*.index"))) >= 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = tf.train.latest_checkpoint(str(ckpt_dir))
  assert killed_at is not None
  resumed = run_cli(args + [f"--logdir={logdir}"])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "restored" in resumed.stdout
  weights, step = _final_weights(logdir)
  assert step == ref_step
  for k in ref_weights:
    np.testing.assert_array_equal(weights[k], ref_weights[k], err_msg=k)


@pytest.mark.parametrize("script, module", [
    ("train.py", "glow_flags"), ("sample.py", "sample_flags"), ("score.py", "score_flags"),
    ("export.py", "export_flags")])
def test_help_documents_every_flag(script, module):
  """Every flag the entry point defines (read from its definitions) appears in its --help."""
  import importlib  # pylint: disable=import-outside-toplevel
  from absl import flags as absl_flags  # pylint: disable=import-outside-toplevel
  defined = absl_flags.FlagValues()
  importlib.import_module(f"flags.{module}").define_flags(defined)
  names = list(defined)
  assert len(names) >= 5
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"], capture_output=True,
                       text=True, timeout=120, env=env, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-2000:]
  missing = [n for n in names if f"--{n}" not in out.stdout and f"--[no]{n}" not in out.stdout]
  assert not missing, missing


@pytest.mark.parametrize("args, message", [  # (the others: tests/test_config.py, in process)
    (["--dataset=svhn"], "dataset"),
    # (each case is a process: the others are slow-marked; tests/test_config.py
    # and tests/test_schedule.py check the same errors in process)
    pytest.param(["--image_size=28", "--n_levels=3"], "not divisible by 2^n_levels = 8",
                 marks=pytest.mark.slow),
    pytest.param(["--restore_path=/nonexistent/ckpt-7"], "does not exist", marks=pytest.mark.slow),
    pytest.param(["--dal=2"], "--dal=2 (flips, rotations, zoom, shear) is the original's CIFAR-10",
                 marks=pytest.mark.slow),
    (["--image_size=256", "--n_levels=2", "--n_batch_train=8"], "is 0.125 images of 256x256"),
])
def test_bad_flags_exit_nonzero_and_write_nothing(tmp_path, args, message):
  logdir = tmp_path / "run"
  out = run_cli(SMALL + [f"--logdir={logdir}"] + args, timeout=120)
  assert out.returncode != 0
  assert message in out.stderr, out.stderr[-2000:]
  assert not os.path.exists(logdir)


def test_a_non_chief_worker_removes_its_scratch_checkpoints(tmp_path, monkeypatch):
  """Workers other than the chief save into a temporary directory, gone when the run ends."""
  scratch_root = tmp_path / "tmp"
  scratch_root.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
  monkeypatch.setattr(train_lib.distribute, "is_chief", lambda strategy: False)
  trainer = train_lib.train_and_evaluate(small_config(tmp_path / "run", max_steps=2, epochs=1))
  assert int(trainer.step.numpy()) == 2
  assert not [p.name for p in scratch_root.iterdir() if p.name.startswith("glow_worker_")]
  assert not (tmp_path / "run" / "checkpoints").exists()  # the chief's files are not written


# ---- Faults: signals, damaged checkpoints, mistyped resumes, a second trainer ---------------



def _start(args, logdir):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py")] + args +
                          [f"--logdir={logdir}"], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(predicate, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not predicate():
    time.sleep(0.05)
  assert proc.poll() is None, proc.communicate()[1][-3000:]


def _snapshot(directory):
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


def test_sigterm_checkpoints_the_last_step_and_resumes_exactly(tmp_path, reference_run):
  args = FAULT_ARGS + ["--epochs=6"]
  ref_weights, _ = reference_run
  logdir = tmp_path / "stopped"
  proc = _start(args, logdir)
  _wait_for(lambda: len(glob.glob(str(logdir / "checkpoints" / "ckpt-[1-9]*.index"))) >= 1, proc)
  proc.send_signal(signal.SIGTERM)
  sent = time.time()
  out, err = proc.communicate(timeout=60)
  assert time.time() - sent < 20
  assert proc.returncode == 75, err[-3000:]
  step = int(out.split("stopped by SIGTERM at step ")[1].split(",")[0])
  assert "checkpoint written" in out
  weights, saved_step = _final_weights(logdir)
  assert saved_step == step and step < 30
  with open(logdir / "events.txt") as f:
    assert json.loads(f.readlines()[-1])["step"] == step
  assert not (logdir / "lock").exists()  # released
  resumed = run_cli(args + [f"--logdir={logdir}"])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"at step {step}" in resumed.stdout
  weights, saved_step = _final_weights(logdir)
  assert saved_step == 30
  for k in ref_weights:
    np.testing.assert_array_equal(weights[k], ref_weights[k], err_msg=k)


def test_a_damaged_newest_checkpoint_and_a_mistyped_resume_in_process(tmp_path):
  logdir = tmp_path / "run"
  config = small_config(logdir, epochs=2, n_train=160, epochs_full_valid=100,
                        epochs_full_sample=100, quick_valid_batches=1)  # checkpoints at 5, 10
  trainer = train_lib.prepare(config, stream=io.StringIO())
  trainer.train()
  trainer.release_lock()
  before = _snapshot(logdir)
  wider = dataclasses.replace(config, model=dataclasses.replace(config.model, width=24))
  with pytest.raises(config_lib.ConfigError, match="model.width: 16 in config.json, 24 now"):
    train_lib.prepare(wider, stream=io.StringIO())
  assert _snapshot(logdir) == before
  with open(logdir / "checkpoints" / "ckpt-10.data-00000-of-00001", "r+b") as f:
    f.truncate(64)
  stream = io.StringIO()
  resumed = train_lib.prepare(dataclasses.replace(
      config, train=dataclasses.replace(config.train, epochs=3)), stream=stream)
  assert int(resumed.step.numpy()) == 5
  assert "could not read" in stream.getvalue() and "resumed from" in stream.getvalue()
  resumed.release_lock()


@pytest.mark.slow  # three train.py runs; the same faults in process: the test above
def test_damaged_checkpoints_and_a_mistyped_resume(tmp_path):
  logdir = tmp_path / "run"
  first = run_cli(FAULT_ARGS + ["--epochs=2", f"--logdir={logdir}"])  # checkpoints at 5, 10
  assert first.returncode == 0, first.stderr[-3000:]
  before = _snapshot(logdir)
  # A mistyped architecture: stop before writing, name the field and both values.
  wrong = run_cli(FAULT_ARGS + ["--epochs=3", "--width=24", f"--logdir={logdir}"])
  assert wrong.returncode == 2
  assert "model.width: 16 in config.json, 24 now" in wrong.stderr, wrong.stderr[-2000:]
  assert "Traceback" not in wrong.stderr
  assert _snapshot(logdir) == before
  # The newest checkpoint truncated (a full disk): resume from the one before, and say so.
  newest = logdir / "checkpoints" / "ckpt-10.data-00000-of-00001"
  with open(newest, "r+b") as f:
    f.truncate(64)
  again = run_cli(FAULT_ARGS + ["--epochs=3", f"--logdir={logdir}"])
  assert again.returncode == 0, again.stderr[-3000:]
  assert "could not read" in again.stdout and "ckpt-10" in again.stdout
  assert "resumed from" in again.stdout and "ckpt-5 at step 5" in again.stdout
  # Every checkpoint unreadable: stop, list them, start nothing from scratch.
  for data_file in glob.glob(str(logdir / "checkpoints" / "ckpt-*.data-*")):
    with open(data_file, "r+b") as f:
      f.truncate(64)
  before = _snapshot(logdir)
  broken = run_cli(FAULT_ARGS + ["--epochs=4", f"--logdir={logdir}"])
  assert broken.returncode == 2
  assert "none of the checkpoints" in broken.stderr and "ckpt-15" in broken.stderr
  assert "Traceback" not in broken.stderr
  assert _snapshot(logdir) == before


def test_a_stale_lock_is_taken_over(tmp_path):
  run = rundir.RunDir(str(tmp_path / "run")).make()
  dead = subprocess.Popen(["true"])
  dead.wait()
  with open(os.path.join(run.path, "lock"), "w") as f:
    json.dump({"host": socket.gethostname(), "pid": dead.pid, "since": "earlier"}, f)
  lock = run.lock()
  note = lock.acquire()
  assert "took over a stale lock" in note and f"pid {dead.pid}" in note
  assert lock.holder()["pid"] == os.getpid()
  lock.release()
  assert not os.path.exists(os.path.join(run.path, "lock"))
  # A live holder (here our parent process): refused, named.
  with open(os.path.join(run.path, "lock"), "w") as f:
    json.dump({"host": socket.gethostname(), "pid": os.getppid(), "since": "now"}, f)
  with pytest.raises(rundir.RunDirLocked, match=f"in use by another train.py \\(pid {os.getppid()}"):
    run.lock().acquire()


@pytest.mark.slow  # two train.py processes; the lock itself: the test above
def test_a_second_trainer_on_a_logdir_stops_at_once(tmp_path):
  logdir = tmp_path / "run"
  first = _start(FAULT_ARGS + ["--epochs=1000"], logdir)
  try:
    _wait_for(lambda: (logdir / "checkpoints").exists(), first)
    second = run_cli(FAULT_ARGS + ["--epochs=1000", f"--logdir={logdir}"])
    assert second.returncode == 2
    assert f"in use by another train.py (pid {first.pid}" in second.stderr, second.stderr[-2000:]
  finally:
    first.send_signal(signal.SIGINT)  # Ctrl-C: the same clean stop, the shell's exit code
    out, _ = first.communicate(timeout=120)
  assert first.returncode == 130 and "stopped by SIGINT at step" in out
  # A stale lock (its process is gone): taken over, with a note.
  dead = subprocess.Popen(["true"])
  dead.wait()
  with open(logdir / "lock", "w") as f:
    json.dump({"host": socket.gethostname(), "pid": dead.pid, "since": "earlier"}, f)
  lock = rundir.RunDir(str(logdir)).lock()
  note = lock.acquire()
  assert "took over a stale lock" in note and f"pid {dead.pid}" in note
  assert lock.holder()["pid"] == os.getpid()
  lock.release()
  assert not (logdir / "lock").exists()


def test_precision_auto_is_resolved_printed_and_saved(tmp_path):
  config = small_config(tmp_path / "run", max_steps=1, epochs=1)
  config = dataclasses.replace(config, model=dataclasses.replace(config.model, precision="auto"))
  stream = io.StringIO()
  trainer = train_lib.prepare(config, stream=stream)
  expected, why = hardware.resolve_precision("auto")
  assert f"precision: auto -> {expected} ({why})" in stream.getvalue()
  assert rundir.RunDir(str(tmp_path / "run")).read_config().model.precision == expected
  assert trainer.config.model.precision == expected
  trainer.release_lock()
