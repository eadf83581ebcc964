"""sample.py end to end on a tiny checkpoint made here, and its error cases."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import sampling
from glow_tf import train_lib
from tests.synthetic_data import FASHION_MNIST_DIR
from tests.test_train import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
  path = tmp_path_factory.mktemp("sample") / "run"
  trainer = train_lib.prepare(small_config(path, max_steps=10, epochs=1))
  trainer.train()
  return str(path)


def run_cli(args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py")] + args,
                        capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def png(path):
  with Image.open(path) as im:
    return np.asarray(im)


def grid_size(rows, cols, size=64, gutter=2):
  return rows * (size + gutter) + gutter, cols * (size + gutter) + gutter


def test_sample_grid_cli_one_row_per_temperature_and_same_seed_same_png(logdir, tmp_path):
  a, b, c = (str(tmp_path / f"{n}.png") for n in "abc")
  out = run_cli([f"--logdir={logdir}", "--temperature=0,0.5,1.0", "--n_samples=5",
                 "--seed=3", f"--output={a}"])
  assert out.returncode == 0, out.stderr[-2000:]
  image = png(a)
  assert image.shape == grid_size(3, 5) and image.dtype == np.uint8
  assert run_cli([f"--logdir={logdir}", "--temperature=0,0.5,1.0", "--n_samples=5",
                  "--seed=3", f"--output={b}"]).returncode == 0
  assert open(a, "rb").read() == open(b, "rb").read()
  sampling.run(config_lib.SampleConfig(logdir=logdir, temperatures=(0., .5, 1.), n_samples=5,
                                     seed=4, output=c), log=lambda *_: None)
  assert not np.array_equal(png(a), png(c))
  # Row 0 (temperature 0) is the same image repeated: the decoded means.
  cell = lambda img, r, k: img[2 + r * 66: 2 + r * 66 + 64, 2 + k * 66: 2 + k * 66 + 64]
  assert np.array_equal(cell(image, 0, 0), cell(image, 0, 4))
  assert not np.array_equal(cell(image, 2, 0), cell(image, 2, 4))


def test_reconstruct_output_equals_input(logdir, tmp_path):
  out = str(tmp_path / "r.png")
  path, grid = sampling.run(config_lib.SampleConfig(mode="reconstruct", logdir=logdir,
                                                  n_samples=6, output=out), log=lambda *_: None)
  image = png(path)
  assert image.shape == grid_size(2, 6)
  top, bottom = image[2:66], image[68:132]
  np.testing.assert_array_equal(top, bottom)
  assert top.max() > 0


def test_interpolate_and_manipulate(logdir, tmp_path):
  a = str(tmp_path / "i.png")
  sampling.run(config_lib.SampleConfig(mode="interpolate", logdir=logdir, n_samples=2, n_steps=5,
                                     output=a), log=lambda *_: None)
  assert png(a).shape == grid_size(2, 5)
  # Files as endpoints: the row starts and ends at (the quantised) inputs.
  files = []
  test = next(iter(data_lib.load(config_lib.DataConfig(dataset="fashion_mnist", n_test=2,
                                                       data_dir=FASHION_MNIST_DIR))
                   .test_dataset(2)))["image"].numpy()
  for i, img in enumerate(test):
    files.append(str(tmp_path / f"in{i}.png"))
    Image.fromarray(img[..., 0]).save(files[-1])
  b = str(tmp_path / "i2.png")
  sampling.run(config_lib.SampleConfig(mode="interpolate", logdir=logdir, images=tuple(files),
                                     n_steps=4, output=b), log=lambda *_: None)
  row = png(b)
  assert row.shape == grid_size(1, 4)
  np.testing.assert_array_equal(row[2:66:2, 2:66:2], test[0][..., 0])
  np.testing.assert_array_equal(row[2:66:2, 200:264:2], test[1][..., 0])
  c = str(tmp_path / "m.png")
  config = config_lib.SampleConfig(mode="manipulate", logdir=logdir, attribute="Trouser",
                                 n_samples=3, n_direction_examples=200, output=c,
                                 scales=(-1., 0., 1.))
  sampling.run(config, log=lambda *_: None)
  image = png(c)
  assert image.shape == grid_size(3, 3)
  assert len(os.listdir(os.path.join(logdir, "directions"))) == 1  # cached
  sampling.run(config, log=lambda *_: None)
  np.testing.assert_array_equal(png(c), image)


@pytest.mark.parametrize("args, message", [
    (["--mode=manipulate", "--attribute=Smiling"], "unknown attribute 'Smiling'; available: "
                                                   "T-shirt/top, Trouser"),
    # (each case is a process of its own: the others are slow-marked; the
    # library raises the same errors in the in-process tests)
    pytest.param(["--temperature=-0.5"], "temperature must be >= 0", marks=pytest.mark.slow),
    pytest.param(["--mode=reconstruct", "--images=/nonexistent.png"], "cannot read image file",
                 marks=pytest.mark.slow),
    pytest.param(["--temperature=warm"], "not a number", marks=pytest.mark.slow),
])
def test_errors_exit_nonzero_and_write_nothing(logdir, tmp_path, args, message):
  out_path = tmp_path / "out.png"
  out = run_cli([f"--logdir={logdir}", f"--output={out_path}"] + args)
  assert out.returncode != 0
  assert message in out.stderr, out.stderr[-2000:]
  assert not out_path.exists()


def test_no_checkpoint_says_where_it_looked(tmp_path):
  empty = tmp_path / "empty"
  out = run_cli([f"--logdir={empty}", f"--output={tmp_path / 'x.png'}"])
  assert out.returncode != 0
  assert f"no checkpoint found in {empty}" in out.stderr and "python train.py" in out.stderr
  assert not (tmp_path / "x.png").exists()
  out = run_cli([f"--restore_path={tmp_path / 'nothing' / 'ckpt-3'}"])
  assert out.returncode != 0 and "does not exist" in out.stderr


@pytest.mark.skipif(not os.path.isdir(sampling.SHIPPED_MODEL), reason="no shipped model")
def test_shipped_model_is_used_right_after_install(tmp_path):
  out = run_cli(["--temperature=0.7", "--n_samples=6"], cwd=str(tmp_path))  # no ./logs here
  assert out.returncode == 0, out.stderr[-2000:]
  assert "using the model shipped in" in out.stdout
  assert png(tmp_path / "sample.png").shape == grid_size(1, 6)


def test_invalid_config_json_is_named(logdir, tmp_path):
  import shutil
  broken = tmp_path / "broken"
  shutil.copytree(logdir, broken)
  with open(broken / "config.json", "w") as f:
    f.write('{"model": {"depth": 2,')
  out = run_cli([f"--logdir={broken}", f"--output={tmp_path / 'x.png'}"])
  assert out.returncode == 2
  assert f"{broken / 'config.json'} is not valid JSON" in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and not (tmp_path / "x.png").exists()
