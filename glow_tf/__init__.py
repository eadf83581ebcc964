"""glow-tf: Glow (Kingma & Dhariwal, 2018) as TensorFlow Probability bijectors.

* `glow_tf.bijectors`: the flow-step bijectors (ActNorm, InvertibleConv1x1,
  AffineCoupling, Reverse, Shuffle, Squeeze, FlowStep).
* `glow_tf.Glow`: the multi-scale Glow as one bijector, flat latent -> image.
* `glow_tf.GlowModel`: Glow on uint8 images (bits/dim, sampling, encode/decode).
* `glow_tf.ModelConfig`: the architecture, validated.
* `glow_tf.conditioning`: conditional Glow's conditioning network, its
  distribution and `glow_tf.conditioning_kwargs` (a condition for every
  conditional bijector of a TFP composition).

The names are imported on first use, so that `glow_tf.config` (which the
command-line flags read) loads without TensorFlow.
"""

import importlib

__all__ = ["bijectors", "conditioning", "conditioning_kwargs", "Glow", "GlowModel", "ModelConfig"]

_WHERE = {"bijectors": ("glow_tf.bijectors", None), "Glow": ("glow_tf.glow", "Glow"),
          "conditioning": ("glow_tf.conditioning", None),
          "conditioning_kwargs": ("glow_tf.conditioning", "conditioning_kwargs"),
          "GlowModel": ("glow_tf.model", "GlowModel"), "ModelConfig": ("glow_tf.config", "ModelConfig")}


def __getattr__(name):
  if name not in _WHERE:
    raise AttributeError(f"module 'glow_tf' has no attribute {name!r}")
  module_name, attr = _WHERE[name]
  module = importlib.import_module(module_name)
  value = module if attr is None else getattr(module, attr)
  globals()[name] = value
  return value


def __dir__():
  return sorted(list(globals()) + __all__)
