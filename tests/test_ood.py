"""OOD scores and metrics: AUROC/AUPR/FPR@95 against brute force, typicality, PNG complexity, the histogram."""

import math

import numpy as np
import pytest
from PIL import Image

from glow_tf import ood


def brute_auroc(pos, neg):
  """P(pos > neg) + 0.5 P(pos == neg) over all pairs."""
  diff = np.asarray(pos, np.float64)[:, None] - np.asarray(neg, np.float64)[None, :]
  return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def brute_ap(pos, neg):
  """The mean over positives of the precision among all scores >= that positive's score."""
  pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
  precisions = []
  for s in pos:
    tp, fp = np.sum(pos >= s), np.sum(neg >= s)
    precisions.append(tp / (tp + fp))
  return float(np.mean(precisions))


def test_perfect_separation():
  pos, neg = np.array([3., 4., 5., 6.]), np.array([-1., 0., 1., 2.])
  assert ood.auroc(pos, neg) == 1.
  assert ood.aupr(pos, neg) == 1.
  assert ood.fpr_at_tpr(pos, neg) == 0.
  assert ood.detection_metrics(pos, neg) == {"auroc": 1., "aupr": 1., "fpr_at_95_tpr": 0.}


def test_identical_and_reversed():
  x = np.random.default_rng(0).normal(size=50)
  assert ood.auroc(x, x) == pytest.approx(0.5)
  assert ood.auroc(np.ones(7), np.ones(3)) == 0.5  # all tied
  assert ood.aupr(np.ones(7), np.ones(3)) == pytest.approx(0.7)  # one threshold: the base rate
  assert ood.fpr_at_tpr(x, x) == pytest.approx(np.mean(x >= np.sort(x)[::-1][47]))
  pos, neg = np.array([-1., 0., 1.]), np.array([2., 3.])
  assert ood.auroc(pos, neg) == 0.
  assert ood.fpr_at_tpr(pos, neg) == 1.


@pytest.mark.parametrize("seed", range(5))
def test_against_brute_force(seed):
  rng = np.random.default_rng(seed)
  p, n = rng.integers(1, 60, size=2)
  # Integers give many ties, floats none.
  for pos, neg in ((rng.integers(0, 8, p), rng.integers(-2, 6, n)), (rng.normal(0.5, 1, p), rng.normal(0, 1, n))):
    assert ood.auroc(pos, neg) == pytest.approx(brute_auroc(pos, neg), abs=1e-12)
    assert ood.aupr(pos, neg) == pytest.approx(brute_ap(pos, neg), abs=1e-12)
    # Brute force of the threshold: the largest positive score keeping >= 95% of the positives.
    t = max(s for s in pos if np.mean(pos >= s) >= 0.95)
    assert ood.fpr_at_tpr(pos, neg) == np.mean(neg >= t)


def test_fpr_at_tpr_hand_example():
  pos = np.arange(1., 21.)  # 20 positives 1..20: keeping 95% = 19 of them needs t = 2
  neg = np.array([0., 1., 1.5, 2., 2.5, 30.])  # 2., 2.5, 30. are >= 2
  assert ood.fpr_at_tpr(pos, neg) == pytest.approx(3 / 6)
  assert ood.fpr_at_tpr(pos, neg, tpr=1.) == pytest.approx(5 / 6)  # t = 1
  assert ood.fpr_at_tpr(pos, neg, tpr=0.5) == pytest.approx(1 / 6)  # 10 positives: t = 11
  # Ties at the threshold: keeping half of [5, 1, 1, 1] needs t = 1 (t in (1, 5] keeps only a quarter).
  assert ood.fpr_at_tpr([1., 1., 1., 5.], [1., 0.], tpr=0.5) == 0.5


def test_aupr_sklearn_example():
  # average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333... (its docstring's example).
  assert ood.aupr([0.35, 0.8], [0.1, 0.4]) == pytest.approx(5 / 6)


def test_typicality_hand_example():
  nats = np.array([10., 12., 20., 20., 7., 9., 100.])  # batches of 2: means 11, 20, 8; 100 dropped
  np.testing.assert_allclose(ood.typicality_scores(nats, 10., 2), [1., 10., 2.])
  assert ood.entropy_estimate([1., 2., 6.]) == 3.
  np.testing.assert_allclose(ood.typicality_scores(nats, 10., 7), [abs(178 / 7 - 10)])
  with pytest.raises(ValueError, match="fewer than one batch"):
    ood.typicality_scores(nats, 10., 8)
  with pytest.raises(ValueError, match="batch_size"):
    ood.typicality_scores(nats, 10., 0)


def test_png_bits_per_dim_and_complexity():
  rng = np.random.default_rng(0)
  images = np.stack([np.full((32, 32, 3), 128, np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)])
  bpd = ood.png_bits_per_dim(images)
  assert bpd.shape == (2,)
  assert bpd[0] < 0.5 and bpd[1] > 7.5  # constant vs incompressible noise (8 bits/dim)
  np.testing.assert_allclose(ood.complexity_corrected([3., 4.], [1., 6.5]), [2., -2.5])
  with pytest.raises(ValueError, match="uint8"):
    ood.png_bits_per_dim(images.astype(np.float32))
  with pytest.raises(ValueError, match="shape"):
    ood.png_bits_per_dim(images[0])


