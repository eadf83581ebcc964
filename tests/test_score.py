"""score.py: per-image likelihoods, K draws, latents, out-of-distribution detection, bad input."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from glow_tf import config as config_lib
from glow_tf import ood
from glow_tf import sampling
from glow_tf import scoring
from tests import multi_worker
from tests.synthetic_data import FASHION_MNIST_DIR, HAVE_DEBIAN_FASHION_MNIST

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = [f"--data_dir={FASHION_MNIST_DIR}"] if FASHION_MNIST_DIR else []


def run_cli(args, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, os.path.join(ROOT, "score.py")] + args,
                        capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def shipped():
  return sampling.load_model(sampling.SHIPPED_MODEL)


@pytest.fixture(scope="module")
def test_images(shipped):
  data = dict(dataset="fashion_mnist", data_dir=FASHION_MNIST_DIR)
  image_set = scoring.dataset_images(config_lib.DataConfig(**data), "test",
                                     shipped.model.image_shape, limit=24)
  return image_set


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_per_image_bits_equal_the_model_and_more_draws_tighten(shipped, test_images, tmp_path):
  out = scoring.OutputWriter(str(tmp_path / "s.csv"))
  k1 = scoring.score_images(shipped.model, test_images, batch_size=16, seed=3, output=out)
  out.close()
  images = np.stack([e["image"] for e in test_images.dataset.as_numpy_iterator()])
  noise = scoring.dequantization_noise(tf.range(24, dtype=tf.int64), [32, 32, 1], 3, 0)
  expected = shipped.model.bits_per_dim(images, noise=noise).numpy()  # one batch: the same draws
  np.testing.assert_allclose(k1.bits_per_dim, expected, rtol=1e-5)
  rows = _rows(tmp_path / "s.csv")
  assert [int(r["index"]) for r in rows] == list(range(24))
  np.testing.assert_allclose([float(r["bits_per_dim"]) for r in rows], k1.bits_per_dim, rtol=1e-6)
  assert k1.mean == pytest.approx(np.mean(k1.bits_per_dim)) and k1.stderr > 0
  k4 = scoring.score_images(shipped.model, test_images, batch_size=16, seed=3,
                            n_dequant_samples=4)
  assert k4.mean < k1.mean  # log of a mean >= mean of logs: a tighter bound
  assert np.all(k4.bits_per_dim < k1.bits_per_dim + 0.05)


@pytest.mark.skipif(not HAVE_DEBIAN_FASHION_MNIST, reason="needs the real test set (scripts/setup.sh)")
def test_the_shipped_models_figure_has_not_moved(shipped):
  """score.py's figure for the first 1,000 real test images (its default seed), as recorded when the model shipped."""
  images = scoring.dataset_images(config_lib.DataConfig(dataset="fashion_mnist"), "test",
                                  shipped.model.image_shape, limit=1000)
  summary = scoring.score_images(shipped.model, images, seed=config_lib.ScoreConfig.seed)
  assert len(summary.bits_per_dim) == 1000
  assert float(np.mean(summary.bits_per_dim)) == pytest.approx(1.4201, abs=5e-5)


def test_latents_decode_to_the_scored_images(shipped, test_images, tmp_path):
  path = str(tmp_path / "z.npz")
  writer = scoring.LatentWriter(path, test_images.size, shipped.model.image_shape,
                                shipped.model.glow.latent_shapes)
  scoring.score_images(shipped.model, test_images, batch_size=16, latents=writer)
  writer.close()
  z = np.load(path)
  assert sorted(z.files) == ["index", "label", "x", "z0", "z1", "z2"]
  decoded = shipped.model.decode([z[f"z{i}"] for i in range(3)]).numpy()
  quantised = shipped.model.postprocess(shipped.model.preprocess(z["x"], noise=0.5)).numpy()
  np.testing.assert_array_equal(decoded, quantised)
  np.testing.assert_array_equal(z["index"], np.arange(24))


def test_two_replicas_score_each_image_once_as_one_device(shipped, test_images, two_replicas):
  one = scoring.score_images(shipped.model, test_images, batch_size=10, seed=1)
  with two_replicas.scope():
    mirrored = sampling.load_model(sampling.SHIPPED_MODEL)
  two = scoring.score_images(mirrored.model, test_images, two_replicas, batch_size=10, seed=1)
  assert two.n == one.n == 24
  np.testing.assert_allclose(two.bits_per_dim, one.bits_per_dim, rtol=1e-5)


