"""score.py's flags; their defaults are `glow_tf.config.ScoreConfig`'s."""

from absl import flags

from flags import glow_flags
from glow_tf import config as config_lib
from glow_tf.config import ScoreConfig, default_of

__all__ = ["define_flags", "config_from_flags"]


def _d(name):
  return default_of(ScoreConfig, name)


def define_flags(flag_values=flags.FLAGS):
  """Defines score.py's flags on `flag_values`."""
  f = flag_values
  flags.DEFINE_string(
      "logdir", _d("logdir"),
      "train.py's logdir (or an exported model directory) to load the model from. With no model "
      "in the default ./logs, the model shipped in pretrained/fashion_mnist is used.",
      flag_values=f)
  glow_flags.define_checkpoint_flags(ScoreConfig, f, __name__)
  flags.DEFINE_enum("dataset", _d("dataset"), list(config_lib.DATASETS),
                    "Dataset to score (any that train.py reads); default: the model's own.",
                    flag_values=f)
  flags.DEFINE_string("data_dir", _d("data_dir"), "Where --dataset's data is (as train.py's).",
                      flag_values=f)
  flags.DEFINE_enum("split", _d("split"), ["train", "test"], "Split of --dataset to score.",
                    flag_values=f)
  flags.DEFINE_list(
      "images", list(_d("images")),
      "Image files, folders or globs to score instead of a dataset; each must have the model's "
      "size and channels (no resizing: the likelihood of a resized image is not the image's).",
      flag_values=f)
  flags.DEFINE_integer("max_images", _d("max_images"), "Score only the first N images of a "
                       "dataset split (default: all).", flag_values=f)
  flags.DEFINE_enum("ood_dataset", _d("ood_dataset"), list(config_lib.DATASETS),
                    "Out-of-distribution mode: a second dataset to score and tell apart.",
                    flag_values=f)
  flags.DEFINE_string("ood_data_dir", _d("ood_data_dir"), "Where --ood_dataset's data is.",
                      flag_values=f)
  flags.DEFINE_enum("ood_split", _d("ood_split"), ["train", "test"], "Split of --ood_dataset.",
                    flag_values=f)
  flags.DEFINE_list("ood_images", list(_d("ood_images")),
                    "Out-of-distribution mode: image files, folders or globs.", flag_values=f)
  flags.DEFINE_string(
      "output", _d("output"),
      "Per-image records (index, file, label, nats = -log p(x), bits_per_dim): .csv; .jsonl, "
      "JSON lines (one JSON object per image and line); or .json, one JSON document (the list "
      "of those objects). The out-of-distribution set's go to <name>_ood.<ext>. Written when "
      "complete.",
      flag_values=f)
  flags.DEFINE_string("latents", _d("latents"), "An .npz for the latents of every scored image "
                      "(z0, z1, ... per level, x, index, label), as the original's --inference.",
                      flag_values=f)
  flags.DEFINE_string("histogram", _d("histogram"), "Out-of-distribution mode: the histogram PNG "
                      "(default: beside --output, else ./ood_histogram.png).", flag_values=f)
  flags.DEFINE_boolean("overwrite", _d("overwrite"), "Replace existing output files.",
                       flag_values=f)
  flags.DEFINE_integer(
      "n_dequant_samples", _d("n_dequant_samples"),
      "K dequantisation draws per image: the score is -log2 mean_k p(x + u_k) per dimension, a "
      "tighter bound of the discrete likelihood as K grows (K=1: the original's test figure).",
      flag_values=f)
  flags.DEFINE_string(
      "dequantization", _d("dequantization"),
      "Empty: the model's own (its learned q(u | x) as the proposal for a model trained with "
      "--dequantization=variational, else uniform). uniform: uniform draws for any model (the "
      "figure comparable with uniformly dequantised models).", flag_values=f)
  flags.DEFINE_integer("batch_size", _d("batch_size"), "Global batch size.", flag_values=f)
  flags.DEFINE_integer("seed", _d("seed"), "Seed of the dequantisation draws.", flag_values=f)
  flags.DEFINE_integer("typicality_batch", _d("typicality_batch"), "M, the batch size of the "
                       "typicality test (Nalisnick et al. 2019).", flag_values=f)
  flags.DEFINE_integer("typicality_train_images", _d("typicality_train_images"), "Training "
                       "images whose mean -log p estimates the entropy for the typicality test.",
                       flag_values=f)
  flags.DEFINE_enum("strategy", _d("strategy"), list(config_lib.STRATEGIES),
                    "tf.distribute strategy, as train.py's.", flag_values=f)
  glow_flags.define_download_flag(ScoreConfig, f, __name__)


def config_from_flags(f: flags.FlagValues) -> ScoreConfig:
  """score.py's `ScoreConfig` from parsed flags (validated)."""
  return ScoreConfig(
      logdir=f.logdir, restore_path=f.restore_path, polyak=f.polyak, dataset=f.dataset,
      data_dir=f.data_dir or None, split=f.split, images=tuple(f.images),
      max_images=f.max_images, ood_dataset=f.ood_dataset, ood_data_dir=f.ood_data_dir or None,
      ood_split=f.ood_split, ood_images=tuple(f.ood_images), output=f.output, latents=f.latents,
      histogram=f.histogram, overwrite=f.overwrite, n_dequant_samples=f.n_dequant_samples,
      dequantization=f.dequantization,
      batch_size=f.batch_size, seed=f.seed, typicality_batch=f.typicality_batch,
      typicality_train_images=f.typicality_train_images, strategy=f.strategy,
      download=f.download, default_logdir=not f["logdir"].present)