def test_ood_report():
  rng = np.random.default_rng(1)
  in_bpd, ood_bpd = rng.normal(3., 0.1, 40), rng.normal(2., 0.1, 30)  # OOD *more* likely, as in the papers
  in_images = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
  ood_images = np.zeros((30, 8, 8, 1), np.uint8)
  train_nats = rng.normal(3., 0.1, 100) * 64 * math.log(2)
  report = ood.ood_report(in_bpd, ood_bpd, in_images, ood_images, train_nats=train_nats, num_dims=64,
                          typicality_batch=5)
  assert list(report) == ["bits_per_dim", "complexity", "typicality"]  # the table's order
  b = report["bits_per_dim"]
  assert b["auroc"] == pytest.approx(ood.auroc(-in_bpd, -ood_bpd)) and b["auroc"] < 0.01
  assert b["in_mean"] == pytest.approx(in_bpd.mean()) and (b["in_count"], b["ood_count"]) == (40, 30)
  t = report["typicality"]
  assert (t["in_count"], t["ood_count"], t["batch_size"]) == (8, 6, 5)
  assert t["entropy_estimate"] == pytest.approx(train_nats.mean())
  assert t["auroc"] == 1.  # OOD batches are far from the typical set
  c = report["complexity"]
  s_in = in_bpd - ood.png_bits_per_dim(in_images)
  assert c["in_mean"] == pytest.approx(s_in.mean()) and c["auroc"] == 1.
  only = ood.ood_report(in_bpd, ood_bpd)
  assert set(only) == {"bits_per_dim"} and set(only["bits_per_dim"]) >= {"auroc", "aupr", "fpr_at_95_tpr"}
  with pytest.raises(ValueError, match="num_dims"):
    ood.ood_report(in_bpd, ood_bpd, train_nats=train_nats)
  with pytest.raises(ValueError, match="ood_images"):
    ood.ood_report(in_bpd, ood_bpd, in_images=in_images)
  with pytest.raises(ValueError, match="count"):
    ood.ood_report(in_bpd, ood_bpd, in_images[:10], ood_images)
  # PNG lengths measured already (score.py measures them batch by batch) give the same report.
  measured = ood.ood_report(in_bpd, ood_bpd, train_nats=train_nats, num_dims=64, typicality_batch=5,
                            in_png_bits_per_dim=ood.png_bits_per_dim(in_images),
                            ood_png_bits_per_dim=ood.png_bits_per_dim(ood_images))
  assert measured == report
  with pytest.raises(ValueError, match="ood_png_bits_per_dim"):
    ood.ood_report(in_bpd, ood_bpd, in_png_bits_per_dim=ood.png_bits_per_dim(in_images))
  with pytest.raises(ValueError, match="not both"):
    ood.ood_report(in_bpd, ood_bpd, in_images, ood_images,
                   in_png_bits_per_dim=ood.png_bits_per_dim(in_images),
                   ood_png_bits_per_dim=ood.png_bits_per_dim(ood_images))


def test_report_table_is_score_pys_table():
  report = {"bits_per_dim": {"auroc": 0.25, "aupr": 0.5, "fpr_at_95_tpr": 1.},
            "complexity": {"auroc": 0.98765, "aupr": 0.9, "fpr_at_95_tpr": 0.03125},
            "typicality": {"auroc": 1., "aupr": 1., "fpr_at_95_tpr": 0., "batch_size": 10}}
  assert ood.report_table(report) == [
      "| score | AUROC | AUPR | FPR at 95% TPR |",
      "|---|---|---|---|",
      "| bits/dim | 0.2500 | 0.5000 | 1.0000 |",
      "| complexity-corrected (Serra et al. 2020) | 0.9877 | 0.9000 | 0.0312 |",
      "| typicality, batches of 10 (Nalisnick et al. 2019) | 1.0000 | 1.0000 | 0.0000 |"]


def test_save_histogram(tmp_path):
  rng = np.random.default_rng(2)
  path = str(tmp_path / "sub" / "hist.png")
  assert ood.save_histogram(path, rng.normal(2.93, 0.1, 500), rng.normal(2.2, 0.2, 300),
                            "Fashion-MNIST test", "MNIST test") == path
  with Image.open(path) as img:
    assert img.format == "PNG" and img.mode in ("RGB", "RGBA")
    assert 600 <= img.width <= 1200 and 400 <= img.height <= 800
  assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]
  ood.save_histogram(path, [3., 3.], [3.], "a", "b", title="all equal")  # degenerate range still draws


@pytest.mark.parametrize("pos, neg, match", [
    ([], [1.], "positive_scores is empty"),
    ([1.], [], "negative_scores is empty"),
    ([1., float("nan")], [0.], "NaN"),
    ([[1., 2.]], [0.], "1-D"),
])
def test_bad_scores(pos, neg, match):
  for fn in (ood.auroc, ood.aupr, ood.fpr_at_tpr, ood.detection_metrics):
    with pytest.raises(ValueError, match=match):
      fn(pos, neg)


def test_bad_inputs():
  with pytest.raises(ValueError, match="different shapes"):
    ood.complexity_corrected([1., 2.], [1.])
  with pytest.raises(ValueError, match="tpr"):
    ood.fpr_at_tpr([1.], [0.], tpr=0.)
  with pytest.raises(ValueError, match="NaN"):
    ood.ood_report([1., float("nan")], [2.])
  with pytest.raises(ValueError, match="infinite"):
    ood.save_histogram("/tmp/unused.png", [1., float("inf")], [2.], "a", "b")
  with pytest.raises(ValueError, match="empty"):
    ood.png_bits_per_dim(np.zeros((0, 4, 4, 1), np.uint8))