def test_two_workers_score_each_image_once_as_one_process(tmp_path):
  args = DATA + ["--max_images=30", "--batch_size=8", "--n_dequant_samples=2", "--seed=4"]
  scoring.run(config_lib.ScoreConfig(  # one process (in this one)
      logdir=sampling.SHIPPED_MODEL, data_dir=FASHION_MNIST_DIR, max_images=30, batch_size=8,
      n_dequant_samples=2, seed=4, output=str(tmp_path / "one.csv")), log=lambda *_: None)
  ports = multi_worker.free_ports(2)
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  workers = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "score.py"), "--strategy=multi_worker",
       f"--output={tmp_path / 'two.csv'}"] + args,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
      env=dict(env, **multi_worker.tf_config(ports, i))) for i in range(2)]
  try:
    outs = [w.communicate(timeout=300) for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
  assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outs]
  assert "2 replica(s)" in outs[0][0] and "30 images" in outs[0][0]
  assert outs[1][0] == ""  # the other worker scores its share and says nothing
  assert sorted(os.listdir(tmp_path)) == ["one.csv", "two.csv"]  # the chief's file only
  one_rows, two_rows = _rows(tmp_path / "one.csv"), _rows(tmp_path / "two.csv")
  assert sorted(int(r["index"]) for r in two_rows) == list(range(30))  # each image once
  by_index = {int(r["index"]): r for r in two_rows}
  for r in one_rows:
    assert by_index[int(r["index"])]["label"] == r["label"]
    assert float(by_index[int(r["index"])]["nats"]) == pytest.approx(float(r["nats"]), rel=1e-5)


def _noise_folder(path, n, shape=(32, 32)):
  os.makedirs(path, exist_ok=True)
  rng = np.random.RandomState(0)
  for i in range(n):
    Image.fromarray(rng.randint(0, 256, shape).astype(np.uint8)).save(os.path.join(path, f"{i}.png"))
  return str(path)


def test_shipped_model_tells_fashion_mnist_from_noise(tmp_path):
  noise = _noise_folder(tmp_path / "noise", 30)
  out = run_cli(DATA + ["--max_images=60", f"--ood_images={noise}", "--typicality_batch=10",
                        "--typicality_train_images=40", f"--output={tmp_path / 'r.jsonl'}"],
                cwd=str(tmp_path))
  assert out.returncode == 0, out.stderr[-3000:]
  assert "using the model shipped in" in out.stdout
  line = next(s for s in out.stdout.splitlines() if s.startswith("| bits/dim |"))
  assert float(line.split("|")[2]) > 0.99, out.stdout
  assert "complexity-corrected" in out.stdout and "typicality" in out.stdout
  with open(tmp_path / "r.jsonl") as f:
    rows = [json.loads(s) for s in f]
  assert len(rows) == 60 and {"index", "label", "nats", "bits_per_dim"} <= set(rows[0])
  with open(tmp_path / "r_ood.jsonl") as f:
    assert len(f.readlines()) == 30
  with Image.open(tmp_path / "r_hist.png") as im:
    assert im.size[0] > 400


def _one_bad_file(d, kind):
  """A folder of good 32x32 grey images plus one that does not fit, as `kind` says."""
  _noise_folder(d, 3)
  rng = np.random.RandomState(1)
  grey = rng.randint(0, 256, (32, 32)).astype(np.uint8)
  if kind == "rgb":
    Image.fromarray(np.stack([grey] * 3, -1)).save(os.path.join(d, "bad.png"))
  elif kind == "palette":
    Image.fromarray(grey).convert("P").save(os.path.join(d, "bad.png"))
  elif kind == "16-bit":
    Image.fromarray(grey.astype(np.uint16) * 256).save(os.path.join(d, "bad.png"))
  elif kind == "truncated":  # a valid header, the pixels cut off
    Image.fromarray(grey).save(os.path.join(d, "full.png"))
    with open(os.path.join(d, "full.png"), "rb") as f:
      head = f.read(120)
    os.remove(os.path.join(d, "full.png"))
    with open(os.path.join(d, "bad.png"), "wb") as f:
      f.write(head)


