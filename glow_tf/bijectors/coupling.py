"""Glow's affine and additive coupling layers."""

from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from glow_tf import nn
from glow_tf.config import coupling_name
from glow_tf.bijectors import base
from glow_tf.tracing import no_autograph

__all__ = ["AffineCoupling"]



@no_autograph
class AffineCoupling(base.GlowBijector):
  """The coupling layer of Glow (Kingma & Dhariwal, 2018, sec. 3.3), affine or additive.

  The channels split in halves `x = [x_a, x_b]`; `x_a` passes unchanged and
  conditions the transformation of `x_b` through the network NN() (3x3 conv,
  actnorm, ReLU, 1x1 conv, actnorm, ReLU, zero-initialised 3x3 conv; see
  `glow_tf.nn.CouplingNetwork`). In the encoding direction (image side `x` to
  latent side `z`):

  ```none
  affine:    h = NN(x_a);  t = h[..., 0::2];  s = sigmoid(h[..., 1::2] + 2)
             z_b = (x_b + t) * s             ildj = sum(log s)
             x_b = z_b / s - t               fldj = -sum(log s)     (forward)
  additive:  z_b = x_b + NN(x_a)             log-det 0
  z = concat([x_a, z_b], -1)
  ```

  NN's last layer starts at zero, so the layer starts as a fixed scaling
  `sigmoid(2)` (affine) or as the identity (additive).

  A conditioning input (e.g. a class embedding or a low-resolution image) is
  passed through TFP's conditional kwargs as `conditioning=`: a
  `[..., K]` vector broadcast over the pixels, or a `[..., H, W, K]` map, set
  by `conditioning_shape`; it joins NN()'s hidden activations at its 1x1
  convolution (`glow_tf.nn.CouplingNetwork`), so the layer stays invertible
  given it.

  Tensors are `[..., H, W, C]` with `C` even; the log-dets are `[...]`.
  """

  def __init__(self, num_channels: int, hidden_channels: int, coupling: Union[str, int] = "affine",
               conditioning_shape: Optional[Sequence[int]] = None, seed: int = 0,
               dtype: tf.DType = tf.float32, precision: str = "float32",
               validate_args: bool = False, name: str = "coupling"):
    """Creates the bijector.

    Args:
      num_channels: Python `int`, the (even) number of channels `C`.
      hidden_channels: Python `int`, the width of NN()'s hidden layers (the
        original's `--width`).
      coupling: `"affine"` or `"additive"` (or the original's
        `--flow_coupling` integers 1 and 0). Default value: `"affine"`.
      conditioning_shape: `None`, `[K]` or `[H, W, K]`: the event shape of
        the optional `conditioning` kwarg. Default value: `None`.
      seed: Python `int`, seed of NN()'s random initialisation.
        Default value: `0`.
      dtype: float dtype of the variables. Default value: `tf.float32`.
      precision: `"float32"`, or `"mixed_bfloat16"` to run NN() in bfloat16
        (float32 variables, log-dets and coupling arithmetic; the layer stays
        exactly invertible). Default value: `"float32"`.
      validate_args: Python `bool`. Default value: `False`.
      name: Python `str`. Default value: `"coupling"`.
    """
    parameters = dict(locals())
    coupling = coupling_name(coupling)
    if not isinstance(num_channels, int) or num_channels < 2 or num_channels % 2:
      raise ValueError(
          f"AffineCoupling: num_channels must be an even int >= 2 to split in "
          f"halves, got {num_channels!r}; squeeze first or use another split.")
    if not isinstance(hidden_channels, int) or hidden_channels < 1:
      raise ValueError(
          f"AffineCoupling: hidden_channels must be a positive int, got {hidden_channels!r}.")
    if conditioning_shape is not None:
      conditioning_shape = [int(d) for d in conditioning_shape]
      if len(conditioning_shape) not in (1, 3):
        raise ValueError(
            "AffineCoupling: conditioning_shape must be [K] or [H, W, K], got "
            f"{conditioning_shape}.")
    compute_dtype = nn.compute_dtype(precision)
    with tf.name_scope(name) as name:
      self._num_channels = num_channels
      self._coupling = coupling
      self._precision = precision
      self._conditioning_shape = conditioning_shape
      half = num_channels // 2
      extra = conditioning_shape[-1] if conditioning_shape else 0
      out = num_channels if coupling == "affine" else half
      # NN's output interleaves shift and scale channels (the original's
      # layout); it is asked for them as [shifts, scales] so that a
      # contiguous split, not two strided slices, separates them.
      order = nn.deinterleaved(out) if coupling == "affine" else None
      self.nn = nn.CouplingNetwork(half, hidden_channels, out, seed=seed,
                                   dtype=dtype, out_order=order,
                                   compute_dtype=compute_dtype,
                                   conditioning_channels=extra, name="nn")
      super().__init__(dtype=dtype, validate_args=validate_args,
                       parameters=parameters, name=name)

  @property
  def coupling(self) -> str:
    return self._coupling

  @property
  def precision(self) -> str:
    return self._precision

  @property
  def hidden_channels(self) -> int:
    """The width of NN()'s hidden layers."""
    return self.nn.hidden_channels

  def params(self) -> dict:
    """`{"nn": ...}`: NN()'s variables (see `glow_tf.nn.CouplingNetwork.params`)."""
    return {"nn": self.nn.params()}

  def _conditioning_event_ndims(self, name):
    return len(self._conditioning_shape or [])

  def _checked(self, conditioning):
    """The conditioning input, checked against `conditioning_shape`."""
    if self._conditioning_shape is None:
      if conditioning is not None:
        raise ValueError(
            f"{self.name}: got a `conditioning` input but the bijector was built "
            "without `conditioning_shape`.")
      return None
    if conditioning is None:
      raise ValueError(
          f"{self.name}: this bijector is conditional (conditioning_shape="
          f"{self._conditioning_shape}); pass `conditioning=` as a bijector kwarg.")
    return conditioning

  def _split(self, t):
    return tf.split(t, 2, axis=-1)

  def _shift_and_log_scale(self, h):
    """NN output -> (shift, log s); log s is None for additive coupling."""
    if self._coupling == "additive":
      return h, None
    shift, raw_scale = tf.split(h, 2, axis=-1)  # h[..., 0::2], h[..., 1::2] of the original
    return shift, tf.math.log_sigmoid(raw_scale + 2.)

  def _encode(self, x, h):
    """The encoding given NN's output `h`: (z, ildj)."""
    x_a, x_b = self._split(x)
    shift, log_s = self._shift_and_log_scale(h)
    if log_s is None:
      return tf.concat([x_a, x_b + shift], -1), tf.zeros([], x.dtype)
    z_b = (x_b + shift) * tf.exp(log_s)
    return tf.concat([x_a, z_b], -1), tf.reduce_sum(log_s, [1, 2, 3])

  def inverse_with(self, params: dict, x: tf.Tensor, conditioning: Optional[tf.Tensor] = None
                   ) -> Tuple[tf.Tensor, tf.Tensor]:
    h = self.nn.apply(params["nn"], self._split(x)[0], self._checked(conditioning))
    return self._encode(x, h)

  def forward_with(self, params: dict, z: tf.Tensor, conditioning: Optional[tf.Tensor] = None
                   ) -> Tuple[tf.Tensor, tf.Tensor]:
    z_a, z_b = self._split(z)
    shift, log_s = self._shift_and_log_scale(
        self.nn.apply(params["nn"], z_a, self._checked(conditioning)))
    if log_s is None:
      return tf.concat([z_a, z_b - shift], -1), tf.zeros([], z.dtype)
    x_b = z_b * tf.exp(-log_s) - shift
    return tf.concat([z_a, x_b], -1), -tf.reduce_sum(log_s, [1, 2, 3])

  def _initialize_4d(self, x, conditioning=None):
    h = self.nn.initialize(self._split(x)[0], self._checked(conditioning))
    return self._encode(x, h)[0]
