"""Conditional Glow through the entry points: train, sample, score, export; replicas; bad combinations."""

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import export as export_lib
from glow_tf import images as images_lib
from glow_tf import sampling
from glow_tf import scoring
from glow_tf import train_lib
from tests import test_data
from tests.test_data import no_network  # noqa: F401  # (autouse: TFDS's download probe answers)
from tests.synthetic_data import FASHION_MNIST_DIR
from tests.test_export import SAVED_MODEL_CLI, _quiet_env
from tests.test_train import (FAULT_ARGS, ROOT, _final_weights, _start, _wait_for, run_cli,
                              small_config)

QUIET = lambda *_: None
LOWRES = dict(condition="lowres", condition_factor=4, condition_width=8)

# Loads a conditional export where glow_tf cannot be imported (as test_export's CONSUMER).
CONSUMER = r'''
import importlib.abc, json, sys

class NoGlowTf(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name == "glow_tf" or name.startswith("glow_tf."):
      raise ModuleNotFoundError(name)

sys.meta_path.insert(0, NoGlowTf())
import numpy as np
import tensorflow as tf
import keras

path, arrays_file, out_file = sys.argv[1:]
arrays = np.load(arrays_file)
images, c = arrays["images"], arrays["conditioning"]
m = tf.saved_model.load(path)
layer = keras.layers.TFSMLayer(path, call_endpoint="keras_bits_per_dim")
signature = m.signatures["bits_per_dim"]
np.savez(out_file, bpd=m.bits_per_dim(images, c).numpy(),
         signature=signature(images=tf.constant(images), conditioning=tf.constant(c))["bits_per_dim"].numpy(),
         keras=layer({"images": images, "conditioning": c}).numpy(),
         sample=m.sample(3, 0.5, [1, 2], c)["images"].numpy(),
         decoded=m.decode(m.encode(images, c), c).numpy())
print(json.dumps({"sample_inputs": sorted(m.signatures["sample"].structured_input_signature[1])}))
'''


def _lowres_config(logdir, depth=2, **train):
  config = small_config(logdir, **train)
  return dataclasses.replace(config, model=dataclasses.replace(config.model, depth=depth,
                                                               **LOWRES))


@pytest.fixture(scope="module")
def lowres_run(tmp_path_factory):
  """A short conditional run on Fashion-MNIST (x4 super-resolution), in process."""
  logdir = tmp_path_factory.mktemp("lowres") / "run"
  trainer = train_lib.train_and_evaluate(_lowres_config(logdir, max_steps=8, epochs=1),
                                         stream=io.StringIO())
  assert int(trainer.step.numpy()) == 8
  return str(logdir)


