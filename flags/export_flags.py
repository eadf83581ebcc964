"""export.py's flags; their defaults are `glow_tf.config.ExportConfig`'s."""

from absl import flags

from flags import glow_flags
from glow_tf.config import ExportConfig, default_of

__all__ = ["define_flags", "config_from_flags"]


def _d(name):
  return default_of(ExportConfig, name)


def define_flags(flag_values=flags.FLAGS):
  """Defines export.py's flags on `flag_values`."""
  f = flag_values
  flags.DEFINE_string("logdir", _d("logdir"), "train.py's logdir (its latest checkpoint and "
                      "config.json), or an exported model directory.", flag_values=f)
  glow_flags.define_checkpoint_flags(ExportConfig, f, __name__, weights_help="export the")
  flags.DEFINE_string("output", _d("output"), "The SavedModel directory to write (default: "
                      "<logdir>/export); config.json and export.json are written beside "
                      "saved_model.pb.", flag_values=f)
  flags.DEFINE_boolean("overwrite", _d("overwrite"), "Replace a non-empty --output (an earlier "
                       "export; never a training run).", flag_values=f)


def config_from_flags(f: flags.FlagValues) -> ExportConfig:
  """export.py's `ExportConfig` from parsed flags (validated)."""
  return ExportConfig(logdir=f.logdir, restore_path=f.restore_path, output=f.output,
                      polyak=f.polyak, overwrite=f.overwrite)
