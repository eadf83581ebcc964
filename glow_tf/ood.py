"""Out-of-distribution (OOD) detection with a trained Glow: scores and their metrics.

Three scores of an image x, each turned into a detection score oriented so that
HIGHER = MORE IN-DISTRIBUTION (the in-distribution set is the positive class):

* ``bits_per_dim``: the model's bits/dim of x (lower = more in-distribution);
  the detection score is ``-bits/dim``.
* ``typicality``: the test of Nalisnick et al. 2019, "Detecting
  out-of-distribution inputs to deep generative models using typicality". Each
  set is cut into consecutive batches of M images; a batch's statistic is
  ``| mean over the batch of -log p(x) - H_hat |`` (nats), with ``H_hat`` the
  training set's entropy estimate, the mean of ``-log p(x)`` over (held-out)
  training images. Larger = more OOD; the detection score is ``-statistic``,
  one per batch, so its metrics are over batches.
* ``complexity``: the complexity-corrected score of Serra et al. 2020, "Input
  complexity and out-of-distribution detection with likelihood-based generative
  models": ``S(x) = bits/dim(x) - L(x)``, with ``L(x)`` the image's lossless PNG
  length (zlib level 9) in bits per dimension. Larger = more OOD; the detection
  score is ``-S``.

The metrics (`detection_metrics`): AUROC (tie-aware Mann-Whitney U), AUPR
(average precision, as scikit-learn's `average_precision_score`) and the false
positive rate at 95% true positive rate. `ood_report` computes them for every
score its inputs allow (score.py's report), `report_table` prints a report as a
Markdown table; `save_histogram` draws both sets' bits/dim.
"""

import io
import math
from typing import Any, Dict, List, Optional, Union

import numpy as np
import tensorflow as tf

__all__ = [
    "auroc", "aupr", "fpr_at_tpr", "detection_metrics", "entropy_estimate", "typicality_scores",
    "png_bits_per_dim", "complexity_corrected", "ood_report", "report_table", "save_histogram",
]

ArrayLike = Union[np.ndarray, tf.Tensor, list, tuple]


