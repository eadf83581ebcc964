"""export.py: the SavedModel outside glow_tf (subprocess, saved_model_cli, Keras 3), fine-tuning, bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import export as export_lib
from glow_tf import model as model_lib
from glow_tf import rundir
from glow_tf import sampling
from glow_tf import train_lib
from tests.synthetic_data import FASHION_MNIST_DIR
from tests.test_train import SMALL, small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
QUIET = lambda *_: None

# Run in a fresh interpreter, in another working directory, with glow_tf made
# unimportable (it is installed in the venv, so leaving it off PYTHONPATH is not enough).
CONSUMER = r'''
import importlib.abc, json, sys

class NoGlowTf(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name == "glow_tf" or name.startswith("glow_tf."):
      raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

sys.meta_path.insert(0, NoGlowTf())
try:
  import glow_tf  # noqa
  raise SystemExit("glow_tf is importable")
except ModuleNotFoundError:
  pass

import numpy as np
import tensorflow as tf

path, images_file, out_file = sys.argv[1:]
images = np.load(images_file)
m = tf.saved_model.load(path)
seed = tf.constant([5, 6], tf.int64)
a = m.sample(tf.constant(4), tf.constant(0.7), seed)
b = m.sample(4, 0.7, [5, 6])
c = m.sample(4, 0.7, [5, 7])
latents = m.encode(images)
errors = {}
for name, bad in [("size", np.zeros([2, 28, 28, 1], np.uint8)), ("channels", np.zeros([2, 32, 32, 3], np.uint8)),
                  ("dtype", images.astype(np.float32))]:
  try:
    m.bits_per_dim(bad)
    errors[name] = ""
  except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
    errors[name] = str(e)
import keras
layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
inputs = keras.Input((32, 32, 1), dtype="uint8")
keras_model = keras.Model(inputs, layer(inputs))
np.savez(out_file, sample=a["images"].numpy(), sample_again=b["images"].numpy(),
         sample_other_seed=c["images"].numpy(),
         bpd=m.bits_per_dim(images).numpy(), bpd_seed=m.bits_per_dim(images, seed=seed).numpy(),
         log_prob=m.log_prob(images).numpy(), log_prob_seed=m.log_prob(images, seed=seed).numpy(),
         decoded=m.decode(latents).numpy(), n_latents=len(latents),
         odd_batch=m.bits_per_dim(images[:3]).numpy(),
         serving=m.signatures["serving_default"](images=tf.constant(images))["bits_per_dim"].numpy(),
         keras_layer=layer(images)["bits_per_dim"].numpy(),
         keras_model=keras_model.predict(images, verbose=0)["bits_per_dim"],
         sample_signature=m.signatures["sample"](n=tf.constant(4), temperature=tf.constant(0.7),
                                                 seed=seed)["images"].numpy())
print(json.dumps({"errors": errors, "signatures": sorted(m.signatures.keys()),
                  "keras": keras.__version__}))
'''


def _quiet_env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return dict(env, TF_CPP_MIN_LOG_LEVEL="3", **extra)


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory):
  """The shipped model exported again by export.py's library call."""
  out = str(tmp_path_factory.mktemp("export") / "fashion_mnist")
  result = export_lib.export(config_lib.ExportConfig(logdir=sampling.SHIPPED_MODEL, output=out),
                             log=QUIET)
  assert result.path == out and result.size_bytes > 1e6
  with open(os.path.join(out, "export.json")) as f:  # an export of an export keeps its origin
    assert json.load(f)["original_checkpoint"] == "pretrained/fashion_mnist/model-1"
  return out


@pytest.fixture(scope="module")
def test_images():
  data = data_lib.load(config_lib.DataConfig(dataset="fashion_mnist", data_dir=FASHION_MNIST_DIR,
                                             n_test=7))
  images = next(iter(data.test_dataset(7)))["image"].numpy()
  return images // 8 * 8  # 5 bits, as the shipped model keeps: decode(encode(x)) is x exactly


