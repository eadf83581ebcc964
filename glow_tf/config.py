"""Configuration objects: the only place where defaults live.

Frozen dataclasses that validate themselves, so a bad value fails at
construction with a message naming it. `flags/glow_flags.py` builds them from
absl flags; library code only ever sees these objects. Defaults follow the
original's `train.py`.
"""

import dataclasses
import json
from typing import Optional, Tuple

from glow_tf import glow as glow_lib
from glow_tf import nn
from glow_tf.bijectors import flow_step

__all__ = ["ModelConfig"]


def _positive_int(owner, name, value):
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The Glow architecture and its data representation.

  Attributes:
    image_shape: `(H, W, C)` of the images. `H` and `W` must be divisible by
      `2**n_levels`.
    n_levels: number of levels `L` (`--n_levels`).
    depth: flow steps per level `K` (`--depth`).
    width: coupling network width (`--width`).
    flow_permutation: 0 reverse, 1 shuffle, 2 invertible 1x1 conv
      (`--flow_permutation`); names are accepted too.
    flow_coupling: 0 additive, 1 affine (`--flow_coupling`).
    lu_decomposed: LU form of the 1x1 convolutions.
    learntop: learn the top prior's mean and scale (`--learntop`).
    ycond: class-conditional top prior and classifier head (`--ycond`).
    n_classes: number of classes; required when `ycond` (taken from the
      dataset by the trainer).
    weight_y: weight of the classifier's loss in bits (`--weight_y`).
    n_bits_x: bits per colour channel kept (`--n_bits_x`), 1..8.
    recompute_gradients: backpropagate by reconstructing each flow step's
      input from its output instead of storing activations (constant
      activation memory in depth; costs about one extra forward pass).
    precision: `"float32"`, or `"mixed_bfloat16"`: coupling networks
      compute in bfloat16 with float32 weights (`--precision`).
    seed: seed of the random initialisation.
  """
  image_shape: Tuple[int, int, int] = (32, 32, 3)
  n_levels: int = 3
  depth: int = 32
  width: int = 512
  flow_permutation: object = 2
  flow_coupling: object = 0
  lu_decomposed: bool = False
  learntop: bool = False
  ycond: bool = False
  n_classes: Optional[int] = None
  weight_y: float = 0.0
  n_bits_x: int = 8
  recompute_gradients: bool = False
  precision: str = "float32"
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
    for name in ("n_levels", "depth", "width"):
      _positive_int("ModelConfig", name, getattr(self, name))
    glow_lib.level_shapes(self.image_shape, self.n_levels)  # raises on bad sizes
    flow_step.permutation_name(self.flow_permutation)
    flow_step.coupling_name(self.flow_coupling)
    if self.precision not in nn.PRECISIONS:
      raise ValueError(f"ModelConfig: precision must be one of {sorted(nn.PRECISIONS)}, "
                       f"got {self.precision!r}.")
    if isinstance(self.n_bits_x, bool) or not isinstance(self.n_bits_x, int) or not 1 <= self.n_bits_x <= 8:
      raise ValueError(f"ModelConfig: n_bits_x must be an integer in 1..8, got {self.n_bits_x!r}.")
    if self.ycond:
      if self.n_classes is None or self.n_classes < 2:
        raise ValueError(
            "ModelConfig: ycond=True needs n_classes >= 2 (a labelled dataset), "
            f"got n_classes={self.n_classes!r}.")
    if self.weight_y < 0:
      raise ValueError(f"ModelConfig: weight_y must be >= 0, got {self.weight_y!r}.")

  @property
  def n_bins(self):
    """Number of intensity levels per channel, `2**n_bits_x`."""
    return 2 ** self.n_bits_x

  @property
  def latent_shapes(self):
    """Per-level latent shapes: one per split, then the top."""
    return glow_lib.level_shapes(self.image_shape, self.n_levels)

  def to_json(self):
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"ModelConfig: unknown fields {sorted(unknown)}.")
    return cls(**d)
