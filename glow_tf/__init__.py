"""glow-tf: Glow (Kingma & Dhariwal, 2018) as TensorFlow Probability bijectors.

* `glow_tf.bijectors`: the flow-step bijectors (ActNorm, InvertibleConv1x1,
  AffineCoupling, Reverse, Shuffle, Squeeze, FlowStep).
* `glow_tf.Glow`: the multi-scale Glow as one bijector, flat latent -> image.
* `glow_tf.GlowModel`: Glow on uint8 images (bits/dim, sampling, encode/decode).
* `glow_tf.ModelConfig`: the architecture, validated.
"""

from glow_tf import bijectors
from glow_tf.config import ModelConfig
from glow_tf.glow import Glow
from glow_tf.model import GlowModel

__all__ = ["bijectors", "Glow", "GlowModel", "ModelConfig"]
