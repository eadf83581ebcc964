"""Shared checks for bijector tests: perturbation, brute-force Jacobians, fresh tensors."""

import numpy as np
import tensorflow as tf


def perturb(bijector, scale=0.1, seed=0):
  """Moves every variable away from its (identity-like) initial value."""
  rng = np.random.RandomState(seed)
  for v in bijector.trainable_variables:
    v.assign(v + scale * rng.standard_normal(v.shape).astype(v.dtype.as_numpy_dtype))


def fresh(t):
  """A new tensor with `t`'s value, so TFP's bijector cache cannot answer for it."""
  return tf.constant(np.asarray(t))


def brute_force_log_det(fn, x):
  """log|det J| of `fn` at each batch member of `x` `[B, ...]`, via the full Jacobian.

  `fn` maps `[1, *event_in]` to `[1, *event_out]`; the Jacobian is taken over
  the flattened event with `tf.GradientTape.jacobian`, and its log-determinant
  with `numpy.linalg.slogdet` (which also asserts it is square).
  """
  out = []
  for i in range(x.shape[0]):
    xi = tf.reshape(x[i], [-1])
    with tf.GradientTape() as tape:
      tape.watch(xi)
      yi = tf.reshape(fn(tf.reshape(xi, [1] + list(x.shape[1:]))), [-1])
    jac = tape.jacobian(yi, xi).numpy()
    assert jac.shape[0] == jac.shape[1], jac.shape
    sign, logdet = np.linalg.slogdet(jac)
    assert sign != 0
    out.append(logdet)
  return np.array(out)
