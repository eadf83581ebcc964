"""Variational dequantisation (Ho et al., 2019, Flow++): a learned noise distribution q(u | x).

A flow over continuous values is trained on discrete images by adding noise
`u` in `[0, 1)^D` to each image's bins. Uniform noise (the original's, and
`dequantization="uniform"`) gives `log P(x) >= E_u[log p(x + u)]`, loose
where `p` is not flat within a bin. Variational dequantisation learns
`q(u | x)` and maximises the tighter bound

```none
log P(x) >= E_{u ~ q(u | x)}[log p(x + u) - log q(u | x)]
```

(in the model's units: `p` over `x + u` in bins of width `1 / n_bins`, so
`log P(x) >= E_q[log p((x_int + u) / n_bins - 0.5) - D log n_bins - log q(u | x)]`).
With `K` draws, `log mean_k p(x + u_k) / q(u_k | x)` is a tighter bound
still, which tends to `log P(x)` as `K` grows (the importance-weighted
estimate `score.py --n_dequant_samples=K` computes).

`q(u | x)` here is a conditional Glow (`glow_tf.Glow` with an image
condition: the image's bin centres) from standard-normal noise `eps` to
logits `v`, squashed into `(0, 1)` by a sigmoid:

```none
v = flow(eps; x),  u = sigmoid(v),
log q(u | x) = log N(eps) - log|det dv/deps| - sum(log sigmoid(v) + log sigmoid(-v)).
```

`flow` is the Glow's encoding direction (`sampling="encode"`, the default):
its couplings multiply by scales in `(0, 1)`, so they cannot blow rare noise up.
The first version used the generating direction (`sampling="generate"`,
kept for the runs trained with it), which divides by those scales and
can overflow float32 on rare draws of a trained `q` (docs/scoring.md).
"""

from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from glow_tf import config as config_lib
from glow_tf import glow as glow_lib
from glow_tf.bijectors import squeeze as squeeze_lib
from glow_tf.tracing import no_autograph

__all__ = ["VariationalDequantization", "gaussian_noise"]

_HALF_LOG_2PI = 0.5 * np.log(2. * np.pi)


def gaussian_noise(uniform: tf.Tensor) -> tf.Tensor:
  """Standard-normal noise from uniform `[0, 1)` noise, one value for each (inverse CDF).

  The training pipeline and `score.py` draw uniform noise per image from
  stateless seeds; this turns the same draws into `q`'s Gaussian `eps`, so
  that a variational run is as reproducible (and resumable) as a uniform one.
  Values are kept within `1e-7` of the ends so that `0` maps to a finite value.
  """
  return tf.math.ndtri(tf.cast(uniform, tf.float32) * (1. - 2e-7) + 1e-7)


@no_autograph
class VariationalDequantization(tf.Module):
  """`q(u | x)`: dequantisation noise `u` in `(0, 1)^D` given the image `x` (module docstring).

  Args:
    image_shape: `[H, W, C]` of the images (and of `u`).
    depth: flow steps of `q`'s conditional Glow (one level).
    width: its coupling networks' width.
    seed: seeds its initialisation.
    condition_width: channels of its conditioning network's features.
    dtype: float dtype of its variables and arithmetic.
    sampling: `"encode"` or `"generate"`, the direction of the flow that
      maps the noise to the logits (module docstring).
  """

  def __init__(self, image_shape: Sequence[int], depth: int = 4, width: int = 32, seed: int = 0,
               condition_width: int = 16, dtype: tf.DType = tf.float32,
               sampling: str = "encode", name: str = "dequantization"):
    super().__init__(name=name)
    if sampling not in config_lib.DEQUANT_SAMPLINGS:
      raise ValueError(f"sampling must be one of {config_lib.DEQUANT_SAMPLINGS}, got {sampling!r}.")
    self.sampling = sampling
    self._image_shape = [int(d) for d in image_shape]
    with self.name_scope:
      self.flow = glow_lib.Glow(
          self._image_shape, n_levels=1, depth=depth, width=width, flow_permutation="invconv",
          flow_coupling="affine", lu_decomposed=True, seed=seed + 5000,
          conditioning_shape=self._image_shape, conditioning_width=condition_width,
          dtype=dtype, name="flow")

  def sample(self, centres: tf.Tensor, eps: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """`u ~ q(u | x)` from standard-normal `eps`, with `log q(u | x)`.

    Args:
      centres: float `[B, H, W, C]`: the images' bin centres in the model's
        space (`[-0.5, 0.5)`), the condition.
      eps: float `[B, H, W, C]`, standard normal.

    Returns:
      u: `[B, H, W, C]` in `(0, 1)`, in units of one bin; log_q: `[B]`, nats.
    """
    size = int(np.prod(self._image_shape))
    flat = tf.reshape(eps, [-1, size])
    if self.sampling == "encode":
      v, log_det = self.flow.inverse_and_log_det(
          tf.reshape(eps, [-1] + self._image_shape), conditioning=centres)
      # The encoding is the flattened squeezed latent `[H/2, W/2, 4C]` (one level):
      # unsqueezed, each logit sits on its own pixel, where its condition was.
      v = squeeze_lib.unsqueeze(self.flow.split_latent(v)[0])
    else:
      v, log_det = self.flow.forward_and_log_det(flat, conditioning=centres)
    log_base = -0.5 * tf.reduce_sum(tf.square(flat), -1) - _HALF_LOG_2PI * float(size)
    log_sigmoid_jacobian = tf.reduce_sum(tf.math.log_sigmoid(v) + tf.math.log_sigmoid(-v),
                                         [1, 2, 3])
    return tf.sigmoid(v), log_base - log_det - log_sigmoid_jacobian

  def initialize(self, centres: tf.Tensor, uniform: tf.Tensor) -> None:
    """Data-dependent init of `q`'s actnorms from noise `uniform` `[B, H, W, C]`, given the centres.

    Sampling by encoding, the flow's image side is the noise: it is
    initialised on the Gaussian noise of `uniform`, so that the logits start
    standardised. Sampling by generating, its image side is the logit `v`:
    it is initialised on the logits of `uniform`, so that `q` starts near
    uniform noise.
    """
    if self.sampling == "encode":
      self.flow.initialize(tf.cast(gaussian_noise(uniform), self.flow.dtype), conditioning=centres)
      return
    u = tf.clip_by_value(tf.cast(uniform, self.flow.dtype), 1e-6, 1. - 1e-6)
    self.flow.initialize(tf.math.log(u) - tf.math.log1p(-u), conditioning=centres)
