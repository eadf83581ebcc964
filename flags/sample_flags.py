"""sample.py's flags; their defaults are `glow_tf.config.SampleConfig`'s."""

from typing import List, Sequence

from absl import flags

from flags import glow_flags
from glow_tf import config as config_lib
from glow_tf.config import SampleConfig, default_of

__all__ = ["define_flags", "config_from_flags", "parse_temperatures"]


def define_flags(flag_values=flags.FLAGS):
  """Defines sample.py's flags on `flag_values`."""
  f = flag_values
  d = lambda name: default_of(SampleConfig, name)
  flags.DEFINE_enum("mode", d("mode"), list(config_lib.SAMPLE_MODES),
                    "sample: a grid, one row per temperature; reconstruct: dataset images and "
                    "decode(encode(.)) side by side; interpolate: latent interpolation between "
                    "two images; manipulate: move images along an attribute direction; "
                    "conditional: a conditional Glow's samples given conditions "
                    "(docs/conditional.md).",
                    flag_values=f)
  flags.DEFINE_string("logdir", d("logdir"), "train.py's logdir (or an exported model "
                      "directory) to load the latest checkpoint and config.json from. With no "
                      "model in the default ./logs, the model shipped in pretrained/fashion_mnist "
                      "is used.", flag_values=f)
  glow_flags.define_checkpoint_flags(SampleConfig, f, __name__)
  flags.DEFINE_list("temperature", [str(t) for t in d("temperatures")], "One temperature or a "
                    "comma-separated list (one grid row each), >= 0.", flag_values=f)
  flags.DEFINE_integer("n_samples", d("n_samples"), "Images per row.", flag_values=f)
  flags.DEFINE_integer("seed", d("seed"), "Random seed: the same seed gives the same images.",
                       flag_values=f)
  flags.DEFINE_string("output", d("output"), "PNG path to write (default: <logdir>/<mode>.png, "
                      "or ./<mode>.png for the shipped model).", flag_values=f)
  flags.DEFINE_string("label", d("label"), "Class (index or name) for class-conditional "
                      "models (--ycond or --condition=class); default: cycle through the "
                      "classes.", flag_values=f)
  flags.DEFINE_list("images", list(d("images")), "interpolate/manipulate/reconstruct: image "
                    "files to use instead of dataset images (interpolate takes two).",
                    flag_values=f)
  flags.DEFINE_integer("n_steps", d("n_steps"), "interpolate: images per interpolation row.",
                       flag_values=f)
  flags.DEFINE_string("attribute", d("attribute"), "manipulate: attribute name (CelebA-style, "
                      "e.g. Smiling) or, for datasets with labels only, a class name or index.",
                      flag_values=f)
  flags.DEFINE_list("scales", [str(s) for s in d("scales")],
                    "manipulate: multiples of the attribute direction along a row.",
                    flag_values=f)
  flags.DEFINE_integer("n_direction_examples", d("n_direction_examples"), "manipulate: dataset "
                       "images used to compute the attribute direction (cached beside the "
                       "model).", flag_values=f)
  flags.DEFINE_string("data_dir", d("data_dir"), "Override the data_dir saved in the model's "
                      "config.", flag_values=f)
  flags.DEFINE_integer("n_conditions", d("n_conditions"), "conditional (lowres, gray): test "
                       "images to condition on, one row each (or the --images given).",
                       flag_values=f)
  flags.DEFINE_list("attributes", list(d("attributes")), "conditional (attributes): the "
                    "attributes the samples have, e.g. Smiling,Male (the others absent).",
                    flag_values=f)
  flags.DEFINE_integer("zoom", d("zoom"), "Integer upscaling of each image (0: enough to make "
                       "it >= 64 pixels).", flag_values=f)


def parse_temperatures(values: Sequence[str]) -> List[float]:
  """`["0.5", "0.7"]` -> `[0.5, 0.7]`; raises ConfigError for a bad or negative value."""
  if not values:
    raise config_lib.ConfigError("--temperature needs at least one value.")
  return [config_lib.check_temperature(v) for v in values]


def _floats(name: str, values: Sequence[str]) -> List[float]:
  try:
    return [float(v) for v in values]
  except ValueError:
    raise config_lib.ConfigError(f"--{name}: {list(values)} are not all numbers.") from None


def config_from_flags(f: flags.FlagValues) -> SampleConfig:
  """sample.py's `SampleConfig` from parsed flags (validated)."""
  return SampleConfig(
      mode=f.mode, logdir=f.logdir, restore_path=f.restore_path,
      temperatures=tuple(parse_temperatures(f.temperature)), n_samples=f.n_samples,
      seed=f.seed, output=f.output, label=f.label, images=tuple(f.images), n_steps=f.n_steps,
      attribute=f.attribute, scales=tuple(_floats("scales", f.scales)),
      n_direction_examples=f.n_direction_examples, data_dir=f.data_dir, polyak=f.polyak,
      zoom=f.zoom, default_logdir=not f["logdir"].present, n_conditions=f.n_conditions,
      attributes=tuple(f.attributes))