def _touch(path):
  with open(path, "w") as f:
    f.write("x")


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda d: _noise_folder(d, 3, (28, 28)), dict(images=("{d}",)), "do not fit the model's 32x32x1"),
    (lambda d: _one_bad_file(d, "rgb"), dict(images=("{d}",)), r"1 of 4 .*bad.png \(32x32x3\)"),
    (lambda d: _one_bad_file(d, "palette"), dict(images=("{d}",)), r"bad.png \(mode P"),
    (lambda d: _one_bad_file(d, "16-bit"), dict(images=("{d}",)), r"bad.png \(mode I"),
    (lambda d: _one_bad_file(d, "truncated"), dict(images=("{d}",)), r"bad.png \(unreadable"),
    (lambda d: open(os.path.join(d, "x.png"), "w").write("not a png"), dict(images=("{d}/x.png",)),
     "unreadable"),
    (lambda d: None, dict(images=("{d}/none/*.png",)), "no image files"),
    (lambda d: os.makedirs(os.path.join(d, "empty")), dict(images=("{d}/empty",)), "no image files"),
    (lambda d: _touch(os.path.join(d, "out.csv")), dict(output="{d}/out.csv"),
     "exists; pass --overwrite"),
    # (the out-of-distribution set's files: before any scoring, not after the first set's)
    (lambda d: (_noise_folder(os.path.join(d, "n"), 3), _touch(os.path.join(d, "out_ood.csv"))),
     dict(output="{d}/out.csv", ood_images=("{d}/n",)), "out_ood.csv' exists"),
    (lambda d: (_noise_folder(os.path.join(d, "n"), 3), _touch(os.path.join(d, "h.png"))),
     dict(output="{d}/out.csv", ood_images=("{d}/n",), histogram="{d}/h.png"), "h.png' exists"),
    (lambda d: _noise_folder(os.path.join(d, "n"), 2), dict(ood_images=("{d}/n/*.jpg",)),
     "no image files"),
])
def test_bad_input_stops_with_a_message_and_writes_nothing(tmp_path, make, kwargs, message):
  make(str(tmp_path))
  before = sorted(os.listdir(tmp_path))
  kwargs = {k: (tuple(x.format(d=tmp_path) for x in v) if isinstance(v, tuple)
                else v.format(d=tmp_path)) for k, v in kwargs.items()}
  config = config_lib.ScoreConfig(logdir=sampling.SHIPPED_MODEL, data_dir=FASHION_MNIST_DIR,
                                  max_images=8, **kwargs)
  with pytest.raises(ValueError, match=message):
    scoring.run(config, log=lambda *_: None)
  assert sorted(os.listdir(tmp_path)) == before


def test_mnist_as_the_ood_set_without_its_data_says_how_to_get_it(tmp_path):
  config = config_lib.ScoreConfig(logdir=sampling.SHIPPED_MODEL, data_dir=FASHION_MNIST_DIR,
                                  max_images=8, ood_dataset="mnist", download=False,
                                  ood_data_dir=str(tmp_path / "tfds"),
                                  output=str(tmp_path / "s.csv"))
  with pytest.raises(ValueError, match=r"--ood_dataset=mnist cannot be read \(the data directory "
                     r"of --ood_dataset is --ood_data_dir\).*not prepared.*IDX"):
    scoring.run(config, log=lambda *_: None)
  assert not os.path.exists(tmp_path / "s.csv")


class _Connection:
  def close(self):
    pass