@pytest.fixture(scope="module")
def consumers(shipped_export, test_images, tmp_path_factory):
  """What programs without glow_tf get from the export: CONSUMER's report and arrays, saved_model_cli's output.

  The three processes run at once (each spends most of its time importing TensorFlow).
  """
  work = tmp_path_factory.mktemp("elsewhere")
  np.save(work / "images.npy", test_images)
  np.save(work / "zeros.npy", np.zeros([2, 32, 32, 1], np.uint8))
  (work / "consumer.py").write_text(CONSUMER)
  commands = {
      "consumer": [sys.executable, "consumer.py", shipped_export, "images.npy", "out.npz"],
      "show": [SAVED_MODEL_CLI, "show", "--dir", shipped_export, "--all"],
      "run": [SAVED_MODEL_CLI, "run", "--dir", shipped_export, "--tag_set", "serve",
              "--signature_def", "serving_default", "--inputs", "images=zeros.npy"],
  }
  procs = {name: subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=work, env=_quiet_env(KERAS_BACKEND="tensorflow"))
           for name, args in commands.items()}
  outputs = {name: (p.communicate(timeout=300), p.returncode) for name, p in procs.items()}
  return outputs, work


@pytest.fixture(scope="module")
def consumer(consumers):
  outputs, work = consumers
  (stdout, stderr), code = outputs["consumer"]
  assert code == 0, stderr[-3000:]
  report = json.loads(stdout.strip().splitlines()[-1])
  return report, dict(np.load(work / "out.npz"))


def test_export_loads_and_samples_without_glow_tf(consumer):
  report, got = consumer
  assert got["sample"].shape == (4, 32, 32, 1) and got["sample"].dtype == np.uint8
  np.testing.assert_array_equal(got["sample"], got["sample_again"])  # same seed, same images
  np.testing.assert_array_equal(got["sample"], got["sample_signature"])
  assert not np.array_equal(got["sample"], got["sample_other_seed"])
  assert report["signatures"] == ["bits_per_dim", "decode", "encode", "log_prob", "sample",
                                  "serving_default"]


def test_exported_likelihoods_equal_the_library_and_the_training_objective(consumer, test_images):
  _, got = consumer
  model = sampling.load_model(sampling.SHIPPED_MODEL).model
  seed = [5, 6]
  noise = tf.random.stateless_uniform(test_images.shape, seed)
  np.testing.assert_allclose(got["bpd"], model.bits_per_dim(test_images, noise=0.5), atol=1e-5)
  np.testing.assert_allclose(got["bpd_seed"], model.bits_per_dim(test_images, seed=seed), atol=1e-5)
  np.testing.assert_allclose(got["bpd_seed"], model.losses(test_images, noise=noise)["loss"],
                             atol=1e-5)
  np.testing.assert_allclose(got["log_prob_seed"], model.log_prob(test_images, seed=seed), rtol=1e-5)
  assert not np.allclose(got["bpd"], got["bpd_seed"])  # mid-bin unless a seed is given
  np.testing.assert_allclose(got["log_prob"] / got["bpd"], -32 * 32 * np.log(2.), rtol=1e-5)
  np.testing.assert_allclose(got["odd_batch"], got["bpd"][:3], atol=1e-6)  # a batch of 3: unseen
  np.testing.assert_array_equal(got["serving"], got["bpd"])


def test_decode_encode_is_exact_and_samples_match_the_library(consumer, test_images):
  _, got = consumer
  assert int(got["n_latents"]) == 3
  np.testing.assert_array_equal(got["decoded"], test_images)
  model = sampling.load_model(sampling.SHIPPED_MODEL).model
  library = model.sample(4, 0.7, seed=[5, 6]).numpy()
  assert np.mean(library == got["sample"]) > 0.999  # (TF's convolutions vs glow_tf's kernels)


def test_wrong_images_name_the_expected_shape(consumer):
  report, _ = consumer
  for kind in ("size", "channels", "dtype"):
    message = report["errors"][kind]
    assert "shape=(None, 32, 32, 1), dtype=tf.uint8" in message, (kind, message[:2000])


def test_keras3_tfsmlayer_runs_the_export(consumer):
  report, got = consumer
  assert report["keras"].startswith("3.")
  np.testing.assert_array_equal(got["keras_layer"], got["bpd"])
  np.testing.assert_allclose(got["keras_model"], got["bpd"], atol=1e-6)


