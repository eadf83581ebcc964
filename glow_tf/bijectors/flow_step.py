"""One step of flow: actnorm -> permutation -> coupling."""

from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from glow_tf import normalization
from glow_tf.config import ModelConfig, coupling_name, default_of, permutation_name
from glow_tf.bijectors import actnorm as actnorm_lib
from glow_tf.bijectors import base
from glow_tf.bijectors import coupling as coupling_lib
from glow_tf.bijectors import invertible_conv
from glow_tf.bijectors import permute
from glow_tf.ops import matmul_channels, num_pixels
from glow_tf.tracing import no_autograph

__all__ = ["FlowStep"]


@no_autograph
class FlowStep(base.GlowBijector):
  """One step of Glow's flow (Kingma & Dhariwal, 2018, fig. 2a).

  In the encoding direction (image side to latent side), the original's
  `revnet2d_step`:

  ```none
  x -> ActNorm -> permutation -> coupling -> z
  ```

  The forward (generative) direction runs the inverses in reverse order. The
  permutation is `"reverse"`, `"shuffle"` or `"invconv"` (the original's
  `--flow_permutation` 0, 1, 2; `lu_decomposed=True` picks the LU form of the
  1x1 convolution) and the coupling `"additive"` or `"affine"`
  (`--flow_coupling` 0, 1). Log-dets are the sums of the pieces'.

  Tensors are `[..., H, W, C]`, `C` even; log-dets are `[...]`.

  Inside a `glow_tf.Glow`, steps with equal `trace_key` share one trace
  of `forward_with` / `inverse_with` (see `glow_tf.tracing`); a step used
  alone is traced on its own.
  """

  def __init__(self, num_channels: int, hidden_channels: int,
               flow_permutation: Union[str, int] = default_of(ModelConfig, "flow_permutation"),
               flow_coupling: Union[str, int] = default_of(ModelConfig, "flow_coupling"),
               lu_decomposed: bool = default_of(ModelConfig, "lu_decomposed"),
               conditioning_shape: Optional[Sequence[int]] = None, seed: int = 0,
               dtype: tf.DType = tf.float32, precision: str = "float32", validate_args: bool = False,
               name: str = "flow_step"):
    """Creates the bijector.

    Args:
      num_channels: Python `int`, the (even) number of channels `C`.
      hidden_channels: Python `int`, the coupling network width.
      flow_permutation: `"reverse"`, `"shuffle"`, `"invconv"` or 0, 1, 2.
        Default value: `"invconv"`.
      flow_coupling: `"additive"`, `"affine"` or 0, 1. Default value: `"additive"` (the original's, `ModelConfig`'s).
      lu_decomposed: Python `bool`, LU form of the 1x1 convolution.
        Default value: `False`.
      conditioning_shape: event shape of the coupling's optional
        `conditioning` kwarg (see `AffineCoupling`). Default value: `None`.
      seed: Python `int`, seeds the random initialisations.
        Default value: `0`.
      dtype: float dtype. Default value: `tf.float32`.
      precision: `"float32"` or `"mixed_bfloat16"` (the coupling network's
        arithmetic; see `AffineCoupling`). Default value: `"float32"`.
      validate_args: Python `bool`. Default value: `False`.
      name: Python `str`. Default value: `"flow_step"`.
    """
    parameters = dict(locals())
    flow_permutation = permutation_name(flow_permutation)
    flow_coupling = coupling_name(flow_coupling)
    with tf.name_scope(name) as name:
      self.actnorm = actnorm_lib.ActNorm(num_channels, dtype=dtype)
      if flow_permutation == "reverse":
        self.permutation = permute.Reverse(num_channels, dtype=dtype)
      elif flow_permutation == "shuffle":
        self.permutation = permute.Shuffle(num_channels, seed=seed, dtype=dtype)
      else:
        self.permutation = invertible_conv.InvertibleConv1x1(
            num_channels, lu_decomposed=lu_decomposed, seed=seed, dtype=dtype)
      self.coupling = coupling_lib.AffineCoupling(
          num_channels, hidden_channels, flow_coupling,
          conditioning_shape=conditioning_shape, seed=seed + 1, dtype=dtype,
          precision=precision)
      self._num_channels = num_channels
      self._conditioning_shape = conditioning_shape
      super().__init__(dtype=dtype, validate_args=validate_args,
                       parameters=parameters, name=name)

  def _conditioning_event_ndims(self, name):
    return len(self._conditioning_shape or [])

  def params(self) -> dict:
    """`{"actnorm", "permutation", "coupling"}`: the pieces' variables (see their `params`)."""
    return {"actnorm": self.actnorm.params(), "permutation": self.permutation.params(),
            "coupling": self.coupling.params()}

  @property
  def trace_key(self) -> tuple:
    """Everything but the variables that `forward_with` and `inverse_with` depend on.

    Steps with equal keys compute the same functions of `(params, x)`.
    """
    perm = self.permutation
    return (type(perm).__name__, getattr(perm, "lu_decomposed", None),
            tuple(perm.permutation) if isinstance(perm, permute.Shuffle) else (),
            self.coupling.coupling, self.coupling.precision, self._num_channels,
            self.coupling.hidden_channels,
            None if self._conditioning_shape is None else tuple(self._conditioning_shape),
            self.dtype.name)

  def inverse_with(self, params: dict, x: tf.Tensor, conditioning: Optional[tf.Tensor] = None
                   ) -> Tuple[tf.Tensor, tf.Tensor]:
    if isinstance(self.permutation, invertible_conv.InvertibleConv1x1):
      h, ldj12 = self._actnorm_invconv_inverse(params, x)
    else:
      h, ldj1 = self.actnorm.inverse_with(params["actnorm"], x)
      h, ldj2 = self.permutation.inverse_with(params["permutation"], h)
      ldj12 = ldj1 + ldj2
    z, ldj3 = self.coupling.inverse_with(params["coupling"], h, conditioning=conditioning)
    return z, ldj12 + ldj3

  def forward_with(self, params: dict, z: tf.Tensor, conditioning: Optional[tf.Tensor] = None
                   ) -> Tuple[tf.Tensor, tf.Tensor]:
    h, ldj3 = self.coupling.forward_with(params["coupling"], z, conditioning=conditioning)
    if isinstance(self.permutation, invertible_conv.InvertibleConv1x1):
      x, ldj12 = self._actnorm_invconv_forward(params, h)
    else:
      h, ldj2 = self.permutation.forward_with(params["permutation"], h)
      x, ldj1 = self.actnorm.forward_with(params["actnorm"], h)
      ldj12 = ldj1 + ldj2
    return x, ldj12 + ldj3

  # Actnorm and the 1x1 convolution are both per-pixel affine maps: one
  # matmul with the actnorm scale folded into the [C, C] matrix, plus a bias,
  # instead of two passes over the activations.
  #   encode:   z = ((x + b) * e^s) W^T = x (diag(e^s) W^T) + (b * e^s) W^T
  #   generate: x = z W^-T e^-s - b     = z (W^-T diag(e^-s)) - b

  def _actnorm_invconv_log_det(self, params, x):
    s = normalization.log_scale(params["actnorm"])
    return s, num_pixels(x) * (tf.reduce_sum(s)
                               + self.permutation.log_abs_det_weight(params["permutation"]))

  # (The matrices are built as their transposes, `W diag(e^s)` and
  # `diag(e^-s) W^-1`, and multiplied with `transpose_b`: no transpose ops.)

  def _actnorm_invconv_inverse(self, params, x):
    s, ldj = self._actnorm_invconv_log_det(params, x)
    matrix_t = self.permutation.weight(params["permutation"]) * tf.exp(s)
    bias = tf.linalg.matvec(matrix_t, params["actnorm"]["shift"])
    return matmul_channels(x, matrix_t, transpose_kernel=True, bias=bias), ldj

  def _actnorm_invconv_forward(self, params, z):
    s, ldj = self._actnorm_invconv_log_det(params, z)
    matrix_t = tf.exp(-s)[:, None] * self.permutation.inverse_weight(params["permutation"])
    x = matmul_channels(z, matrix_t, transpose_kernel=True, bias=-params["actnorm"]["shift"])
    return x, -ldj

  def _initialize_4d(self, x, conditioning=None):
    h = self.actnorm.initialize(x)
    h = self.permutation.initialize(h)
    return self.coupling.initialize(h, conditioning=conditioning)
