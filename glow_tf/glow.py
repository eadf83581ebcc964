"""The multi-scale Glow bijector: flat standard-normal latent <-> image."""

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from glow_tf import conditioning as conditioning_lib
from glow_tf import nn
from glow_tf.config import (ModelConfig, check_log_scale_bound, check_n_classes,
                            check_positive_int, coupling_name, default_of, level_shapes,
                            permutation_name)
from glow_tf import tracing
from glow_tf.bijectors import base
from glow_tf.bijectors import flow_step
from glow_tf.bijectors import squeeze as squeeze_lib
from glow_tf.ops import TensorLike

__all__ = ["Glow", "SplitPrior", "TopPrior", "bounded_log_scale"]

_DEFAULT = {f: default_of(ModelConfig, f) for f in (
    "n_levels", "depth", "width", "flow_permutation", "flow_coupling", "learntop", "lu_decomposed",
    "recompute_gradients", "seed", "precision", "prior_log_scale_bound", "condition_width")}


def bounded_log_scale(log_scale: tf.Tensor, bound: float) -> tf.Tensor:
  """`bound * tanh(log_scale / bound)`, a soft clamp to `(-bound, bound)`; unchanged when `bound` is 0."""
  if not bound:
    return log_scale
  return bound * tf.tanh(log_scale / bound)


