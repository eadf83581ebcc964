"""Glow's bijectors, each a `tfp.bijectors.Bijector` on `[..., H, W, C]` images.

Forward is the generative direction (latent -> image), inverse the encoding
direction (image -> latent), as in `tfp.bijectors.Glow`.
"""

from glow_tf.bijectors.actnorm import ActNorm
from glow_tf.bijectors.base import GlowBijector
from glow_tf.bijectors.coupling import AffineCoupling
from glow_tf.bijectors.flow_step import FlowStep
from glow_tf.bijectors.invertible_conv import InvertibleConv1x1
from glow_tf.bijectors.permute import Reverse, Shuffle
from glow_tf.bijectors.squeeze import Squeeze

__all__ = ["ActNorm", "AffineCoupling", "FlowStep", "GlowBijector",
           "InvertibleConv1x1", "Reverse", "Shuffle", "Squeeze"]
