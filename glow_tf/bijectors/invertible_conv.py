"""The invertible 1x1 convolution, as a full matrix or in LU form."""

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from glow_tf.bijectors import base
from glow_tf.ops import matmul_channels, np_dtype, num_pixels
from glow_tf.tracing import in_xla_context, no_autograph

__all__ = ["InvertibleConv1x1", "random_orthogonal"]


def random_orthogonal(num_channels: int, seed: Optional[int]) -> np.ndarray:
  """A random `[C, C]` orthogonal matrix (QR of a Gaussian), as numpy float64."""
  rng = np.random.RandomState(seed)
  q, r = np.linalg.qr(rng.randn(num_channels, num_channels))
  return q * np.sign(np.diag(r))  # Haar-distributed


def _lu(w):
  """Numpy LU with partial pivoting: `w = p @ lower @ u`, `lower` unit lower-triangular."""
  n = w.shape[0]
  u = w.astype(np.float64).copy()
  lower = np.eye(n)
  perm = np.arange(n)
  for k in range(n - 1):
    piv = k + int(np.argmax(np.abs(u[k:, k])))
    if piv != k:
      u[[k, piv], k:] = u[[piv, k], k:]
      lower[[k, piv], :k] = lower[[piv, k], :k]
      perm[[k, piv]] = perm[[piv, k]]
    lower[k + 1:, k] = u[k + 1:, k] / u[k, k]
    u[k + 1:, k:] -= np.outer(lower[k + 1:, k], u[k, k:])
  p = np.eye(n)[:, np.argsort(perm)]  # w = p @ lower @ u
  return p, lower, np.triu(u)


@tf.custom_gradient
def _log_abs_det_by_qr(w):
  """`log|det w|` from a QR factorisation (XLA-compilable); gradient `w^-T`."""
  _, r = tf.linalg.qr(w)
  value = tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))))
  return value, lambda dy: dy * tf.transpose(tf.linalg.inv(w))


