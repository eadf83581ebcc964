"""Conditional Glow's conditioning network: a condition `c` -> features for every level.

A conditional Glow models `p(x | c)`. The condition is any tensor of event
shape `[K]` (a one-hot class, attributes, an embedding) or `[h, w, K]` (an
image or feature map of any size, e.g. a low-resolution image). The
conditioning network turns it, once per call of the flow, into one feature
tensor per level, which that level's coupling networks, its split prior and
(at the last level) the top prior receive, as SRFlow's conditional couplings
and split priors do (Lugmayr et al., 2020). The density stays exact for each
`c`: the features only shift and scale what the flow computes from `x`.

`ConditioningNetwork` is the default network. Any object with the same three
members can replace it (`glow_tf.Glow(conditioning_network=...)`):

* `feature_shapes`: per level, the event shape of its features, `[h_l, w_l, F]`
  (the level's spatial size after its squeeze) or `[F]`;
* `params()`: the nested structure of its variables;
* `apply(params, conditioning)`: `[B] + conditioning_shape` -> the list of
  per-level features `[B] + feature_shapes[l]`, reading variables only
  through `params`.
"""

from typing import List, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.bijectors import invert as invert_lib

from glow_tf.config import check_conditioning_shape
from glow_tf.tracing import no_autograph

tfb = tfp.bijectors
tfd = tfp.distributions
# (`tfb.Invert(b)` builds a `_Invert` when `b` is not a composite tensor.)
_INVERT = (tfb.Invert, invert_lib._Invert)  # pylint: disable=protected-access

__all__ = ["ConditionalTransformedDistribution", "ConditioningNetwork", "conditioning_kwargs"]


def _interpolation_matrix(n_out, n_in):
  """`[n_out, n_in]` weights of half-pixel-centred linear interpolation (`tf.image.resize`'s bilinear)."""
  m = np.zeros([n_out, n_in])
  for i in range(n_out):
    src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.), n_in - 1.)
    lo = int(np.floor(src))
    hi = min(lo + 1, n_in - 1)
    m[i, lo] += 1. - (src - lo)
    m[i, hi] += src - lo
  return m


def _resize_bilinear(t, size):
  """`t` `[B, h, w, F]` -> `[B, size[0], size[1], F]`, bilinear, in `t`'s dtype.

  (`tf.image.resize` computes in float32 whatever the input; two small
  matrix products keep a float64 model float64 and are differentiable.)
  """
  rows = tf.constant(_interpolation_matrix(size[0], t.shape[1]), t.dtype)
  cols = tf.constant(_interpolation_matrix(size[1], t.shape[2]), t.dtype)
  return tf.einsum("ih,bhwc,jw->bijc", rows, t, cols)


def _init(seed, shape, fan_in, dtype):
  """He-normal initial values, from a NumPy stream seeded by `seed`."""
  values = np.random.RandomState(seed).normal(0., np.sqrt(2. / fan_in), shape)
  return tf.constant(values.astype(dtype.as_numpy_dtype))