def test_saved_model_cli_shows_and_runs_serving_default(consumers):
  outputs, _ = consumers
  (show, stderr), code = outputs["show"]
  assert code == 0, stderr[-2000:]
  for name in ("serving_default", "bits_per_dim", "log_prob", "sample", "encode", "decode"):
    assert f"signature_def['{name}']" in show, name
  assert "shape: (-1, 32, 32, 1)" in show
  (run, stderr), code = outputs["run"]
  assert code == 0, stderr[-2000:]
  assert "Result for output key bits_per_dim" in run, run[-2000:]


# ---- A run of our own: load_model and sample.py read exports; fine-tuning --------------------


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
  base = tmp_path_factory.mktemp("run")
  logdir = base / "run"
  train_lib.prepare(small_config(logdir, max_steps=10, epochs=1), stream=open(os.devnull, "w")).train()
  result = export_lib.export(config_lib.ExportConfig(logdir=str(logdir)), log=QUIET)
  # By default the weights that evaluated better at the run's end.
  with open(rundir.RunDir(str(logdir)).log_path("test")) as f:
    last = [json.loads(line) for line in f][-1]
  assert result.path == str(logdir / "export")
  assert result.polyak == (last["polyak_bits_x"] < last["bits_x"])
  return str(logdir), result.path


def test_load_model_reads_an_export_like_its_checkpoint(run_and_export):
  logdir, exported = run_and_export
  a = sampling.load_model(logdir).model.sample(4, 0.7, seed=[1, 1]).numpy()
  loaded = sampling.load_model(exported)
  assert loaded.checkpoint == os.path.join(exported, "variables", "variables")
  np.testing.assert_array_equal(loaded.model.sample(4, 0.7, seed=[1, 1]).numpy(), a)
  with open(os.path.join(exported, "export.json")) as f:
    info = json.load(f)
  assert info["weights"] == ("polyak" if sampling.load_model(logdir).polyak else "raw")
  assert info["serving_default"] == "bits_per_dim"
  assert info["original_checkpoint"] == info["source_checkpoint"] == os.path.join(logdir, "checkpoints", "ckpt-10")


def test_fine_tuning_from_an_export_continues_from_its_weights(run_and_export, tmp_path):
  _, exported = run_and_export
  logdir = tmp_path / "finetune"
  # No architecture flags: train.py reads them from the export's config.json.
  args = [a for a in SMALL if not a.startswith(("--n_levels", "--depth", "--width"))]
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py")] + args +
      [f"--logdir={logdir}", f"--restore_path={exported}", "--max_steps=20", "--log_every_steps=1",
       "--lr=0.003", "--epochs_full_valid=100", "--epochs_full_sample=100"],
      capture_output=True, text=True, timeout=600, cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "restored the weights of" in out.stdout and "initialised actnorm" not in out.stdout
  assert rundir.RunDir(str(logdir)).read_config().model == rundir.RunDir(exported).read_config().model
  with open(logdir / "train.txt") as f:
    losses = [json.loads(line)["loss"] for line in f]
  assert len(losses) == 20
  # Step 1's loss is the exported model's on that batch with that noise (train.py's batch 0,
  # noise seed [seed * 1000 + stream, batch]): nothing was re-initialised.
  data = data_lib.load(config_lib.DataConfig(dataset="fashion_mnist", data_dir=FASHION_MNIST_DIR,
                                             train_subset=640, n_test=128))
  batch = next(iter(data.train_dataset(32, 0, start_step=0)))["image"]
  served = tf.saved_model.load(exported)
  expected = float(tf.reduce_mean(served.bits_per_dim(batch, seed=tf.constant([0, 0], tf.int64))))
  assert losses[0] == pytest.approx(expected, abs=1e-4)
  assert np.mean(losses[-5:]) < losses[0] - 0.1, losses


def test_fine_tuning_flags_that_contradict_the_export_are_named(run_and_export):
  _, exported = run_and_export
  saved = rundir.RunDir(exported).read_config().model
  flags_model = config_lib.ModelConfig(image_shape=None, depth=7)
  with pytest.raises(config_lib.ConfigError, match=r"--depth=7 but 2 there"):
    config_lib.with_architecture_of(saved, flags_model, ["depth"], "x/config.json")
  merged = config_lib.with_architecture_of(saved, flags_model, [], "x/config.json")
  assert (merged.depth, merged.width, merged.flow_coupling) == (2, 16, "affine")


# ---- Bad input: the path and the fix, nothing written ----------------------------------------