def test_mnist_as_the_ood_set_with_tfds_mock_data(tmp_path, monkeypatch, capsys):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  # The check that TFDS's download host answers, answered without the network.
  monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _Connection())
  config = config_lib.ScoreConfig(logdir=sampling.SHIPPED_MODEL, data_dir=FASHION_MNIST_DIR,
                                  max_images=20, ood_dataset="mnist", typicality_batch=5,
                                  typicality_train_images=20, output=str(tmp_path / "s.csv"))
  with tfds.testing.mock_data(num_examples=20):  # random 28x28 digits, zero-padded to 32x32
    result = scoring.run(config, log=lambda *_: None)
  assert result["ood"].n == 20 and result["ood"].description == "mnist test"
  # The report is glow_tf.ood.ood_report's, printed as its table.
  report = result["report"]
  assert list(report) == ["bits_per_dim", "complexity", "typicality"]
  assert report["bits_per_dim"]["auroc"] > 0.9  # random pixels are unlike garments
  assert report["bits_per_dim"]["in_mean"] == pytest.approx(result["in"].mean)
  assert report["bits_per_dim"]["ood_count"] == 20 and report["typicality"]["in_count"] == 4
  assert report["typicality"]["batch_size"] == 5
  assert report["complexity"] == ood.ood_report(
      result["in"].bits_per_dim, result["ood"].bits_per_dim,
      in_png_bits_per_dim=result["in"].png_bits_per_dim,
      ood_png_bits_per_dim=result["ood"].png_bits_per_dim)["complexity"]
  out = capsys.readouterr().out.splitlines()
  table = out[out.index("| score | AUROC | AUPR | FPR at 95% TPR |"):][:5]
  assert table == ood.report_table(report)
  assert [row.split(" | ")[0] for row in table[2:]] == [
      "| bits/dim", "| complexity-corrected (Serra et al. 2020)",
      "| typicality, batches of 5 (Nalisnick et al. 2019)"]
  assert sorted(os.listdir(tmp_path)) == ["s.csv", "s_hist.png", "s_ood.csv"]
  assert len(_rows(tmp_path / "s_ood.csv")) == 20


@pytest.mark.parametrize("args, message", [
    (["--n_dequant_samples=0"], "n_dequant_samples must be an integer >= 1"),
    pytest.param(["--output=out.txt"], "use a .csv, .jsonl (JSON lines) or .json",
                 marks=pytest.mark.slow),
])
def test_bad_flags_exit_2_before_loading_anything(tmp_path, args, message):
  out = run_cli(args, cwd=str(tmp_path))
  assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
  assert "Traceback" not in out.stderr and os.listdir(tmp_path) == []