def test_a_conditional_run_samples_scores_and_exports(lowres_run, tmp_path):
  saved = config_lib.RunConfig.from_json(open(os.path.join(lowres_run, "config.json")).read())
  assert saved.model.condition == "lowres" and saved.model.conditioning_shape == (8, 8, 1)
  # sample.py --mode=conditional: per row the condition, samples at each temperature, the image.
  out = str(tmp_path / "conditional.png")
  _, grid = sampling.run(config_lib.SampleConfig(
      mode="conditional", logdir=lowres_run, temperatures=(0., .7), n_samples=2, n_conditions=3,
      output=out, zoom=1), log=QUIET)
  assert os.path.exists(out)
  assert grid.shape[0] // 32 == 3 and grid.shape[1] // 32 == 1 + 2 * 2 + 1
  # score.py: -log2 p(x | c) / D per image, and out-of-distribution detection on it.
  noise_dir = tmp_path / "noise"
  noise_dir.mkdir()
  rng = np.random.RandomState(0)
  for i in range(16):
    images_lib.save_png(str(noise_dir / f"{i}.png"), rng.randint(0, 256, [32, 32, 1], np.uint8))
  result = scoring.run(config_lib.ScoreConfig(
      logdir=lowres_run, max_images=32, batch_size=16, ood_images=(str(noise_dir),),
      output=str(tmp_path / "scores.csv")), log=QUIET)
  in_bits = result["in"].bits_per_dim
  assert in_bits.shape == (32,) and np.all(np.isfinite(in_bits))
  assert result["report"] is not None and np.mean(result["ood"].bits_per_dim) > np.mean(in_bits)
  # The score is the conditional density: the model with the images' own conditions.
  loaded = sampling.load_model(lowres_run)
  data = data_lib.load(saved.data)
  images = next(iter(data.test_dataset(4)))["image"]
  c = loaded.model.condition(images)
  want = loaded.model.bits_per_dim(images, noise=0.5, conditioning=c).numpy()
  other = loaded.model.bits_per_dim(images, noise=0.5, conditioning=c[::-1]).numpy()
  assert np.all(np.abs(other - want) > 1e-4)  # the condition matters
  # export.py: every function takes the condition, also where glow_tf cannot be imported.
  exported = str(tmp_path / "export")
  export_lib.export(config_lib.ExportConfig(logdir=lowres_run, output=exported), log=QUIET)
  arrays = str(tmp_path / "arrays.npz")
  np.savez(arrays, images=images.numpy(), conditioning=c.numpy())
  got = str(tmp_path / "got.npz")
  proc = subprocess.run([sys.executable, "-c", CONSUMER, exported, arrays, got],
                        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
                        env=_quiet_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert "conditioning" in report["sample_inputs"]
  shown = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", exported, "--tag_set", "serve",
                          "--signature_def", "bits_per_dim"], capture_output=True, text=True,
                         timeout=120, env=_quiet_env())
  assert "inputs['conditioning']" in shown.stdout and "(-1, 8, 8, 1)" in shown.stdout
  result = np.load(got)
  for key in ("bpd", "signature", "keras"):
    np.testing.assert_allclose(result[key], want, rtol=1e-5, err_msg=key)
  assert result["sample"].shape == (3, 4, 32, 32, 1)
  quantised = loaded.model.postprocess(loaded.model.preprocess(images, noise=0.5)).numpy()
  np.testing.assert_array_equal(result["decoded"], quantised)


def test_one_replica_equals_two_replicas_with_a_condition(tmp_path, two_replicas):
  results = []
  for name, strategy in (("one", tf.distribute.get_strategy()), ("two", two_replicas)):
    trainer = train_lib.prepare(_lowres_config(tmp_path / name, depth=1, max_steps=2, epochs=1),
                                strategy=strategy, stream=io.StringIO())
    assert trainer.train() == 2
    results.append([v.numpy() for v in trainer.variables])
  assert any("conditioning" in v.name for v in trainer.variables)
  assert len(results[0]) == len(results[1])
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model, message", [
    (dict(condition="gray"), "needs RGB images"),
    (dict(condition="lowres", condition_factor=3), "divides the image size"),
    (dict(condition="attributes"), "needs CelebA's 40 attributes"),
])
def test_bad_combinations_stop_at_once_and_write_nothing(tmp_path, model, message):
  config = small_config(tmp_path / "run", max_steps=1)
  config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model))
  with pytest.raises(config_lib.ConfigError, match=message):
    train_lib.prepare(config, stream=io.StringIO())
  assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a train.py process; the same check in process above
def test_the_cli_refuses_a_factor_that_does_not_divide_the_image_size(tmp_path):
  out = run_cli(["--dataset=fashion_mnist", "--image_size=32", "--condition=lowres",
                 "--condition_factor=3", f"--logdir={tmp_path / 'run'}"], timeout=120)
  assert out.returncode != 0 and "condition_factor >= 2 that divides" in out.stderr
  assert not (tmp_path / "run").exists()


def _tiny_config(logdir, data, condition):
  return config_lib.RunConfig(
      data, config_lib.ModelConfig(image_shape=None, n_levels=2, depth=1, width=8,
                                   condition=condition, condition_width=4),
      config_lib.TrainConfig(logdir=str(logdir), n_train=8, n_batch_train=4, n_batch_test=4,
                             n_batch_init=4, epochs_warmup=0., max_steps=2, epochs=1,
                             epochs_full_valid=100, epochs_full_sample=100, n_sample=2))