@no_autograph
class InvertibleConv1x1(base.GlowBijector):
  """The invertible 1x1 convolution of Glow (Kingma & Dhariwal, 2018, sec. 3.2).

  A learned channel-mixing matrix `W` `[C, C]` applied at every pixel. In the
  encoding direction (image side `x` to latent side `z`), per pixel:

  ```none
  inverse (encode):   z = W x        ildj = H * W_img * log|det W|
  forward (generate): x = W^-1 z     fldj = -H * W_img * log|det W|
  ```

  Two parameterisations:

  * `lu_decomposed=False` (the original's default): `W` is a free matrix,
    initialised random orthogonal; `log|det W|` is computed with `slogdet` in
    float64 for stability, and the forward direction inverts `W` in float64.
  * `lu_decomposed=True`: `W = P L (U + diag(sign_s * exp(log_s)))` with the
    permutation `P` and `sign_s` fixed, `L` unit lower-triangular and `U`
    strictly upper-triangular, initialised from the LU decomposition of a
    random orthogonal matrix; `log|det W| = sum(log_s)` costs O(C).

  Tensors are `[..., H, W, C]`; the log-dets are `[...]`.
  """

  def __init__(self, num_channels: int, lu_decomposed: bool = False, seed: int = 0,
               dtype: tf.DType = tf.float32, validate_args: bool = False,
               name: str = "invertible_conv_1x1"):
    """Creates the bijector.

    Args:
      num_channels: Python `int`, the number of channels `C`.
      lu_decomposed: Python `bool`, use the LU parameterisation.
        Default value: `False`.
      seed: Python `int`, seed of the random orthogonal initialisation.
        Default value: `0`.
      dtype: float dtype of the variables. Default value: `tf.float32`.
      validate_args: Python `bool`. Default value: `False`.
      name: Python `str`. Default value: `"invertible_conv_1x1"`.
    """
    parameters = dict(locals())
    if not isinstance(num_channels, int) or num_channels < 1:
      raise ValueError(
          f"InvertibleConv1x1: num_channels must be a positive int, got {num_channels!r}.")
    with tf.name_scope(name) as name:
      self._num_channels = num_channels
      self._lu_decomposed = bool(lu_decomposed)
      w_init = random_orthogonal(num_channels, seed)
      npdt = np_dtype(dtype)
      if self._lu_decomposed:
        p, lower, u = _lu(w_init)
        s = np.diag(u)
        # Fixed, but per step: kept as non-trainable variables (checkpointed).
        self.permutation_matrix = tf.Variable(p.astype(npdt), trainable=False,
                                              name="permutation_matrix")
        self.sign_s = tf.Variable(np.sign(s).astype(npdt), trainable=False, name="sign_s")
        self._lower_mask = tf.constant(np.tril(np.ones([num_channels] * 2), -1).astype(npdt))
        self._upper_mask = tf.constant(np.triu(np.ones([num_channels] * 2), 1).astype(npdt))
        self.lower = tf.Variable(lower.astype(npdt), name="lower")
        self.upper = tf.Variable(np.triu(u, 1).astype(npdt), name="upper")
        self.log_s = tf.Variable(np.log(np.abs(s)).astype(npdt), name="log_s")
      else:
        self.kernel = tf.Variable(w_init.astype(npdt), name="kernel")
      super().__init__(dtype=dtype, validate_args=validate_args,
                       parameters=parameters, name=name)

  @property
  def lu_decomposed(self) -> bool:
    return self._lu_decomposed

  def params(self) -> dict:
    """The variables: `{"kernel"}`, or with `lu_decomposed` `{"permutation_matrix",
    "sign_s", "lower", "upper", "log_s"}` (the first two fixed)."""
    if not self._lu_decomposed:
      return {"kernel": self.kernel}
    return {"permutation_matrix": self.permutation_matrix, "sign_s": self.sign_s,
            "lower": self.lower, "upper": self.upper, "log_s": self.log_s}

  def _lu_factors(self, params):
    eye = tf.eye(self._num_channels, dtype=self.dtype)
    lower = params["lower"] * self._lower_mask + eye
    upper = (params["upper"] * self._upper_mask
             + tf.linalg.diag(params["sign_s"] * tf.exp(params["log_s"])))
    return lower, upper

  def weight(self, params: Optional[dict] = None) -> tf.Tensor:
    """The matrix `W` `[C, C]` of the encoding direction.

    Args:
      params: the variables' structure, as `params()` (default: this bijector's).
    """
    params = self.params() if params is None else params
    if not self._lu_decomposed:
      return tf.convert_to_tensor(params["kernel"])
    lower, upper = self._lu_factors(params)
    return params["permutation_matrix"] @ lower @ upper

  def log_abs_det_weight(self, params: Optional[dict] = None) -> tf.Tensor:
    """`log|det W|`, a scalar (`params` as in `weight`)."""
    params = self.params() if params is None else params
    if self._lu_decomposed:
      return tf.reduce_sum(params["log_s"])
    w64 = tf.cast(params["kernel"], tf.float64)
    if in_xla_context():  # XLA has no slogdet kernel
      return tf.cast(_log_abs_det_by_qr(w64), self.dtype)
    return tf.cast(tf.linalg.slogdet(w64)[1], self.dtype)

  def inverse_weight(self, params: Optional[dict] = None) -> tf.Tensor:
    """`W^-1` `[C, C]`, the matrix of the forward (generative) direction (`params` as in `weight`)."""
    params = self.params() if params is None else params
    if self._lu_decomposed:
      lower, upper = self._lu_factors(params)
      eye = tf.eye(self._num_channels, dtype=self.dtype)
      # W^-1 = U^-1 L^-1 P^T, by two triangular solves.
      l_inv = tf.linalg.triangular_solve(lower, eye, lower=True)
      return tf.linalg.triangular_solve(
          upper, l_inv @ tf.transpose(params["permutation_matrix"]), lower=False)
    w64 = tf.cast(params["kernel"], tf.float64)
    return tf.cast(tf.linalg.inv(w64), self.dtype)

  # A row vector x (the channels at one pixel) maps to z = x W^T.
  def forward_with(self, params: dict, z: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    x = matmul_channels(z, self.inverse_weight(params), transpose_kernel=True)
    return x, -num_pixels(z) * self.log_abs_det_weight(params)

  def inverse_with(self, params: dict, x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    z = matmul_channels(x, self.weight(params), transpose_kernel=True)
    return z, num_pixels(x) * self.log_abs_det_weight(params)