def test_make_ood_images_writes_the_folders(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  script = os.path.join(ROOT, "scripts", "make_ood_images.py")
  out = subprocess.run([sys.executable, script, "--kind=noise", "--n=5", f"--out={tmp_path / 'n'}"],
                       capture_output=True, text=True, env=env, timeout=120)
  assert out.returncode == 0 and len(os.listdir(tmp_path / "n")) == 5
  import runpy  # the inverted set in this process (TensorFlow is loaded already)
  argv = sys.argv
  try:
    sys.argv = [script, "--kind=inverted", "--n=3", f"--out={tmp_path / 'i'}"] + DATA
    runpy.run_path(script, run_name="__main__")
  finally:
    sys.argv = argv
  with Image.open(tmp_path / "i" / "00000.png") as im:
    assert im.size == (32, 32) and np.asarray(im)[0, 0] == 255  # the zero border, inverted


def test_csv_records_survive_commas_and_quotes_in_file_names(tmp_path):
  writer = scoring.OutputWriter(str(tmp_path / "r.csv"))
  name = 'a, "b".png'
  writer.write({"index": 0, "file": name, "label": None, "nats": 1.5, "bits_per_dim": 0.25})
  assert not (tmp_path / "r.csv").exists()  # complete only when closed
  writer.close()
  (row,) = _rows(tmp_path / "r.csv")
  assert row == {"index": "0", "file": name, "label": "", "nats": "1.5", "bits_per_dim": "0.25"}


@pytest.mark.parametrize("name", ["r.json", "r.jsonl"])
def test_json_output_is_one_document_and_jsonl_one_record_a_line(tmp_path, name):
  records = [{"index": 0, "file": 'a, "b".png', "label": None, "nats": 1.5, "bits_per_dim": 0.25},
             {"index": 1, "file": None, "label": 3, "nats": 2.5, "bits_per_dim": 0.5}]
  expected = [{"index": 0, "file": 'a, "b".png', "nats": 1.5, "bits_per_dim": 0.25},
              {"index": 1, "label": 3, "nats": 2.5, "bits_per_dim": 0.5}]
  writer = scoring.OutputWriter(str(tmp_path / name))
  for r in records:
    writer.write(r)
  writer.close()
  text = (tmp_path / name).read_text()
  if name.endswith(".json"):
    assert json.loads(text) == expected
  else:
    assert [json.loads(line) for line in text.splitlines()] == expected
  empty = scoring.OutputWriter(str(tmp_path / ("empty" + os.path.splitext(name)[1])))
  path = empty.close()
  assert (json.load(open(path)) == []) if name.endswith(".json") else open(path).read() == ""


def test_score_checks_are_the_configs(shipped, tmp_path, monkeypatch):
  """score.py's flags and the library refuse the same values with the same message, from one check."""
  monkeypatch.chdir(tmp_path)
  data = config_lib.DataConfig(dataset="fashion_mnist", data_dir=FASHION_MNIST_DIR)
  cases = [
      (dict(output="r.txt"), lambda: scoring.OutputWriter("r.txt"),
       lambda: config_lib.check_score_output("r.txt")),
      (dict(latents="z.npy"), lambda: scoring.LatentWriter("z.npy", 1, [32, 32, 1], [[4, 4, 16]]),
       lambda: config_lib.check_latents_path("z.npy")),
      (dict(n_dequant_samples=0), lambda: scoring.Scorer(shipped.model, n_dequant_samples=0),
       lambda: config_lib.check_n_dequant_samples(0)),
      (dict(split="valid"), lambda: scoring.dataset_images(data, "valid", [32, 32, 1]),
       lambda: config_lib.check_split("valid")),
  ]
  for flags, library, check in cases:
    messages = []
    for fn in (lambda flags=flags: config_lib.ScoreConfig(**flags), library, check):
      with pytest.raises(config_lib.ConfigError) as raised:
        fn()
      messages.append(str(raised.value))
    assert len(set(messages)) == 1, messages
  assert config_lib.ScoreConfig(output="r.json").output == "r.json"
  assert os.listdir(tmp_path) == []


def test_a_scorer_traces_once_and_its_draws_are_the_models(shipped, test_images):
  scorer = scoring.Scorer(shipped.model, n_dequant_samples=3)
  first = scorer.score(test_images, batch_size=16, seed=5)  # batches of 16, then 8
  images = np.stack([e["image"] for e in test_images.dataset.as_numpy_iterator()])
  index = tf.range(24, dtype=tf.int64)
  draws = [shipped.model.log_prob(images, noise=scoring.dequantization_noise(index, [32, 32, 1], 5, k))
           for k in range(3)]
  expected = -(tf.reduce_logsumexp(tf.stack(draws), 0) - np.log(3.)).numpy()
  np.testing.assert_allclose(first.nats, expected, rtol=1e-6)
  again = scorer.score(test_images, batch_size=16, seed=6)  # another seed: other draws
  assert np.all(again.nats != first.nats)
  subset = scoring.ImageSet(test_images.dataset.take(5), 5, None, "five")
  scorer.score(subset, batch_size=16, seed=7)
  assert scorer.tracing_count() == 1


def test_an_image_beyond_float32s_density_range_still_gets_its_exact_score(test_images):
  """A split prior's log-scale of -53 makes latents of ~1e24: float32's log-density is -inf."""
  model = sampling.load_model(sampling.SHIPPED_MODEL).model  # a copy of its own to change
  prior = model.glow.priors[0].conv
  prior.bias.assign(tf.fill(prior.bias.shape, -53.))  # mean and log-scale -53 everywhere
  subset = scoring.ImageSet(test_images.dataset.take(4), 4, None, "four")
  images = np.stack([e["image"] for e in subset.dataset.as_numpy_iterator()])
  noise = scoring.dequantization_noise(tf.range(4, dtype=tf.int64), model.image_shape, 3, 0)
  assert np.all(model.log_prob(images, noise=noise).numpy() == -np.inf)
  summary = scoring.score_images(model, subset, batch_size=4, seed=3)
  eps, _, ildj = model.glow.encode(model.preprocess(images, noise))
  square = sum(np.sum(np.square(z.numpy().astype(np.float64)), axis=(1, 2, 3)) for z in eps)
  d = model.num_dims
  expected = 0.5 * square + 0.5 * d * np.log(2 * np.pi) - ildj.numpy() + d * np.log(model.n_bins)
  assert np.all(np.isfinite(summary.nats)) and np.all(summary.nats > 1e40)
  np.testing.assert_allclose(summary.nats, expected, rtol=1e-6)