def _check_class_and_gray(tmp_path, condition, data):
  trainer = train_lib.train_and_evaluate(_tiny_config(tmp_path / "run", data, condition),
                                         stream=io.StringIO())
  batch = next(iter(trainer.dataset.test_dataset(4)))
  c = trainer.model.batch_conditions(batch)["conditioning"].numpy()
  if condition == "class":
    np.testing.assert_array_equal(c, np.eye(10)[batch["label"].numpy()])
  else:  # the luminance of the bin centres, in [-0.5, 0.5)
    x = (batch["image"].numpy().astype(np.float64) + .5) / 256. - .5
    np.testing.assert_allclose(c[..., 0], x @ [0.299, 0.587, 0.114], atol=1e-6)
  _, grid = sampling.run(config_lib.SampleConfig(
      mode="conditional", logdir=str(tmp_path / "run"), temperatures=(0., .6), n_samples=3,
      n_conditions=2, label="3" if condition == "class" else None, zoom=1,
      output=str(tmp_path / "grid.png")), log=QUIET)
  side = trainer.model.image_shape[0]
  # class: one row per temperature, 3 samples of class 3; gray: per image its
  # condition, 3 samples at each temperature, the image.
  rows, columns = (2, 3) if condition == "class" else (2, 1 + 2 * 3 + 1)
  assert (grid.shape[0] // side, grid.shape[1] // side) == (rows, columns)


def test_class_condition_on_fashion_mnist(tmp_path):
  _check_class_and_gray(tmp_path, "class", config_lib.DataConfig(
      dataset="fashion_mnist", data_dir=FASHION_MNIST_DIR, train_subset=64, n_test=8))


def test_gray_condition_on_rgb_data(tmp_path):
  with tfds.testing.mock_data(num_examples=16):
    _check_class_and_gray(tmp_path, "gray", config_lib.DataConfig(dataset="cifar10", n_test=8))


def test_attributes_condition_on_tfds_celeb_a_and_the_original_shards(tmp_path):
  with tfds.testing.mock_data(num_examples=20), test_data._failing_for("celeb_a_hq"):
    trainer = train_lib.train_and_evaluate(_tiny_config(
        tmp_path / "tfds", config_lib.DataConfig(dataset="celeba", image_size=16, n_test=4), "attributes"),
        stream=io.StringIO())
  assert int(trainer.step.numpy()) == 2 and trainer.model.config.conditioning_shape == (40,)
  shards = tmp_path / "shards"
  test_data._write_openai_shards(shards, 12, sizes=(16,))
  trainer = train_lib.train_and_evaluate(_tiny_config(
      tmp_path / "shards_run", config_lib.DataConfig(dataset="celeba", data_dir=str(shards),
                                                     image_size=16, n_test=4), "attributes"),
      stream=io.StringIO())
  batch = next(iter(trainer.dataset.test_dataset(4)))
  c = trainer.model.batch_conditions(batch)["conditioning"].numpy()
  np.testing.assert_array_equal(c, (batch["attr"].numpy() > 0).astype(np.float32))


@pytest.mark.slow  # three train.py processes each
@pytest.mark.parametrize("extra", [
    ["--condition=lowres", "--condition_factor=4", "--condition_width=8"],
    ["--dequantization=variational", "--dequant_depth=1", "--dequant_width=8"],
], ids=["conditional", "variational"])
def test_sigterm_resumes_a_conditional_or_variational_run_exactly(tmp_path, extra):
  args = FAULT_ARGS + ["--epochs=6"] + extra
  reference = run_cli(args + [f"--logdir={tmp_path / 'reference'}"])
  assert reference.returncode == 0, reference.stderr[-3000:]
  ref_weights, _ = _final_weights(tmp_path / "reference")
  logdir = tmp_path / "stopped"
  proc = _start(args, logdir)
  _wait_for(lambda: len(list((logdir / "checkpoints").glob("ckpt-[1-9]*.index"))) >= 1, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 75, err[-3000:]
  resumed = run_cli(args + [f"--logdir={logdir}"])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  weights, step = _final_weights(logdir)
  assert step == 30
  for k in ref_weights:
    np.testing.assert_array_equal(weights[k], ref_weights[k], err_msg=k)
  assert os.path.exists(os.path.join(ROOT, "train.py"))