def _scores(values: ArrayLike, name: str, finite: bool = False) -> np.ndarray:
  """`values` as a non-empty 1-D float64 array without NaN (nor +-inf if `finite`); ValueError otherwise."""
  arr = np.asarray(values.numpy() if isinstance(values, tf.Tensor) else values, dtype=np.float64)
  if arr.ndim != 1:
    raise ValueError(f"{name} must be 1-D (one score per image), got shape {arr.shape}")
  if arr.size == 0:
    raise ValueError(f"{name} is empty")
  if np.isnan(arr).any():
    raise ValueError(f"{name} contains {int(np.isnan(arr).sum())} NaN value(s)")
  if finite and not np.isfinite(arr).all():
    raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} infinite value(s)")
  return arr


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of `x` in ascending order, ties sharing their average rank."""
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first element
  return (first + (counts + 1) / 2.)[inverse]


def auroc(positive_scores: ArrayLike, negative_scores: ArrayLike) -> float:
  """Area under the ROC curve, higher score = positive; exact and tie-aware.

  Args:
    positive_scores: [P] scores of the positives (in-distribution).
    negative_scores: [N] scores of the negatives (out-of-distribution).

  Returns:
    The Mann-Whitney U statistic over P*N: the probability that a random
    positive scores above a random negative, ties counted half. 1 = perfect
    separation, 0.5 = chance, 0 = reversed.
  """
  pos = _scores(positive_scores, "positive_scores")
  neg = _scores(negative_scores, "negative_scores")
  ranks = _average_ranks(np.concatenate([pos, neg]))
  u = ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2.
  return float(u / (pos.size * neg.size))


def aupr(positive_scores: ArrayLike, negative_scores: ArrayLike) -> float:
  """Area under the precision-recall curve as average precision, positives = in-distribution.

  As scikit-learn's `average_precision_score`: the thresholds are the distinct
  score values, from the highest down; AP = sum over thresholds of
  (recall_k - recall_{k-1}) * precision_k (a step function, no interpolation).

  Args:
    positive_scores: [P] scores of the positives (in-distribution).
    negative_scores: [N] scores of the negatives (out-of-distribution).

  Returns:
    AP in [0, 1]; 1 = perfect separation, about P / (P + N) for chance.
  """
  pos = _scores(positive_scores, "positive_scores")
  neg = _scores(negative_scores, "negative_scores")
  scores = np.concatenate([pos, neg])
  labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
  order = np.argsort(-scores, kind="stable")
  scores, labels = scores[order], labels[order]
  # The last index of each run of equal scores: one threshold per distinct value.
  ends = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
  tp = np.cumsum(labels)[ends]
  precision = tp / (ends + 1)
  recall = tp / pos.size
  return float(np.sum(np.diff(recall, prepend=0.) * precision))


def fpr_at_tpr(positive_scores: ArrayLike, negative_scores: ArrayLike, tpr: float = 0.95) -> float:
  """False positive rate at the threshold that keeps at least `tpr` of the positives.

  The threshold t is the largest value with mean(positives >= t) >= `tpr`
  (one of the positives' scores); the result is mean(negatives >= t): the
  fraction of OOD inputs taken for in-distribution ones. Lower is better.

  Args:
    positive_scores: [P] scores of the positives (in-distribution), higher = positive.
    negative_scores: [N] scores of the negatives (out-of-distribution).
    tpr: the true positive rate to keep, in (0, 1].
  """
  pos = _scores(positive_scores, "positive_scores")
  neg = _scores(negative_scores, "negative_scores")
  if not 0. < tpr <= 1.:
    raise ValueError(f"tpr must be in (0, 1], got {tpr}")
  n = pos.size
  # The fewest positives k with k / n >= tpr (as computed in floating point).
  k = min(max(math.ceil(tpr * n), 1), n)
  while k > 1 and (k - 1) / n >= tpr:
    k -= 1
  while k < n and k / n < tpr:
    k += 1
  threshold = np.sort(pos)[::-1][k - 1]
  return float(np.mean(neg >= threshold))


def detection_metrics(in_scores: ArrayLike, ood_scores: ArrayLike) -> Dict[str, float]:
  """AUROC, AUPR and FPR at 95% TPR with in-distribution as the positive class.

  Args:
    in_scores: [P] detection scores of the in-distribution set, higher = more in-distribution.
    ood_scores: [N] detection scores of the OOD set, same orientation.

  Returns:
    {"auroc": ..., "aupr": ..., "fpr_at_95_tpr": ...}.
  """
  return {
      "auroc": auroc(in_scores, ood_scores),
      "aupr": aupr(in_scores, ood_scores),
      "fpr_at_95_tpr": fpr_at_tpr(in_scores, ood_scores, 0.95),
  }


def entropy_estimate(train_nats: ArrayLike) -> float:
  """The typicality test's H_hat: the mean of -log p(x) in nats over [N] (held-out) training images."""
  return float(np.mean(_scores(train_nats, "train_nats", finite=True)))


def typicality_scores(nats_per_image: ArrayLike, entropy_estimate: float, batch_size: int) -> np.ndarray:
  """Typicality statistics |mean_batch(-log p(x)) - H_hat| of consecutive batches (larger = more OOD).

  Args:
    nats_per_image: [N] -log p(x) in nats per image, in the set's order.
    entropy_estimate: H_hat in nats (`entropy_estimate` of the training set's nats).
    batch_size: M, the images per batch; a last partial batch is dropped.

  Returns:
    [N // M] float64, one statistic per batch.
  """
  nats = _scores(nats_per_image, "nats_per_image", finite=True)
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if not np.isfinite(entropy_estimate):
    raise ValueError(f"entropy_estimate must be finite, got {entropy_estimate}")
  num_batches = nats.size // batch_size
  if num_batches == 0:
    raise ValueError(f"nats_per_image has {nats.size} image(s), fewer than one batch of {batch_size}")
  means = nats[:num_batches * batch_size].reshape(num_batches, batch_size).mean(axis=1)
  return np.abs(means - entropy_estimate)


def png_bits_per_dim(images: Union[np.ndarray, tf.Tensor]) -> np.ndarray:
  """Each image's lossless PNG length (`tf.io.encode_png`, compression 9) in bits per dimension.

  Args:
    images: uint8 [B, H, W, C], C in {1, 2, 3, 4}.

  Returns:
    [B] float64: len(png bytes) * 8 / (H * W * C), Serra et al.'s complexity L(x).
  """
  images = tf.convert_to_tensor(images)
  if images.dtype != tf.uint8:
    raise ValueError(f"images must be uint8, got {images.dtype.name}")
  if images.shape.rank != 4 or images.shape[-1] not in (1, 2, 3, 4):
    raise ValueError(f"images must be [B, H, W, C] with C in 1..4, got shape {images.shape}")
  b, h, w, c = images.shape
  if b == 0 or h * w == 0:
    raise ValueError(f"images is empty (shape {images.shape})")
  lengths = [len(tf.io.encode_png(images[i], compression=9).numpy()) for i in range(b)]
  return np.asarray(lengths, np.float64) * 8. / (h * w * c)


def complexity_corrected(bits_per_dim: ArrayLike, png_bits_per_dim: ArrayLike) -> np.ndarray:
  """Serra et al.'s S(x) = bits/dim(x) - L(x), [B] from two [B] arrays (larger = more OOD)."""
  bpd = _scores(bits_per_dim, "bits_per_dim", finite=True)
  png = _scores(png_bits_per_dim, "png_bits_per_dim", finite=True)
  if bpd.shape != png.shape:
    raise ValueError(f"bits_per_dim {bpd.shape} and png_bits_per_dim {png.shape} have different shapes")
  return bpd - png


def ood_report(in_bits_per_dim: ArrayLike,
               ood_bits_per_dim: ArrayLike,
               in_images: Optional[Union[np.ndarray, tf.Tensor]] = None,
               ood_images: Optional[Union[np.ndarray, tf.Tensor]] = None,
               train_nats: Optional[ArrayLike] = None,
               num_dims: Optional[int] = None,
               typicality_batch: int = 10,
               in_png_bits_per_dim: Optional[ArrayLike] = None,
               ood_png_bits_per_dim: Optional[ArrayLike] = None) -> Dict[str, Dict[str, Any]]:
  """The detection metrics of every score the inputs allow, in-distribution = positive.

  Args:
    in_bits_per_dim: [P] the model's bits/dim of the in-distribution images.
    ood_bits_per_dim: [N] the model's bits/dim of the OOD images.
    in_images, ood_images: uint8 [P, H, W, C] and [N, H', W', C'], the same
      images in the same order; both or neither. Enable "complexity".
    train_nats: [T] -log p(x) in nats of (held-out) training images; with
      `num_dims` enables "typicality".
    num_dims: H * W * C of the model's images, to turn bits/dim into nats per
      image (nats = bits/dim * num_dims * ln 2).
    typicality_batch: M, images per typicality batch (each set needs >= M).
    in_png_bits_per_dim, ood_png_bits_per_dim: [P] and [N], the images' PNG
      lengths in bits per dimension (`png_bits_per_dim`) when they are
      measured already (score.py measures them batch by batch): instead of
      `in_images`/`ood_images`; both or neither.

  Returns:
    {score_name: {"auroc", "aupr", "fpr_at_95_tpr", "in_mean", "ood_mean",
    "in_count", "ood_count"}} for score_name in "bits_per_dim" (always),
    "complexity" and "typicality" (when their inputs are given), in this
    order. The metrics use each score oriented so that higher = more
    in-distribution (its negation); "in_mean"/"ood_mean" are the means of the
    score as defined (bits/dim; the typicality statistic in nats; S in
    bits/dim), "in_count"/"ood_count" how many values (images; batches for
    typicality). "complexity" also holds "in_png_bits_per_dim"/
    "ood_png_bits_per_dim" (the sets' mean L(x)); "typicality" holds
    "entropy_estimate" (H_hat, nats) and "batch_size".
  """
  in_bpd = _scores(in_bits_per_dim, "in_bits_per_dim", finite=True)
  ood_bpd = _scores(ood_bits_per_dim, "ood_bits_per_dim", finite=True)

  def entry(in_score: np.ndarray, ood_score: np.ndarray) -> Dict[str, Any]:
    out: Dict[str, Any] = detection_metrics(-in_score, -ood_score)
    out.update(in_mean=float(in_score.mean()), ood_mean=float(ood_score.mean()),
               in_count=int(in_score.size), ood_count=int(ood_score.size))
    return out

  report = {"bits_per_dim": entry(in_bpd, ood_bpd)}

  if (in_images is None) != (ood_images is None):
    raise ValueError("the complexity score needs both in_images and ood_images (got only one)")
  if (in_png_bits_per_dim is None) != (ood_png_bits_per_dim is None):
    raise ValueError("the complexity score needs both in_png_bits_per_dim and "
                     "ood_png_bits_per_dim (got only one)")
  if in_images is not None and in_png_bits_per_dim is not None:
    raise ValueError("give the images or their png_bits_per_dim, not both")
  if in_images is not None:
    in_png_bits_per_dim, ood_png_bits_per_dim = png_bits_per_dim(in_images), png_bits_per_dim(ood_images)
  if in_png_bits_per_dim is not None:
    in_png = _scores(in_png_bits_per_dim, "in_png_bits_per_dim", finite=True)
    ood_png = _scores(ood_png_bits_per_dim, "ood_png_bits_per_dim", finite=True)
    if in_png.shape != in_bpd.shape or ood_png.shape != ood_bpd.shape:
      raise ValueError(f"images and bits/dim differ in count: in {in_png.size} vs {in_bpd.size}, "
                       f"ood {ood_png.size} vs {ood_bpd.size}")
    report["complexity"] = entry(complexity_corrected(in_bpd, in_png), complexity_corrected(ood_bpd, ood_png))
    report["complexity"].update(in_png_bits_per_dim=float(in_png.mean()), ood_png_bits_per_dim=float(ood_png.mean()))

  if (train_nats is None) != (num_dims is None):
    raise ValueError("typicality needs both train_nats and num_dims (got only one)")
  if train_nats is not None:
    if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
      raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    h = entropy_estimate(train_nats)
    to_nats = num_dims * math.log(2.)
    in_typ = typicality_scores(in_bpd * to_nats, h, typicality_batch)
    ood_typ = typicality_scores(ood_bpd * to_nats, h, typicality_batch)
    report["typicality"] = entry(in_typ, ood_typ)
    report["typicality"].update(entropy_estimate=h, batch_size=int(typicality_batch))
  return report


def _score_title(name: str, entry: Dict[str, Any]) -> str:
  if name == "bits_per_dim":
    return "bits/dim"
  if name == "complexity":
    return "complexity-corrected (Serra et al. 2020)"
  if name == "typicality":
    return f"typicality, batches of {entry['batch_size']} (Nalisnick et al. 2019)"
  return name


def report_table(report: Dict[str, Dict[str, Any]]) -> List[str]:
  """An `ood_report` as the lines of a Markdown table: score, AUROC, AUPR, FPR at 95% TPR.

  One row per score, in the report's order, named for readers ("bits/dim",
  "complexity-corrected (Serra et al. 2020)", "typicality, batches of M
  (Nalisnick et al. 2019)"); the metrics with 4 decimals.
  """
  lines = ["| score | AUROC | AUPR | FPR at 95% TPR |", "|---|---|---|---|"]
  for name, m in report.items():
    lines.append(f"| {_score_title(name, m)} | {m['auroc']:.4f} | {m['aupr']:.4f} | "
                 f"{m['fpr_at_95_tpr']:.4f} |")
  return lines


def save_histogram(path: str,
                   in_bits_per_dim: ArrayLike,
                   ood_bits_per_dim: ArrayLike,
                   in_label: str,
                   ood_label: str,
                   title: Optional[str] = None) -> str:
  """Writes a PNG of both sets' bits/dim histograms (shared bins, densities, means marked).

  Two overlaid semi-transparent histograms on the same bins, x axis "bits/dim",
  y axis "density" (each set integrates to 1, so sets of different sizes
  compare), a dashed vertical line at each set's mean and a legend such as
  "<set name> (mean <bits/dim>, n=<images>)". Rendered headless with
  matplotlib's Agg canvas (no pyplot, no global backend change) and written
  atomically (`glow_tf.rundir.atomic_write`).

  Args:
    path: the PNG's path.
    in_bits_per_dim: [P] bits/dim of the in-distribution set.
    ood_bits_per_dim: [N] bits/dim of the OOD set.
    in_label, ood_label: the sets' names in the legend.
    title: the figure's title; by default "bits/dim: <in_label> vs <ood_label>".

  Returns:
    `path`.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  from glow_tf.rundir import atomic_write

  in_bpd = _scores(in_bits_per_dim, "in_bits_per_dim", finite=True)
  ood_bpd = _scores(ood_bits_per_dim, "ood_bits_per_dim", finite=True)
  lo, hi = float(min(in_bpd.min(), ood_bpd.min())), float(max(in_bpd.max(), ood_bpd.max()))
  if hi - lo < 1e-6:
    lo, hi = lo - 0.5, hi + 0.5
  bins = np.linspace(lo, hi, 61)

  fig = Figure(figsize=(7, 4.5))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for values, label, color in ((in_bpd, in_label, "tab:blue"), (ood_bpd, ood_label, "tab:orange")):
    mean = float(values.mean())
    ax.hist(values, bins=bins, density=True, alpha=0.55, color=color, edgecolor=color, linewidth=0.5,
            label=f"{label} (mean {mean:.2f}, n={values.size})")
    ax.axvline(mean, color=color, linestyle="--", linewidth=1.5)
  ax.set_xlabel("bits/dim")
  ax.set_ylabel("density")
  ax.set_title(title if title is not None else f"bits/dim: {in_label} vs {ood_label}")
  ax.legend(loc="best", frameon=False)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  return atomic_write(path, buf.getvalue())
