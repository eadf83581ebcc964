"""GlowModel: the Glow bijector, its TransformedDistribution and the original's image interface."""

import math
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from glow_tf import condition_sources
from glow_tf import conditioning as conditioning_lib
from glow_tf import config as config_lib
from glow_tf import dequantization as dequantization_lib
from glow_tf import glow as glow_lib
from glow_tf import nn
from glow_tf.ops import TensorLike
from glow_tf import tracing

tfd = tfp.distributions

__all__ = ["GlowModel"]

LN2 = math.log(2.)


@tracing.no_autograph
class GlowModel(tf.Module):
  """Glow on uint8 images: likelihood in bits/dim, sampling, encoding, class conditioning.

  Owns `glow` (a `glow_tf.Glow` bijector, latent -> image) and
  `distribution`, the `tfd.TransformedDistribution` of a standard normal
  over the flat latent through `glow`; the continuous density of
  `distribution` is over images in `[-0.5, 0.5)` (the original's
  preprocessing). On top it gives what the original computes:

  * preprocessing: keep `n_bits_x` bits, `x = floor(img / 2^(8 - n_bits_x)) /
    n_bins - 0.5`, plus uniform dequantisation noise in `[0, 1/n_bins)`;
  * `log_prob(images)`: `log p(x) = log N(eps) + log|det d eps/dx| - D log(n_bins)`
    in nats per image, and `bits_per_dim = -log p / (D ln 2)`, exactly the
    original's objective (`D = H * W * C`);
  * `sample(n, temperature)`: noise of standard deviation `temperature` at
    every level (the original's `eps_std`), postprocessed to uint8;
  * `encode`/`decode`: per-level latents, exact inverses up to the
    quantisation;
  * with `ycond`, the top prior depends on the label and a classifier head
    on the mean of the top latent adds `weight_y * bits_y` to the loss;
  * with a `condition` (conditional Glow), everything is `p(x | c)`: each
    method takes `conditioning=` (`[B] + conditioning_shape`); for a
    condition built from the images or labels (`lowres`, `gray`, `class`)
    it is built from the very images scored when not given (`condition`);
  * with `dequantization="variational"`, a learned noise distribution
    `q(u | x)` (`dequantizer`, `glow_tf.dequantization`) replaces the uniform
    noise, and `log_prob` is the variational bound
    `log p(x + u) - D log(n_bins) - log q(u | x)`, `u ~ q` (`losses` trains
    it); `dequantization="uniform"` in `log_prob` evaluates `p` alone with
    uniform noise, as a uniform model.

  Build it from a `ModelConfig` or keyword arguments of `ModelConfig`:
  `GlowModel(image_shape=(32, 32, 1), n_levels=2, depth=8, width=128)`.
  Call `initialize(images)` once on a data batch before training.
  """

  def __init__(self, config: Optional[config_lib.ModelConfig] = None, name: str = "glow_model", **kwargs):
    super().__init__(name=name)
    if config is None:
      config = config_lib.ModelConfig(**kwargs)
    elif kwargs:
      raise ValueError("GlowModel: pass either a ModelConfig or keyword arguments, not both.")
    if not config.is_resolved:
      raise config_lib.ConfigError(
          "GlowModel: the config's image_shape is unset; complete it from the data with "
          "glow_tf.config.resolve_for_data (or pass image_shape).")
    self.config = config
    with self.name_scope:
      self.glow = glow_lib.Glow(
          config.image_shape, config.n_levels, config.depth, config.width,
          config.flow_permutation, config.flow_coupling, config.learntop,
          config.n_classes if config.ycond else None, config.lu_decomposed,
          config.recompute_gradients, seed=config.seed, precision=config.precision,
          prior_log_scale_bound=config.prior_log_scale_bound,
          conditioning_shape=config.conditioning_shape,
          conditioning_width=config.condition_width)
      if config.dequantization == "variational":
        self.dequantizer = dequantization_lib.VariationalDequantization(
            config.image_shape, config.dequant_depth, config.dequant_width, seed=config.seed,
            sampling=config.dequant_sampling)
      if config.ycond:
        self.classifier = nn.LinearZeros(
            config.latent_shapes[-1][-1], config.n_classes, name="classifier")
    distribution = (conditioning_lib.ConditionalTransformedDistribution
                    if config.is_conditional else tfd.TransformedDistribution)
    self.distribution = distribution(self._base(tf.float32), self.glow)

  def _base(self, dtype: tf.DType) -> tfd.Distribution:
    """The standard normal over the flat latent `[B, latent_size]`, in `dtype`."""
    return tfd.Sample(tfd.Normal(tf.constant(0., dtype), tf.constant(1., dtype)),
                      self.glow.latent_size)

  # ---- Data representation -------------------------------------------------------

  @property
  def image_shape(self) -> List[int]:
    return list(self.config.image_shape)

  @property
  def num_dims(self) -> int:
    """`D = H * W * C`."""
    return self.glow.latent_size

  @property
  def n_bins(self) -> int:
    return self.config.n_bins

  def _check_images(self, images):
    images = tf.convert_to_tensor(images)
    if images.shape.rank is not None and images.shape[1:].as_list() != self.image_shape:
      raise ValueError(
          f"images have shape {images.shape.as_list()}, the model expects "
          f"[batch] + {self.image_shape}.")
    return images

  def preprocess(self, images: TensorLike, noise: Optional[TensorLike] = None,
                 seed: Optional[TensorLike] = None) -> tf.Tensor:
    """uint8 images -> dequantised floats in `[-0.5, 0.5)`.

    Args:
      images: uint8 (or integer-valued) `[B, H, W, C]` in 0..255.
      noise: optional float `[B, H, W, C]` in `[0, 1)`: the dequantisation
        offsets, in units of one bin. `0.5` (a scalar) puts every value at
        the middle of its bin (deterministic). Default: uniform random.
      seed: optional stateless seed (shape `[2]` int) for the random noise.

    Returns:
      float32 `[B, H, W, C]`: `floor(images / 2^(8 - n_bits)) / n_bins - 0.5
      + noise / n_bins`.
    """
    x = self._bins(images)
    if noise is None:
      noise = _uniform_noise(tf.shape(x), seed)
    return (x + tf.cast(noise, tf.float32)) / self.n_bins - .5

  def _bins(self, images):
    """uint8 images -> their bin indices `floor(img / 2^(8 - n_bits))`, float32."""
    images = self._check_images(images)
    return tf.floor(tf.cast(images, tf.float32) / 2 ** (8 - self.config.n_bits_x))

  def _centres(self, bins):
    """Bin indices -> the bins' centres in the model's space, `(bins + 0.5) / n_bins - 0.5`."""
    return (bins + .5) / self.n_bins - .5

  def _dequantize(self, images, noise, seed, dequantization):
    """The dequantised images `[B, H, W, C]` and `log q(u | x)` `[B]` (0 for uniform noise).

    Variational dequantisation (`dequantization` "variational") draws `u`
    from `q` unless `noise` is a scalar (a fixed offset, e.g. 0.5 mid-bin:
    `p` alone at that point); its Gaussian noise comes from the uniform
    `noise` (`glow_tf.dequantization.gaussian_noise`) or, without, from
    `seed` or at random.
    """
    kind = dequantization or self.config.dequantization
    if kind not in config_lib.DEQUANTIZATIONS:
      raise ValueError(f"dequantization must be one of {', '.join(config_lib.DEQUANTIZATIONS)}, "
                       f"got {kind!r}.")
    if kind == "variational" and self.config.dequantization != "variational":
      raise ValueError("dequantization='variational' needs a model trained with it "
                       "(ModelConfig.dequantization='variational').")
    fixed = noise is not None and tf.convert_to_tensor(noise).shape.rank == 0
    if kind == "uniform" or fixed:
      return self.preprocess(images, noise, seed), 0.
    bins = self._bins(images)
    shape = tf.shape(bins)
    if noise is not None:
      eps = dequantization_lib.gaussian_noise(noise)
    else:
      eps = tf.random.normal(shape) if seed is None else tf.random.stateless_normal(shape, seed)
    u, log_q = self.dequantizer.sample(self._centres(bins), eps)
    return (bins + u) / self.n_bins - .5, log_q

  def postprocess(self, x: tf.Tensor) -> tf.Tensor:
    """Floats in `[-0.5, 0.5)` -> uint8 images, as the original (`n_bits_x` levels spread over 0..255)."""
    bins = tf.floor((x + .5) * self.n_bins)
    return tf.cast(tf.clip_by_value(bins * (256. / self.n_bins), 0., 255.), tf.uint8)

  def _labels(self, labels, batch_size):
    """int32 `[batch_size]` labels for a class-conditional model (a scalar is broadcast); else `None`."""
    if not self.config.ycond:
      return None
    if labels is None:
      raise ValueError(
          "this model is class-conditional (ycond): pass labels (int [batch]).")
    labels = tf.cast(tf.convert_to_tensor(labels), tf.int32)
    return tf.broadcast_to(labels, [batch_size]) if labels.shape.rank == 0 else labels

  def condition(self, images: TensorLike, labels: Optional[TensorLike] = None,
                attributes: Optional[TensorLike] = None) -> tf.Tensor:
    """The condition of each image, float32 `[B] + conditioning_shape` (`glow_tf.condition_sources`).

    Args:
      images: uint8 `[B, H, W, C]`.
      labels: int `[B]`, for `condition="class"`.
      attributes: `[B, 40]` (+1/-1 as the datasets' `attr`, or 0/1), for
        `condition="attributes"`.
    """
    c = self.config
    if not c.is_conditional or c.condition == "tensor":
      raise ValueError(f"this model's condition is {c.condition!r}: there is nothing to build "
                       "from images" + (" (pass the conditioning tensor itself)."
                                        if c.is_conditional else "."))
    return condition_sources.build(c.condition, self._centres(self._bins(images)),
                                   c.condition_factor, c.n_classes, labels, attributes)

  def batch_conditions(self, batch: Dict[str, tf.Tensor]) -> Dict[str, Optional[tf.Tensor]]:
    """`{"labels", "conditioning"}` for `losses`, `log_prob` or `initialize` from a data batch.

    `batch`: `{"image"[, "label"][, "attr"]}` as the datasets give it, or
    with its own `"conditioning"` (a `condition="tensor"` model's).
    `labels` are the batch's labels for a `ycond` model (else `None`);
    `conditioning` is each image's condition for a conditional model (else `None`).
    """
    labels = batch.get("label") if self.config.ycond else None
    conditioning = batch.get("conditioning")
    if self.config.is_conditional and conditioning is None:
      conditioning = self.condition(batch["image"], batch.get("label"), batch.get("attr"))
    return {"labels": labels, "conditioning": conditioning}

  def _conditioning(self, images, labels, conditioning):
    """The conditioning tensor of a conditional model (`conditioning`, or built from the images)."""
    if not self.config.is_conditional:
      if conditioning is not None:
        raise ValueError("got `conditioning`, but this model is unconditional (condition='none').")
      return None
    if conditioning is not None:
      return tf.convert_to_tensor(conditioning, tf.float32)
    if self.config.condition in ("attributes", "tensor"):
      raise ValueError(f"this model is conditioned on {self.config.condition!r}: pass "
                       f"conditioning= ([batch] + {list(self.config.conditioning_shape)}).")
    return self.condition(images, labels)

  # ---- Likelihood -------------------------------------------------------------------

  def _log_prob_and_top(self, images, labels, noise, seed, dtype=tf.float32, conditioning=None,
                        dequantization=None):
    """The encoding and the density, computed once for `log_prob` and `losses`.

    `log p(x) = base.log_prob(eps) + ildj - D log(n_bins)`: the density of
    `distribution` (its base at the flat latent `eps` plus the encoding's
    log-det, TFP's change of variables) less the quantisation. With `dtype`
    float64 the base's log-density and the sum are float64's (the flow
    itself runs as always).

    Returns:
      log_p: `[B]`, nats per image; top: `[B, h, w, c]`, the top latent
      before its prior's standardisation; labels: int `[B]` or `None`.
    """
    conditioning = self._conditioning(images, labels, conditioning)
    x, log_q = self._dequantize(images, noise, seed, dequantization)
    labels = self._labels(labels, tf.shape(x)[0])
    eps, top, ildj = self.glow.encode(x, labels, conditioning)
    base, flat = self.distribution.distribution, self.glow.join_latents(eps)
    if dtype != flat.dtype:
      base, flat, ildj = self._base(dtype), tf.cast(flat, dtype), tf.cast(ildj, dtype)
      log_q = tf.cast(log_q, dtype)
    log_p = base.log_prob(flat) + ildj - self.num_dims * math.log(self.n_bins) - log_q
    return log_p, top, labels

  def log_prob(self, images: TensorLike, labels: Optional[TensorLike] = None, noise: Optional[TensorLike] = None,
               seed: Optional[TensorLike] = None, dtype: tf.DType = tf.float32,
               conditioning: Optional[TensorLike] = None,
               dequantization: Optional[str] = None) -> tf.Tensor:
    """Discrete log-likelihood of uint8 images, nats per image `[B]`.

    The continuous density of `distribution` at the dequantised images
    (one pass of the flow) less `D log(n_bins)`.

    Args:
      images: uint8 `[B, H, W, C]`.
      labels: int `[B]` for a class-conditional model, else `None`.
      noise, seed: the dequantisation (see `preprocess`).
      dtype: of the result. `tf.float64` sums the Gaussian log-density of
        the latents in float64: finite where float32's overflows to `-inf`,
        for an image the model puts far outside its data (a latent above
        ~1.8e19, e.g. where a split prior predicts a log-scale of -53: its
        square exceeds float32's 3.4e38). The flow runs as always.
      conditioning: a conditional model's condition, `[B] + conditioning_shape`
        (`None`: built from `images`/`labels` where the source allows).
      dequantization: `None` (the model's), or `"uniform"`: `p` alone with
        uniform noise, for a model trained with variational dequantisation
        (a figure comparable with uniform models').
    """
    return self._log_prob_and_top(images, labels, noise, seed, tf.as_dtype(dtype),
                                  conditioning, dequantization)[0]

  def bits_per_dim(self, images: TensorLike, labels: Optional[TensorLike] = None, noise: Optional[TensorLike] = None,
                   seed: Optional[TensorLike] = None, conditioning: Optional[TensorLike] = None,
                   dequantization: Optional[str] = None) -> tf.Tensor:
    """`-log p(images) / (D ln 2)`, `[B]` (the arguments as `log_prob`'s)."""
    return -self.log_prob(images, labels, noise, seed, conditioning=conditioning,
                          dequantization=dequantization) / (self.num_dims * LN2)

  def losses(self, images: TensorLike, labels: Optional[TensorLike] = None, noise: Optional[TensorLike] = None,
             seed: Optional[TensorLike] = None, conditioning: Optional[TensorLike] = None
             ) -> Dict[str, tf.Tensor]:
    """The original's training objective and metrics, per image.

    Returns:
      A dict of `[B]` tensors: `loss = bits_x + weight_y * bits_y`, `bits_x`
      (bits/dim of the images, as `bits_per_dim`), and with `ycond` also
      `bits_y` (classifier cross-entropy in bits) and `classification_error`
      (0 or 1).
    """
    log_p, top, labels = self._log_prob_and_top(images, labels, noise, seed,
                                                conditioning=conditioning)
    bits_x = -log_p / (self.num_dims * LN2)
    out = {"bits_x": bits_x, "loss": bits_x}
    if self.config.ycond:
      logits = self.classifier(tf.reduce_mean(top, [1, 2]))
      bits_y = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits) / LN2
      out["bits_y"] = bits_y
      out["classification_error"] = 1. - tf.cast(
          tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
      out["loss"] = bits_x + self.config.weight_y * bits_y
    return out

  def predict_labels(self, images: TensorLike) -> tf.Tensor:
    """Class probabilities `[B, n_classes]` from the classifier head (`ycond` only)."""
    if not self.config.ycond:
      raise ValueError("predict_labels needs a class-conditional model (ycond=True).")
    x = self.preprocess(images, noise=0.5)
    # The top latent does not depend on the label; any label encodes it.
    _, top, _ = self.glow.encode(x, tf.zeros(tf.shape(x)[:1], tf.int32),
                                 self._conditioning(images, None, None))
    return tf.nn.softmax(self.classifier(tf.reduce_mean(top, [1, 2])))

  # ---- Initialisation -------------------------------------------------------------

  def initialize(self, images: TensorLike, labels: Optional[TensorLike] = None,
                 seed: Optional[TensorLike] = None, conditioning: Optional[TensorLike] = None
                 ) -> tf.Tensor:
    """The data-dependent actnorm initialisation (the original's `n_batch_init` pass).

    Call once, before training, on a batch of training images. In
    cross-replica context give it the whole batch; in replica context
    (`strategy.run`) each replica's shard, and statistics are all-reduced
    over the global batch. Either way all replicas end identical.

    Args:
      images: uint8 `[B, H, W, C]`.
      labels: int `[B]` for a class-conditional model.
      seed: optional stateless seed for the dequantisation noise.
      conditioning: a conditional model's condition (see `log_prob`).

    Returns:
      The flat latents `[B, D]` of the batch after initialisation.
    """
    conditioning = self._conditioning(images, labels, conditioning)
    bins = self._bins(images)
    noise = _uniform_noise(tf.shape(bins), seed)
    x = self.preprocess(images, noise, seed)
    kwargs = {"labels": self._labels(labels, tf.shape(x)[0])} if self.config.ycond else {}
    if conditioning is not None:
      kwargs["conditioning"] = conditioning
    if self.config.dequantization == "variational":  # q first, on the same uniform noise
      self.dequantizer.initialize(self._centres(bins), noise)
    return self.glow.initialize(x, **kwargs)

  # ---- Sampling, encoding, decoding -------------------------------------------------

  def sample_latents(self, n: int, temperature: Union[float, tf.Tensor] = 1.0, seed: Optional[TensorLike] = None
                     ) -> List[tf.Tensor]:
    """Per-level latents `eps ~ N(0, temperature^2)`, shapes as `glow.latent_shapes`."""
    if isinstance(temperature, (int, float)):  # (a tensor is the caller's to check)
      temperature = config_lib.check_temperature(temperature)
    shape = [n, self.num_dims]
    eps = (tf.random.normal(shape) if seed is None
           else tf.random.stateless_normal(shape, seed))
    return self.glow.split_latent(eps * temperature)

  def sample(self, n: int, temperature: Union[float, tf.Tensor] = 1.0, labels: Optional[TensorLike] = None,
             seed: Optional[TensorLike] = None, conditioning: Optional[TensorLike] = None
             ) -> tf.Tensor:
    """Draws `n` uint8 images `[n, H, W, C]` at the given temperature.

    A conditional model draws `n` images for each of the `B` conditions of
    `conditioning` (`[B] + conditioning_shape`, required): `[n, B, H, W, C]`;
    a `ycond` model's `labels` are then a scalar, `[B]` or `[n, B]`.

    Args:
      n: Python `int`, number of images.
      temperature: standard deviation of the latent noise at every level
        (the original's `eps_std`); 0 gives the decoded prior means.
      labels: int `[n]` (or a scalar) for a class-conditional model; when
        `None`, labels are drawn uniformly.
      seed: optional stateless seed `[2]`; the same seed gives the same images.
      conditioning: a conditional model's conditions `[B] + conditioning_shape`.
    """
    if self.config.is_conditional:
      if conditioning is None:
        raise ValueError("this model is conditional: pass conditioning= ([B] + "
                         f"{list(self.config.conditioning_shape)}), e.g. model.condition(images).")
      c = tf.convert_to_tensor(conditioning, tf.float32)
      b = tf.shape(c)[0]
      tiled = tf.tile(c, tf.concat([[n], tf.ones([tf.rank(c) - 1], tf.int32)], 0))
      if labels is not None:  # a scalar, [B] (one per condition) or [n, B]
        labels = tf.reshape(tf.broadcast_to(tf.cast(labels, tf.int32), [n, b]), [-1])
      if self.config.ycond and labels is None:
        labels = (tf.random.uniform([n * b], 0, self.config.n_classes, tf.int32) if seed is None
                  else tf.random.stateless_uniform([n * b], seed, 0, self.config.n_classes,
                                                   tf.int32))
      images = self.decode(self.sample_latents(n * b, temperature, seed), labels, tiled)
      return tf.reshape(images, tf.concat([[n, b], tf.shape(images)[1:]], 0))
    if self.config.ycond and labels is None:
      labels = (tf.random.uniform([n], 0, self.config.n_classes, tf.int32) if seed is None
                else tf.random.stateless_uniform([n], seed, 0, self.config.n_classes, tf.int32))
    return self.decode(self.sample_latents(n, temperature, seed), labels)

  def encode(self, images: TensorLike, labels: Optional[TensorLike] = None,
             conditioning: Optional[TensorLike] = None) -> List[tf.Tensor]:
    """uint8 images -> per-level latents (the original's `eps` list).

    Deterministic: each value sits at the middle of its quantisation bin.

    Returns:
      A list of float32 `[B, h, w, c]`, one per split, then the top latent.
    """
    conditioning = self._conditioning(images, labels, conditioning)
    x = self.preprocess(images, noise=0.5)
    return self.glow.encode(x, self._labels(labels, tf.shape(x)[0]), conditioning)[0]

  def decode(self, latents: Sequence[TensorLike], labels: Optional[TensorLike] = None,
             conditioning: Optional[TensorLike] = None) -> tf.Tensor:
    """Per-level latents (as from `encode`) -> uint8 images `[B, H, W, C]`.

    A conditional model needs `conditioning` (`[B] + conditioning_shape`).
    """
    labels = self._labels(labels, tf.shape(latents[0])[0])
    if self.config.is_conditional and conditioning is None:
      raise ValueError("this model is conditional: decode needs conditioning= "
                       f"([B] + {list(self.config.conditioning_shape)}).")
    if not self.config.is_conditional and conditioning is not None:
      raise ValueError("got `conditioning`, but this model is unconditional (condition='none').")
    return self.postprocess(self.glow.decode(latents, labels, conditioning))

  def num_parameters(self) -> int:
    """The number of trainable scalars."""
    return int(sum(np.prod(v.shape) for v in self.trainable_variables))


def _uniform_noise(shape: tf.Tensor, seed: Optional[TensorLike]) -> tf.Tensor:
  """Uniform `[0, 1)` noise of `shape`: from the stateless `seed`, or at random without one."""
  return tf.random.uniform(shape) if seed is None else tf.random.stateless_uniform(shape, seed)
