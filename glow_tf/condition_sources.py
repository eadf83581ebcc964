"""Where a conditional Glow's condition comes from: `lowres`, `gray`, `class`, `attributes` or any tensor.

`ModelConfig.condition` names the source; this module builds each source's
condition (its shape and checks: `glow_tf.config.condition_shape` and
`check_condition`):

* `lowres`: the image area-downsampled by `condition_factor`,
  `[H / f, W / f, C]` (super-resolution);
* `gray`: the image's luminance (ITU-R BT.601 weights), `[H, W, 1]`
  (colourisation; RGB images only);
* `class`: the one-hot label, `[n_classes]`;
* `attributes`: the image's binary attributes (CelebA's 40: the datasets'
  `attr`), `[40]`, as 0/1;
* `tensor`: any tensor the caller passes, of the configured
  `conditioning_shape` (library use).

Image conditions are built from the same quantised values the model sees,
at the centres of their bins (`n_bits_x`), in the model's `[-0.5, 0.5)`
range, deterministically: the same image always gives the same condition.
"""

from typing import Optional

import tensorflow as tf

__all__ = ["build"]

_LUMA = (0.299, 0.587, 0.114)


def build(condition: str, centres: tf.Tensor, factor: int, n_classes: Optional[int] = None,
          labels: Optional[tf.Tensor] = None, attributes: Optional[tf.Tensor] = None) -> tf.Tensor:
  """The condition of each image, float32 `[B] + conditioning_shape`.

  Args:
    condition: the source (not `none` or `tensor`, which have none to build).
    centres: float32 `[B, H, W, C]`: the images' bin centres in the model's
      space (`GlowModel` computes them from its `n_bits_x`).
    factor: `lowres`'s downsampling factor.
    n_classes: `class`'s number of classes.
    labels: int `[B]`, for `class`.
    attributes: `[B, 40]`, present where > 0 (the datasets' `attr`, +1/-1,
      or 0/1, or bool), for `attributes`.
  """
  if condition == "lowres":
    return tf.nn.avg_pool2d(centres, factor, factor, "VALID")
  if condition == "gray":
    return tf.reduce_sum(centres * tf.constant(_LUMA), -1, keepdims=True)
  if condition == "class":
    if labels is None:
      raise ValueError("condition 'class': the batch has no labels.")
    return tf.one_hot(tf.cast(labels, tf.int32), int(n_classes), dtype=tf.float32)
  if condition == "attributes":
    if attributes is None:
      raise ValueError("condition 'attributes': the batch has no attributes.")
    return tf.cast(tf.cast(attributes, tf.float32) > 0., tf.float32)
  raise ValueError(f"condition {condition!r} has nothing to build from images; pass the "
                   "conditioning tensor itself.")