def test_no_checkpoint_says_where_and_writes_nothing(tmp_path):
  empty = tmp_path / "empty"
  with pytest.raises(rundir.NoCheckpointError, match=f"no checkpoint found in {empty}.*python train.py"):
    export_lib.export(config_lib.ExportConfig(logdir=str(empty)), log=QUIET)
  assert not os.path.exists(empty)
  out = subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), f"--logdir={empty}"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"))
  assert out.returncode == 2
  assert f"export.py: error: no checkpoint found in {empty}" in out.stderr
  assert "Traceback" not in out.stderr and not os.path.exists(empty)
  help_text = subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), "--help"],
                             capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=ROOT)).stdout
  for flag in ("--logdir", "--restore_path", "--output", "--[no]polyak", "--[no]overwrite"):
    assert flag in help_text, flag


def test_non_empty_output_needs_overwrite(run_and_export, tmp_path):
  logdir, _ = run_and_export
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  config = config_lib.ExportConfig(logdir=logdir, output=str(out))
  with pytest.raises(export_lib.ExportError, match=f"--output {out} exists and is not empty: pass --overwrite"):
    export_lib.export(config, log=QUIET)
  assert os.listdir(out) == ["keep.txt"] and os.listdir(tmp_path) == ["out"]
  with pytest.raises(export_lib.ExportError, match="holds a training run"):
    export_lib.export(config_lib.ExportConfig(logdir=logdir, output=logdir, overwrite=True), log=QUIET)
  export_lib.export(config_lib.ExportConfig(logdir=logdir, output=str(out), overwrite=True,
                                            polyak=False), log=QUIET)
  assert "keep.txt" not in os.listdir(out) and "saved_model.pb" in os.listdir(out)
  assert os.listdir(tmp_path) == ["out"]  # no staging directory left behind
  with open(out / "export.json") as f:
    assert json.load(f)["weights"] == "raw"


def test_checkpoint_not_matching_its_config_is_named(run_and_export, tmp_path):
  logdir, _ = run_and_export
  broken = tmp_path / "broken"
  shutil.copytree(logdir, broken, ignore=shutil.ignore_patterns("export", "lock"))
  config = rundir.RunDir(str(broken)).read_config()
  rundir.RunDir(str(broken)).write_config(config.__class__(
      config.data, config.model.__class__(**{**config.model.__dict__, "width": 24}), config.train))
  out = tmp_path / "out"
  with pytest.raises(export_lib.ExportError,
                     match=f"{broken}/checkpoints/ckpt-10 does not match {broken}/config.json"):
    export_lib.export(config_lib.ExportConfig(logdir=str(broken), output=str(out)), log=QUIET)
  assert not out.exists() and sorted(os.listdir(tmp_path)) == ["broken"]


def test_class_conditional_export_takes_and_returns_labels(tmp_path):
  model_config = config_lib.ModelConfig(image_shape=(8, 8, 1), n_levels=2, depth=1, width=8, ycond=True,
                                        n_classes=3, learntop=True, n_bits_x=5)
  model = model_lib.GlowModel(model_config)
  images = np.random.RandomState(0).randint(0, 256, [6, 8, 8, 1]).astype(np.uint8) // 8 * 8
  labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
  model.initialize(images, labels)
  run = config_lib.RunConfig(config_lib.DataConfig(dataset="fashion_mnist"), model_config,
                             config_lib.TrainConfig())
  path = export_lib.export_model(model, str(tmp_path / "export"), run)
  served = tf.saved_model.load(path)
  drawn = served.sample(5, 0.7, [1, 2])
  assert drawn["images"].shape == (5, 8, 8, 1) and drawn["labels"].shape == (5,)
  assert set(drawn["labels"].numpy()) <= {0, 1, 2}
  np.testing.assert_allclose(served.bits_per_dim(images, labels), model.bits_per_dim(images, labels, noise=0.5),
                             atol=1e-5)
  np.testing.assert_allclose(served.log_prob(images, labels, seed=[1, 2]),
                             model.log_prob(images, labels, seed=[1, 2]), rtol=1e-5)
  np.testing.assert_array_equal(served.decode(served.encode(images, labels), labels), images)
  assert sorted(served.signatures["decode"].structured_input_signature[1]) == ["labels", "latent_0", "latent_1"]
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be class indices in 0\.\.2"):
    served.bits_per_dim(images, labels + 5)
