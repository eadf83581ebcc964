"""sample.py's flags and their validation."""

from absl import flags

__all__ = ["define_flags", "MODES", "parse_temperatures"]

MODES = ("sample", "reconstruct", "interpolate", "manipulate")


def define_flags(flag_values=flags.FLAGS):
  f = flag_values
  flags.DEFINE_enum("mode", "sample", list(MODES),
                    "sample: a grid, one row per temperature; reconstruct: dataset images and "
                    "decode(encode(.)) side by side; interpolate: latent interpolation between "
                    "two images; manipulate: move images along an attribute direction.",
                    flag_values=f)
  flags.DEFINE_string("logdir", "./logs", "train.py's logdir (or an exported model directory) "
                      "to load the latest checkpoint and config.json from. With no model in "
                      "the default ./logs, the model shipped in pretrained/fashion_mnist is used.",
                      flag_values=f)
  flags.DEFINE_string("restore_path", "", "A checkpoint prefix or directory (overrides --logdir).",
                      flag_values=f)
  flags.DEFINE_list("temperature", ["0.7"], "One temperature or a comma-separated list "
                    "(one grid row each), >= 0.", flag_values=f)
  flags.DEFINE_integer("n_samples", 8, "Images per row.", flag_values=f)
  flags.DEFINE_integer("seed", 0, "Random seed: the same seed gives the same images.",
                       flag_values=f)
  flags.DEFINE_string("output", "", "PNG path to write (default: <logdir>/<mode>.png, or "
                      "./<mode>.png for the shipped model).", flag_values=f)
  flags.DEFINE_string("label", None, "Class (index or name) for class-conditional models; "
                      "default: cycle through the classes.", flag_values=f)
  flags.DEFINE_list("images", [], "interpolate/manipulate/reconstruct: image files to use "
                    "instead of dataset images (interpolate takes two).", flag_values=f)
  flags.DEFINE_integer("n_steps", 9, "interpolate: images per interpolation row.",
                       flag_values=f)
  flags.DEFINE_string("attribute", None, "manipulate: attribute name (CelebA-style, e.g. "
                      "Smiling) or, for datasets with labels only, a class name or index.",
                      flag_values=f)
  flags.DEFINE_list("scales", ["-1.5", "-1", "-0.5", "0", "0.5", "1", "1.5"],
                    "manipulate: multiples of the attribute direction along a row.",
                    flag_values=f)
  flags.DEFINE_integer("n_direction_examples", 2000, "manipulate: dataset images used to "
                       "compute the attribute direction (cached beside the model).",
                       flag_values=f)
  flags.DEFINE_string("data_dir", None, "Override the data_dir saved in the model's config.",
                      flag_values=f)
  flags.DEFINE_boolean("polyak", True, "Use the Polyak-averaged weights.", flag_values=f)
  flags.DEFINE_integer("zoom", 0, "Integer upscaling of each image (0: enough to make it "
                       ">= 64 pixels).", flag_values=f)


def parse_temperatures(values):
  """`["0.5", "0.7"]` -> `[0.5, 0.7]`; raises ValueError for a bad or negative value."""
  out = []
  for v in values:
    try:
      t = float(v)
    except ValueError:
      raise ValueError(f"--temperature: {v!r} is not a number.") from None
    if not t >= 0:
      raise ValueError(f"--temperature must be >= 0, got {v}.")
    out.append(t)
  if not out:
    raise ValueError("--temperature needs at least one value.")
  return out
