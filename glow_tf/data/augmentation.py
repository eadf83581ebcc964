"""The original's data augmentation (`--dal`), as TensorFlow image ops in the `tf.data` pipeline.

The original augmented MNIST and CIFAR-10 with Keras' `ImageDataGenerator`
(its `data_loaders/get_mnist_cifar.py`): level 1 shifts each image by up to
10% of its height and width, level 2 (CIFAR-10) also rotates it by up to 15
degrees, zooms each axis by up to 10%, shears it by up to 0.02 (radians, as
Keras read it in 2018) and flips it horizontally with probability 1/2.
Keras composed the transforms in that order (rotation, shift, shear, zoom)
about the image's centre, sampled bilinearly, extended the border with the
nearest pixel, and the original floored the result to uint8. This module does
the same with `ImageProjectiveTransformV3`.

Every draw is stateless, from a `[2]` seed that the pipeline derives from the
run's seed and the example's position in the training order, so a resumed
run augments exactly as an uninterrupted one, and any worker or replica count
gives the same images.
"""

import math
from typing import Callable, Dict

import tensorflow as tf

__all__ = ["augment", "augmenting", "transform_matrix"]

_STREAM = 0x6175  # folds the decode seed into the augmentation's own stream


def transform_matrix(draws: tf.Tensor, level: int, height: int, width: int) -> tf.Tensor:
  """The 3x3 matrix mapping output (row, col, 1) to input coordinates, as Keras built it.

  Args:
    draws: float32 `[7]` uniforms in [0, 1): rotation, row shift, column
      shift, shear, row zoom, column zoom (and the flip, not used here).
    level: 1 (shifts) or 2 (rotation, shifts, shear, zoom).
    height, width: the image's.
  """
  def uniform(u, low, high):
    return low + (high - low) * u
  tx = uniform(draws[1], -.1, .1) * height
  ty = uniform(draws[2], -.1, .1) * width
  one, zero = tf.ones([]), tf.zeros([])
  matrix = tf.stack([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
  if level >= 2:
    theta = uniform(draws[0], -15., 15.) * (math.pi / 180.)
    rotation = tf.stack([[tf.cos(theta), -tf.sin(theta), zero],
                         [tf.sin(theta), tf.cos(theta), zero], [zero, zero, one]])
    shear = uniform(draws[3], -.02, .02)
    shear_m = tf.stack([[one, -tf.sin(shear), zero], [zero, tf.cos(shear), zero],
                        [zero, zero, one]])
    zx, zy = uniform(draws[4], .9, 1.1), uniform(draws[5], .9, 1.1)
    zoom = tf.stack([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]])
    matrix = rotation @ matrix @ shear_m @ zoom
  # About the centre, as Keras' transform_matrix_offset_center.
  o_x, o_y = height / 2. + .5, width / 2. + .5
  offset = tf.constant([[1., 0., o_x], [0., 1., o_y], [0., 0., 1.]])
  reset = tf.constant([[1., 0., -o_x], [0., 1., -o_y], [0., 0., 1.]])
  return offset @ matrix @ reset


def augment(image: tf.Tensor, level: int, seed: tf.Tensor) -> tf.Tensor:
  """One augmented image.

  Args:
    image: uint8 `[height, width, channels]`.
    level: 0 (the image as it is), 1 or 2 (see the module docstring).
    seed: int `[2]` stateless seed.

  Returns:
    uint8 `[height, width, channels]`.
  """
  if level == 0:
    return image
  height, width = int(image.shape[0]), int(image.shape[1])
  draws = tf.random.stateless_uniform([7], seed=seed)
  m = transform_matrix(draws, level, height, width)
  # (row, col) matrix -> the op's (x = col, y = row): x_in = a0 x + a1 y + a2, y_in = b0 x + b1 y + b2.
  transform = tf.stack([m[1, 1], m[1, 0], m[1, 2], m[0, 1], m[0, 0], m[0, 2], 0., 0.])
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[None], transforms=transform[None],
      output_shape=tf.constant([height, width], tf.int32), fill_value=tf.zeros([]),
      interpolation="BILINEAR", fill_mode="NEAREST")[0]
  if level >= 2:
    out = tf.cond(draws[6] < .5, lambda: tf.reverse(out, axis=[1]), lambda: out)
  return tf.cast(tf.clip_by_value(tf.floor(out), 0., 255.), tf.uint8)


def augmenting(decode: Callable[[tf.Tensor, tf.Tensor], Dict[str, tf.Tensor]], level: int
               ) -> Callable[[tf.Tensor, tf.Tensor], Dict[str, tf.Tensor]]:
  """`decode(raw, seed)` followed by `augment` of its `image`, from a stream of the same seed."""
  if level == 0:
    return decode

  def decode_and_augment(raw, seed):
    example = decode(raw, seed)
    key = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), _STREAM)
    return dict(example, image=augment(example["image"], level, key))
  return decode_and_augment