def _encode_steps_recomputing(steps, params, x, call, features=None):
  """Runs `steps` in the encoding direction with memory-free backprop.

  Args:
    steps: the `FlowStep`s of one level, in encoding order.
    params: their variables' structures, one per step (as `FlowStep.params()`).
    x: `[B, H, W, C]`, the level's input.
    call: `call(step, direction, step_params, z, features) -> (z, ldj)` with
      direction `"inverse"` or `"forward"`: how a step is evaluated
      (`Glow._call_step`).
    features: `None`, or the level's conditioning features (`[B, ...]`),
      which every step receives; their gradient is returned too.

  Returns `(z, ildj)` like chaining the steps' `inverse_with`, but the
  gradient keeps no activation of the steps: walking back from the output,
  each step's input is reconstructed by its forward (generative) map and the
  step is re-run under a tape to get the gradients of its input and its
  variables (as in reversible networks, Gomez et al., 2017).
  """
  step_vars = [[v for v in tf.nest.flatten(p) if v.trainable] for p in params]

  @tf.custom_gradient
  def encode(x, *maybe_features):
    c = maybe_features[0] if maybe_features else None
    z, ildj = x, tf.zeros(tf.shape(x)[:1], x.dtype)
    for s, p in zip(steps, params):
      z, ldj = call(s, "inverse", p, z, c)
      ildj += ldj

    def grad(dz, dildj, variables=None):
      dz = tf.zeros_like(z) if dz is None else dz
      dildj = tf.zeros_like(ildj) if dildj is None else dildj
      var_grads = {}
      z_out = z
      done = [dz]
      dc = None if c is None else tf.zeros_like(c)
      watched = [] if c is None else [c]
      for s, p, s_vars in zip(reversed(steps), reversed(params), reversed(step_vars)):
        # Order the work: reconstruct this step only after every gradient of
        # the later step is done, so that one step's activations live at a time.
        with tf.control_dependencies(done):
          x_in = tf.stop_gradient(call(s, "forward", p, tf.identity(z_out), c)[0])
        with tf.GradientTape() as tape:
          tape.watch([x_in] + watched)
          z_re, ldj = call(s, "inverse", p, x_in, c)
          # A step's log-det is `[B]`, or a scalar where it does not depend on
          # the image (additive coupling): the gradient `dildj` is `[B]` always.
          ldj = ldj + tf.zeros_like(ildj)
        grads = tape.gradient([z_re, ldj], [x_in] + watched + s_vars,
                              output_gradients=[dz, dildj],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        dz = grads[0]
        if c is not None:
          dc += grads[1]
        for v, g in zip(s_vars, grads[1 + len(watched):]):
          var_grads[v.ref()] = g
        done = list(grads)
        z_out = x_in
      var_grads = [var_grads.get(v.ref(), tf.zeros_like(v)) for v in (variables or [])]
      return ([dz] if c is None else [dz, dc]), var_grads

    return (z, ildj), grad

  return encode(x) if features is None else encode(x, features)


@tracing.no_autograph
class SplitPrior(tf.Module):
  """The original's `split2d_prior`: Gaussian of the leaving half given the kept half.

  `h = ZeroConv2D(z_kept)`, `mean = h[..., 0::2]`, `log_scale = h[..., 1::2]`;
  zero-initialised, so it starts as a standard normal. With `log_scale_bound`
  `b > 0`, the log-scale is `b * tanh(h[..., 1::2] / b)` (`bounded_log_scale`).
  In a conditional Glow (`conditioning_channels > 0`) the convolution sees
  the level's conditioning features too: `h = ZeroConv2D([z_kept, features])`.
  """

  def __init__(self, kept_channels: int, out_channels: int, dtype: tf.DType = tf.float32,
               log_scale_bound: float = 0., conditioning_channels: int = 0,
               name: str = "split_prior"):
    super().__init__(name=name)
    self._bound = float(log_scale_bound)
    self._conditioning_channels = int(conditioning_channels)
    with self.name_scope:
      self.conv = nn.ZeroConv2D(kept_channels + self._conditioning_channels, 2 * out_channels,
                                dtype=dtype)
    self._order = nn.deinterleaved(2 * out_channels)

  def params(self) -> dict:
    """`{"conv": ...}`: the variables (see `glow_tf.nn.ZeroConv2D.params`)."""
    return {"conv": self.conv.params()}

  def apply(self, params: dict, z_kept: tf.Tensor, features: Optional[tf.Tensor] = None
            ) -> List[tf.Tensor]:
    """z_kept: `[B, h, w, c]` -> mean, log_scale: `[B, h, w, c_out]`, with the variables `params`.

    `features`: the level's conditioning features, `[B, h, w, F]` or `[B, F]`,
    in a conditional Glow.
    """
    inputs = _with_features(z_kept, features, self._conditioning_channels, "SplitPrior")
    mean, log_scale = tf.split(self.conv.apply(params["conv"], inputs, self._order), 2, axis=-1)
    return mean, bounded_log_scale(log_scale, self._bound)

  def __call__(self, z_kept: tf.Tensor, features: Optional[tf.Tensor] = None) -> List[tf.Tensor]:
    """`apply` with this prior's variables."""
    return self.apply(self.params(), z_kept, features)


def _with_features(z, features, channels, where):
  """`z` `[B, h, w, c]` with the conditioning `features` (`[B, h, w, F]` or `[B, F]`) concatenated."""
  if not channels:
    if features is not None:
      raise ValueError(f"{where}: got conditioning features, but it was built without them.")
    return z
  if features is None:
    raise ValueError(f"{where}: this prior is conditional; it needs the level's features.")
  features = tf.cast(features, z.dtype)
  if features.shape.rank == 2:
    features = tf.broadcast_to(features[:, None, None, :],
                               tf.concat([tf.shape(z)[:3], tf.shape(features)[-1:]], 0))
  return tf.concat([z, features], -1)


@tracing.no_autograph
class TopPrior(tf.Module):
  """The original's `prior`: Gaussian of the top latent, learned (`learntop`) and/or class-conditional (`ycond`).

  `h = 0`; with `learntop`, `h = conv2d_zeros(zeros)` (a learned bias plus the
  border term of the original's edge padding); with classes, `h += linear_zeros(onehot(y))`;
  in a conditional Glow (`conditioning_channels > 0`), `h += conv2d_zeros(features)`
  of the last level's conditioning features.
  `mean = h[..., :c]`, `log_scale = h[..., c:]`. Without any it is N(0, 1).
  """

  def __init__(self, shape: Sequence[int], learntop: bool = False, n_classes: Optional[int] = None,
               dtype: tf.DType = tf.float32, log_scale_bound: float = 0.,
               conditioning_channels: int = 0, name: str = "top_prior"):
    super().__init__(name=name)
    self._bound = float(log_scale_bound)
    self._shape = list(shape)
    self._learntop = learntop
    self._n_classes = n_classes
    self._conditioning_channels = int(conditioning_channels)
    c = self._shape[-1]
    with self.name_scope:
      if learntop:
        self.conv = nn.ZeroConv2D(0, 2 * c, dtype=dtype)  # applied to zeros only
      if n_classes:
        self.embedding = nn.LinearZeros(n_classes, 2 * c, dtype=dtype, name="y_emb")
      if self._conditioning_channels:
        self.conditioning_conv = nn.ZeroConv2D(self._conditioning_channels, 2 * c, dtype=dtype,
                                               name="conditioning_conv")

  @property
  def is_standard(self) -> bool:
    return not self._learntop and not self._n_classes and not self._conditioning_channels

  def params(self) -> dict:
    """`{["conv",] ["embedding",] ["conditioning_conv"]}`: the variables of the learned parts."""
    params = {}
    if self._learntop:
      params["conv"] = self.conv.params()
    if self._n_classes:
      params["embedding"] = self.embedding.params()
    if self._conditioning_channels:
      params["conditioning_conv"] = self.conditioning_conv.params()
    return params

  def __call__(self, labels: Optional[TensorLike] = None, dtype: tf.DType = tf.float32,
               features: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """`apply` with this prior's variables."""
    return self.apply(self.params(), labels, dtype, features)

  def apply(self, params: dict, labels: Optional[TensorLike] = None, dtype: tf.DType = tf.float32,
            features: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """Returns mean, log_scale broadcastable to `[B, h, w, c]` (`[1, ...]` without labels), with `params`.

    `features`: the last level's conditioning features (`[B, h, w, F]` or
    `[B, F]`) in a conditional Glow.
    """
    h_, w_, c = self._shape
    if self._n_classes and labels is None:
      raise ValueError(
          "this Glow is class-conditional (n_classes="
          f"{self._n_classes}): pass `labels=` (int `[B]`) as a bijector kwarg.")
    h = tf.zeros([1, h_, w_, 2 * c], dtype)
    if self._learntop:
      h = self.conv.on_zeros(params["conv"], h_, w_)[None]
    if self._n_classes:
      onehot = tf.one_hot(tf.cast(labels, tf.int32), self._n_classes, dtype=dtype)
      h = h + self.embedding.apply(params["embedding"], onehot)[:, None, None, :]
    if self._conditioning_channels or features is not None:
      if features is None:
        raise ValueError("TopPrior: this prior is conditional; it needs the last level's features.")
      inputs = _with_features(tf.zeros([tf.shape(features)[0], h_, w_, 0], dtype), features,
                              self._conditioning_channels, "TopPrior")
      h = h + self.conditioning_conv.apply(params["conditioning_conv"], inputs)
    return h[..., :c], bounded_log_scale(h[..., c:], self._bound)


def _channels(feature_shape):
  """The channels of a level's conditioning features (0 without)."""
  return 0 if feature_shape is None else int(feature_shape[-1])


def _check_feature_shapes(network, level_shapes_):
  """The conditioning network's per-level feature shapes, checked against the levels."""
  shapes = [list(s) for s in network.feature_shapes]
  if len(shapes) != len(level_shapes_):
    raise ValueError(f"Glow: the conditioning network gives features for {len(shapes)} levels; "
                     f"the Glow has {len(level_shapes_)}.")
  for level, (f, s) in enumerate(zip(shapes, level_shapes_)):
    if len(f) not in (1, 3) or (len(f) == 3 and f[:2] != list(s[:2])):
      raise ValueError(
          f"Glow: level {level}'s conditioning features have event shape {f}; they must be "
          f"[F] or [{s[0]}, {s[1]}, F] (the level's spatial size).")
  return shapes


@tracing.no_autograph
class Glow(base.GlowBijector):
  """Glow (Kingma & Dhariwal, 2018) as one bijector from a flat latent to an image.

  Forward (generative) maps a standard-normal vector `eps` `[..., D]`,
  `D = H * W * C`, to an image `[..., H, W, C]` in the model's continuous
  space (`[-0.5, 0.5)` for the original's preprocessing); inverse encodes.
  The encoding direction is the original's `codec`:

  ```none
  x [H, W, C]
   | for level l = 1 .. L:
   |   squeeze 2x2                                  [H/2^l, W/2^l, c_l]
   |   `depth` x FlowStep (actnorm -> permutation -> coupling)
   |   if l < L: split z = [z1, z2]; z2 = mean(z1) + exp(log_scale(z1)) * eps_l
   |            (SplitPrior, zero-init conv of z1); continue with z1
   v
  top latent z_L = mean_top + exp(log_scale_top) * eps_top   (TopPrior)
  eps = concat(flatten(eps_1), ..., flatten(eps_{L-1}), flatten(eps_top))
  ```

  Because each prior is written as an affine map of standard-normal noise,
  `tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0., 1.), D), glow)` is
  exactly Glow's density, and scaling the base by `T` is the original's
  sampling temperature (`eps_std`) at every level. Any other base over `[D]`
  works too.

  Class conditioning (`n_classes`, the original's `--ycond`) makes the top
  prior depend on the label, passed as the conditional kwarg `labels` (int
  `[...]`): `dist.log_prob(x, bijector_kwargs={"labels": y})`.

  Conditional Glow (`conditioning_shape`): the whole flow models `p(x | c)`
  for a condition `c` of event shape `[K]` or `[h, w, K]`, passed as the
  conditional kwarg `conditioning`: `dist.log_prob(x, bijector_kwargs=
  {"conditioning": c})`. A conditioning network (`glow_tf.conditioning`)
  turns `c`, once per call, into features for every level; each level's
  coupling networks and split prior, and the top prior, receive their
  level's. The batch dimensions of `c` broadcast against the input's.

  `forward`/`inverse` and their log-dets come from one pass (shared through
  TFP's cache), so `log_prob` evaluates each coupling network once. In a
  traced function (not compiled by XLA), flow steps of one kind share one
  trace (`glow_tf.tracing.SharedTraces`, owned by this Glow).

  Initialise the actnorms with `initialize(x)` on a batch of data (the
  original's `n_batch_init` pass) before training; see `GlowBijector.initialize`.
  """

  # The architecture's defaults are ModelConfig's (the original's), defined there once.
  def __init__(self, image_shape: Sequence[int], n_levels: int = _DEFAULT["n_levels"],
               depth: int = _DEFAULT["depth"], width: int = _DEFAULT["width"],
               flow_permutation: Union[str, int] = _DEFAULT["flow_permutation"],
               flow_coupling: Union[str, int] = _DEFAULT["flow_coupling"],
               learntop: bool = _DEFAULT["learntop"], n_classes: Optional[int] = None,
               lu_decomposed: bool = _DEFAULT["lu_decomposed"],
               recompute_gradients: bool = _DEFAULT["recompute_gradients"],
               seed: int = _DEFAULT["seed"], dtype: tf.DType = tf.float32,
               precision: str = _DEFAULT["precision"],
               prior_log_scale_bound: float = _DEFAULT["prior_log_scale_bound"],
               conditioning_shape: Optional[Sequence[int]] = None,
               conditioning_width: int = _DEFAULT["condition_width"],
               conditioning_network: Optional[object] = None,
               validate_args: bool = False, name: str = "glow"):
    """Creates the bijector.

    Args:
      image_shape: `[H, W, C]`; `H` and `W` divisible by `2**n_levels`.
      n_levels: Python `int` `L`, number of levels. Default value: `3`.
      depth: Python `int` `K`, flow steps per level. Default value: `32`.
      width: Python `int`, coupling network width. Default value: `512`.
      flow_permutation: 0/`"reverse"`, 1/`"shuffle"`, 2/`"invconv"`.
        Default value: `2`.
      flow_coupling: 0/`"additive"`, 1/`"affine"`. Default value: `0`.
      learntop: Python `bool`, learn the top prior. Default value: `False`.
      n_classes: `None` or Python `int`: condition the top prior on a class
        label (`--ycond`). Default value: `None`.
      lu_decomposed: Python `bool`, LU form of the 1x1 convolutions.
        Default value: `False`.
      recompute_gradients: Python `bool`. When `True`, gradients of the
        encoding direction (the training loss) are computed without storing
        the activations of the flow steps: the backward pass reconstructs
        each step's input from its output (the flow is invertible) and
        re-derives that step's gradients, so activation memory does not grow
        with `depth`. Costs about one more forward pass. Default value: `False`.
      seed: Python `int`, seeds all random initialisations. Default value: `0`.
      dtype: float dtype. Default value: `tf.float32`.
      precision: `"float32"`, or `"mixed_bfloat16"` to run the coupling
        networks in bfloat16 with float32 variables (faster where bfloat16
        is fast, e.g. CPUs with AMX; the flow stays exactly invertible and
        its log-dets float32). Default value: `"float32"`.
      prior_log_scale_bound: Python `float`: `0` for the original's
        unbounded prior log-scales, or `b > 0` to soft-clamp the split and
        learned top priors' log-scales to `(-b, b)` (`bounded_log_scale`).
        Default value: `0.`.
      conditioning_shape: `None` (unconditional), or the event shape `[K]`
        or `[h, w, K]` of the condition `c` of a conditional Glow, passed as
        the kwarg `conditioning`. Default value: `None`.
      conditioning_width: Python `int`, the channels of the default
        conditioning network's features. Default value: `16`.
      conditioning_network: `None` (the default
        `glow_tf.conditioning.ConditioningNetwork`), or your own network
        with `feature_shapes`, `params()` and `apply(params, c)` (see
        `glow_tf.conditioning`) for the condition of `conditioning_shape`.
      validate_args: Python `bool`. Default value: `False`.
      name: Python `str`. Default value: `"glow"`.

    Raises:
      ValueError: for an image size that `2**n_levels` does not divide, a
        non-positive depth or width, an unknown permutation or coupling, a
        bad conditioning shape or a conditioning network whose features do
        not fit the levels.
    """
    parameters = dict(locals())
    shapes = level_shapes(image_shape, n_levels)
    depth = check_positive_int("Glow", "depth", depth)
    width = check_positive_int("Glow", "width", width)
    n_classes = check_n_classes("Glow", n_classes)
    flow_permutation = permutation_name(flow_permutation)
    flow_coupling = coupling_name(flow_coupling)
    nn.compute_dtype(precision)  # raises on an unknown precision
    prior_log_scale_bound = check_log_scale_bound("Glow", prior_log_scale_bound)
    conditioning_shape = conditioning_lib.check_conditioning_shape("Glow", conditioning_shape)
    if conditioning_network is not None and conditioning_shape is None:
      raise ValueError("Glow: a conditioning_network needs the condition's conditioning_shape.")
    with tf.name_scope(name) as name:
      self._image_shape = [int(d) for d in image_shape]
      self._n_levels = int(n_levels)
      self._latent_shapes = shapes
      self._latent_sizes = [int(np.prod(s)) for s in shapes]
      self._n_classes = n_classes
      self._recompute_gradients = bool(recompute_gradients)
      self._conditioning_shape = conditioning_shape
      feature_shapes = [None] * n_levels
      if conditioning_shape is not None:
        if conditioning_network is None:
          conditioning_network = conditioning_lib.ConditioningNetwork(
              conditioning_shape, [s[:2] for s in shapes], conditioning_width, seed=seed + 777,
              dtype=dtype)
        self.conditioning_network = conditioning_network
        feature_shapes = _check_feature_shapes(conditioning_network, shapes)
      self.levels = []
      self.priors = []
      c = self._image_shape[-1]
      for level in range(n_levels):
        c *= 4
        self.levels.append([
            flow_step.FlowStep(
                c, width, flow_permutation, flow_coupling, lu_decomposed,
                conditioning_shape=feature_shapes[level],
                seed=seed + 1000 * level + 2 * k, dtype=dtype, precision=precision,
                name=f"level{level}_step{k}")
            for k in range(depth)])
        if level < n_levels - 1:
          self.priors.append(SplitPrior(c // 2, c // 2, dtype=dtype,
                                        log_scale_bound=prior_log_scale_bound,
                                        conditioning_channels=_channels(feature_shapes[level]),
                                        name=f"split_prior{level}"))
          c //= 2
      self.top_prior = TopPrior(shapes[-1], learntop, n_classes, dtype=dtype,
                                log_scale_bound=prior_log_scale_bound,
                                conditioning_channels=_channels(feature_shapes[-1]))
      self._traces = tracing.SharedTraces()
      super().__init__(forward_min_event_ndims=1, inverse_min_event_ndims=3,
                       dtype=dtype, validate_args=validate_args,
                       parameters=parameters, name=name)

  # ---- Shapes --------------------------------------------------------------------

  @property
  def image_shape(self) -> List[int]:
    return list(self._image_shape)

  @property
  def latent_shapes(self) -> List[List[int]]:
    """Per-level latent shapes `[h, w, c]`: the splits, then the top."""
    return [list(s) for s in self._latent_shapes]

  @property
  def latent_size(self) -> int:
    """`D = H * W * C`, the size of the flat latent."""
    return int(np.prod(self._image_shape))

  @property
  def n_classes(self) -> Optional[int]:
    return self._n_classes

  @property
  def conditioning_shape(self) -> Optional[List[int]]:
    """The condition's event shape in a conditional Glow, else `None`."""
    return None if self._conditioning_shape is None else list(self._conditioning_shape)

  @property
  def is_conditional(self) -> bool:
    """Whether the flow takes a `conditioning` kwarg (a conditional Glow)."""
    return self._conditioning_shape is not None

  def _expected_forward_event(self):
    return [self.latent_size]

  def _expected_inverse_event(self):
    return self.image_shape

  def _conditioning_event_ndims(self, name):
    if name != "conditioning":
      return 0
    if not self.is_conditional:
      raise ValueError(f"{self.name}: got `conditioning`, but this Glow is unconditional "
                       "(built without conditioning_shape).")
    return len(self._conditioning_shape)

  def _forward_event_shape(self, input_shape):
    return tf.TensorShape(input_shape)[:-1].concatenate(self._image_shape)

  def _forward_event_shape_tensor(self, input_shape):
    return tf.concat([input_shape[:-1], self._image_shape], 0)

  def _inverse_event_shape(self, output_shape):
    return tf.TensorShape(output_shape)[:-3].concatenate([self.latent_size])

  def _inverse_event_shape_tensor(self, output_shape):
    return tf.concat([output_shape[:-3], [self.latent_size]], 0)

  def split_latent(self, eps: tf.Tensor) -> List[tf.Tensor]:
    """Flat `[B, D]` -> list of per-level `[B, h, w, c]` latents."""
    parts = tf.split(eps, self._latent_sizes, axis=-1)
    return [tf.reshape(p, [-1] + s) for p, s in zip(parts, self._latent_shapes)]

  def join_latents(self, latents: Sequence[tf.Tensor]) -> tf.Tensor:
    """List of per-level `[B, h, w, c]` latents -> flat `[B, D]`."""
    return tf.concat([tf.reshape(z, [tf.shape(z)[0], -1]) for z in latents], -1)

  # ---- The two directions ------------------------------------------------------

  def params(self) -> dict:
    """`{"levels": [[step, ...], ...], "priors": [...], "top_prior": ...}`: the variables."""
    params = {"levels": [[step.params() for step in steps] for steps in self.levels],
              "priors": [prior.params() for prior in self.priors],
              "top_prior": self.top_prior.params()}
    if self.is_conditional:
      params["conditioning"] = self.conditioning_network.params()
    return params

  def _features(self, params, conditioning):
    """Per-level conditioning features (a list of `None` for an unconditional Glow)."""
    if not self.is_conditional:
      if conditioning is not None:
        raise ValueError(f"{self.name}: got `conditioning`, but this Glow is unconditional "
                         "(built without conditioning_shape).")
      return [None] * self._n_levels
    if conditioning is None:
      raise ValueError(
          f"{self.name}: this Glow is conditional (conditioning_shape="
          f"{self._conditioning_shape}): pass `conditioning=` (`[B] + conditioning_shape`), "
          "e.g. as `bijector_kwargs={'conditioning': c}`.")
    conditioning = tf.convert_to_tensor(conditioning)
    self._check_event(conditioning, self._conditioning_shape, "conditioning")
    return self.conditioning_network.apply(params["conditioning"], conditioning)

  def _call_step(self, step, direction, params, z, features=None):
    """`step.inverse_with` or `step.forward_with` (`direction`) of `(params, z)`.

    `features`: the level's conditioning features in a conditional Glow.
    In a traced function, through the trace shared by the steps of the same
    `trace_key`; not under XLA, which would recompile the shared functions
    at every call.
    """
    fn = step.inverse_with if direction == "inverse" else step.forward_with
    inputs = (z,) if features is None else (z, features)
    if features is not None:
      fn = _with_conditioning(fn)
    if tf.inside_function() and not tracing.in_xla_context():
      return self._traces.call((step.trace_key, direction), fn, params, *inputs)
    return fn(params, *inputs)

  def _encode_steps(self, steps, params, z, ildj, features=None):
    """A level's flow steps in the encoding direction; adds their log-dets to `ildj`."""
    if self._recompute_gradients:
      z, ldj = _encode_steps_recomputing(steps, params, z, self._call_step, features)
      return z, ildj + ldj
    for step, p in zip(steps, params):
      z, ldj = self._call_step(step, "inverse", p, z, features)
      ildj += ldj
    return z, ildj

  def _initialize_steps(self, steps, params, z, ildj, features=None):
    """A level's flow steps initialised from `z` in turn (log-dets not computed)."""
    del params  # initialisation assigns the steps' own variables
    kwargs = {} if features is None else {"conditioning": features}
    for step in steps:
      z = step.initialize(z, **kwargs)
    return z, ildj

  def _encode_levels(self, params, x, labels, conditioning, run_steps):
    """The encoding's level loop: x `[B, H, W, C]` -> (per-level eps list, top z, ildj `[B]`).

    `run_steps(steps, step_params, z, ildj, features) -> (z, ildj)` runs one
    level's flow steps (`_encode_steps` or `_initialize_steps`).
    """
    features = self._features(params, conditioning)
    z, ildj = x, tf.zeros(tf.shape(x)[:1], x.dtype)
    eps = []
    for level, steps in enumerate(self.levels):
      z = squeeze_lib.squeeze(z)
      z, ildj = run_steps(steps, params["levels"][level], z, ildj, features[level])
      if level < self._n_levels - 1:
        z1, z2 = tf.split(z, 2, axis=-1)
        mean, log_scale = self.priors[level].apply(params["priors"][level], z1, features[level])
        eps.append((z2 - mean) * tf.exp(-log_scale))
        ildj -= tf.reduce_sum(log_scale, [1, 2, 3])
        z = z1
    if self.top_prior.is_standard:
      eps.append(z)
    else:
      mean, log_scale = self.top_prior.apply(params["top_prior"], labels, z.dtype, features[-1])
      eps.append((z - mean) * tf.exp(-log_scale))
      ildj -= tf.reduce_sum(log_scale + tf.zeros_like(z), [1, 2, 3])
    return eps, z, ildj

  def _encode(self, params, x, labels=None, conditioning=None):
    """Encoding pass: x `[B, H, W, C]` -> (per-level eps list, top z, ildj `[B]`)."""
    return self._encode_levels(params, x, labels, conditioning, self._encode_steps)

  def _decode(self, params, eps, labels=None, conditioning=None):
    """Generative pass: per-level eps list -> (x `[B, H, W, C]`, fldj `[B]`)."""
    features = self._features(params, conditioning)
    z = eps[-1]
    fldj = tf.zeros(tf.shape(z)[:1], z.dtype)
    if not self.top_prior.is_standard:
      mean, log_scale = self.top_prior.apply(params["top_prior"], labels, z.dtype, features[-1])
      z = mean + tf.exp(log_scale) * z
      fldj += tf.reduce_sum(log_scale + tf.zeros_like(z), [1, 2, 3])
    for level in reversed(range(self._n_levels)):
      if level < self._n_levels - 1:
        mean, log_scale = self.priors[level].apply(params["priors"][level], z, features[level])
        z = tf.concat([z, mean + tf.exp(log_scale) * eps[level]], -1)
        fldj += tf.reduce_sum(log_scale, [1, 2, 3])
      for step, p in zip(reversed(self.levels[level]), reversed(params["levels"][level])):
        z, ldj = self._call_step(step, "forward", p, z, features[level])
        fldj += ldj
      z = squeeze_lib.unsqueeze(z)
    return z, fldj

  def inverse_with(self, params: dict, x: tf.Tensor, labels: Optional[tf.Tensor] = None,
                   conditioning: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    eps, _, ildj = self._encode(params, x, labels, conditioning)
    return self.join_latents(eps), ildj

  def forward_with(self, params: dict, eps: tf.Tensor, labels: Optional[tf.Tensor] = None,
                   conditioning: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    return self._decode(params, self.split_latent(eps), labels, conditioning)

  def _initialize_4d(self, x, labels=None, conditioning=None):
    eps, _, _ = self._encode_levels(self.params(), x, labels, conditioning,
                                    self._initialize_steps)
    return self.join_latents(eps)

  # ---- Per-level access -------------------------------------------------------------

  def encode(self, x: TensorLike, labels: Optional[TensorLike] = None,
             conditioning: Optional[TensorLike] = None
             ) -> Tuple[List[tf.Tensor], tf.Tensor, tf.Tensor]:
    """Encodes images to per-level latents (the original's `eps` list).

    Args:
      x: float `[B, H, W, C]`, images in the model's continuous space.
      labels: int `[B]` for a class-conditional Glow, else `None`.
      conditioning: `[B] + conditioning_shape` for a conditional Glow, else `None`.

    Returns:
      latents: list of `[B, h, w, c]`, one per split then the top (see
        `latent_shapes`); standard normal under the model.
      top: `[B, h, w, c]`, the top latent before its prior's standardisation
        (the input of the original's classifier head).
      ildj: `[B]`, the log-det of the encoding Jacobian.
    """
    x = tf.convert_to_tensor(x, dtype_hint=self.dtype)
    self._check_event(x, self.image_shape, "images")
    return self._encode(self.params(), x, labels, conditioning)

  def decode(self, latents: Sequence[TensorLike], labels: Optional[TensorLike] = None,
             conditioning: Optional[TensorLike] = None) -> tf.Tensor:
    """Decodes per-level latents (as from `encode`) to images `[B, H, W, C]`."""
    return self._decode(self.params(), [tf.convert_to_tensor(z, dtype_hint=self.dtype)
                                        for z in latents], labels, conditioning)[0]


def _with_conditioning(fn):
  """`fn(params, z, conditioning=features)` as a function of `(params, z, features)`."""
  return lambda params, z, features: fn(params, z, conditioning=features)