@no_autograph
class ConditioningNetwork(tf.Module):
  """The default conditioning network: a small ReLU network, one head per level.

  For an image condition `[h, w, K]`: two 3x3 convolutions of width `F` at
  the condition's own resolution (the trunk), then per level a bilinear
  resize to the level's spatial size and a 3x3 convolution: features
  `[B, h_l, w_l, F]`. For a vector condition `[K]`: two dense layers, then a
  dense layer per level: features `[B, F]` (the couplings and priors
  broadcast them over the pixels). Every layer is `relu(conv(x) + b)`,
  He-initialised; nothing is data-dependent, so the network needs no
  initialisation pass and is the same on every replica.
  """

  def __init__(self, conditioning_shape: Sequence[int], level_sizes: Sequence[Sequence[int]],
               width: int = 16, seed: int = 0, dtype: tf.DType = tf.float32,
               name: str = "conditioning"):
    """Creates the network.

    Args:
      conditioning_shape: `[K]` or `[h, w, K]`, the condition's event shape.
      level_sizes: per level, its spatial size `[h_l, w_l]` (after the
        level's squeeze).
      width: Python `int` `F`, the features' channels. Default value: `16`.
      seed: Python `int`, seeds the initialisation. Default value: `0`.
      dtype: float dtype of the variables and features. Default value: `tf.float32`.
      name: Python `str`. Default value: `"conditioning"`.
    """
    super().__init__(name=name)
    shape = check_conditioning_shape("ConditioningNetwork", conditioning_shape)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
      raise ValueError(f"ConditioningNetwork: width must be a positive int, got {width!r}.")
    self._conditioning_shape = shape
    self._is_image = len(shape) == 3
    self._level_sizes = [[int(h), int(w)] for h, w in level_sizes]
    self._width = width
    self._dtype = tf.as_dtype(dtype)
    k = shape[-1]
    with self.name_scope:
      self.trunk = [self._layer(seed + i, n_in, width, f"trunk{i}")
                    for i, n_in in enumerate((k, width))]
      self.heads = [self._layer(seed + 100 + level, width, width, f"level{level}")
                    for level in range(len(self._level_sizes))]

  def _layer(self, seed, n_in, n_out, name):
    taps = 9 if self._is_image else 1
    shape = [3, 3, n_in, n_out] if self._is_image else [n_in, n_out]
    return {"kernel": tf.Variable(_init(seed, shape, taps * n_in, self._dtype), name=f"{name}_kernel"),
            "bias": tf.Variable(tf.zeros([n_out], self._dtype), name=f"{name}_bias")}

  @property
  def conditioning_shape(self) -> List[int]:
    return list(self._conditioning_shape)

  @property
  def feature_shapes(self) -> List[List[int]]:
    """Per level, the event shape of its features: `[h_l, w_l, F]` or `[F]`."""
    if self._is_image:
      return [size + [self._width] for size in self._level_sizes]
    return [[self._width] for _ in self._level_sizes]

  def params(self) -> dict:
    """`{"trunk": [layer, layer], "heads": [layer per level]}`, each layer `{"kernel", "bias"}`."""
    return {"trunk": [dict(layer) for layer in self.trunk],
            "heads": [dict(layer) for layer in self.heads]}

  def _apply_layer(self, layer, x):
    if self._is_image:
      y = tf.nn.conv2d(x, layer["kernel"], 1, "SAME")
    else:
      y = tf.matmul(x, layer["kernel"])
    return tf.nn.relu(y + layer["bias"])

  def apply(self, params: dict, conditioning: tf.Tensor) -> List[tf.Tensor]:
    """`[B] + conditioning_shape` -> per-level features `[B] + feature_shapes[l]`, with `params`."""
    t = tf.cast(conditioning, self._dtype)
    for layer in params["trunk"]:
      t = self._apply_layer(layer, t)
    features = []
    for size, head in zip(self._level_sizes, params["heads"]):
      r = t
      if self._is_image and list(t.shape[1:3]) != size:
        r = _resize_bilinear(t, size)
      features.append(self._apply_layer(head, r))
    return features

  def __call__(self, conditioning: tf.Tensor) -> List[tf.Tensor]:
    """`apply` with this network's variables."""
    return self.apply(self.params(), conditioning)


class ConditionalTransformedDistribution(tfd.TransformedDistribution):
  """A `TransformedDistribution` of a conditional Glow whose condition sets its batch shape.

  `sample(m, bijector_kwargs={"conditioning": c})` with `c` of batch shape
  `[B]` draws `m` images for each condition: `[m, B, H, W, C]` (TFP's plain
  `TransformedDistribution` would draw `[m]` latents and pair them with the
  conditions). `log_prob(x, bijector_kwargs={"conditioning": c})` pairs `x`
  and `c` by their (broadcast) batch dimensions, as TFP's batch shapes do.
  The bijector must be a conditional `glow_tf.Glow` (or have its
  `conditioning_shape`).
  """

  def _call_sample_n(self, sample_shape, seed, **kwargs):
    conditioning = kwargs.get("bijector_kwargs", {}).get("conditioning")
    if conditioning is not None:
      conditioning = tf.convert_to_tensor(conditioning)
      ndims = len(self.bijector.conditioning_shape)
      batch = tf.shape(conditioning)[:tf.rank(conditioning) - ndims]
      sample_shape = tf.concat([tf.reshape(tf.cast(sample_shape, tf.int32), [-1]), batch], 0)
    return super()._call_sample_n(sample_shape, seed, **kwargs)


def conditioning_kwargs(bijector: tfb.Bijector, conditioning: tf.Tensor) -> dict:
  """The kwargs that hand `conditioning` to every conditional glow_tf bijector in `bijector`.

  TFP routes a composition's kwargs by the name of each part:
  `tfb.Chain([a, b]).forward(x, **{a.name: {...}, b.name: {...}})`, and
  `tfb.Invert(b)` passes its kwargs to `b`. This walks `tfb.Chain` (any
  `tfb.Composition`) and `tfb.Invert` and gives each conditional part
  (`is_conditional`) `{"conditioning": conditioning}`:

  ```python
  flow = tfb.Chain([tfb.Shift(1.), glow])
  y = flow.forward(eps, **glow_tf.conditioning_kwargs(flow, c))
  ```
  """
  if isinstance(bijector, _INVERT):
    return conditioning_kwargs(bijector.bijector, conditioning)
  if isinstance(bijector, tfb.Composition):
    out = {}
    for part in bijector.bijectors:
      kwargs = conditioning_kwargs(part, conditioning)
      if kwargs:
        out[part.name] = kwargs
    return out
  if getattr(bijector, "is_conditional", False):
    return {"conditioning": conditioning}
  return {}
