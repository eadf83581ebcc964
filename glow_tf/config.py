"""Every configuration of glow-tf, in one leaf module: what a run is made of.

Frozen dataclasses that validate themselves, so a bad value fails at
construction with a message naming it:

* `ModelConfig`: the architecture and its data representation;
* `DataConfig`: which data, and how much of it;
* `TrainConfig`: optimisation, schedule and output;
* `RunConfig`: the three together, what `train.py` runs and writes to
  `config.json`;
* `SampleConfig`: what `sample.py` draws;
* `ExportConfig`: what `export.py` exports.

This module imports nothing else of `glow_tf`: the library and the flags both
read it. Each default is defined once, on its dataclass field (the flags read
it from there with `default_of`), and each enum is normalised once, here: the
original's integers (`--flow_permutation=2`, `--flow_coupling=0`) become
names (`"invconv"`, `"additive"`) at construction.

A run's model config is complete only when the data is known: the image shape
and the number of classes come from the dataset. Flags give a `ModelConfig`
with `image_shape=None`; `resolve_for_data` completes it, in one explicit
step, and `GlowModel` refuses an incomplete one.
"""

import dataclasses
import json
import math
import numbers
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

__all__ = ["ARCHITECTURE_FIELDS", "AUGMENTED_DATASETS", "CONDITIONS", "COUPLINGS", "DATASETS",
           "DEQUANTIZATIONS", "DEQUANT_SAMPLINGS",
           "IMAGE_CONDITIONS", "N_ATTRIBUTES", "check_condition", "check_conditioning_shape",
           "condition_shape",
           "NONFINITE_POLICIES", "OPTIMIZERS", "PERMUTATIONS", "PRECISIONS", "SAMPLE_MODES",
           "SCORE_OUTPUT_EXTENSIONS", "RESUMABLE_FIELDS", "STRATEGIES", "ConfigError",
           "DataConfig", "ExportConfig", "ModelConfig", "RunConfig", "SampleConfig",
           "ScoreConfig", "Schedule", "TrainConfig", "augmentation_level", "check_latents_path",
           "check_log_scale_bound", "check_n_classes", "check_n_dequant_samples",
           "check_optimizer", "check_positive_int", "check_spike_guard",
           "check_replica_divisible", "check_score_output", "check_split", "check_temperature",
           "check_weight_decay", "coupling_name", "default_of", "level_shapes",
           "permutation_name", "resolve_for_data", "resume_differences", "with_architecture_of"]

PERMUTATIONS = ("reverse", "shuffle", "invconv")  # the original's --flow_permutation 0, 1, 2
COUPLINGS = ("additive", "affine")  # the original's --flow_coupling 0, 1
PRECISIONS = ("float32", "mixed_bfloat16", "auto")  # auto: resolved for the hardware
OPTIMIZERS = ("adamax", "adam")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
NONFINITE_POLICIES = ("stop", "rollback")
# score.py's --output: CSV, JSON lines (one record a line) or JSON (one document: a list of records).
SCORE_OUTPUT_EXTENSIONS = (".csv", ".jsonl", ".json")
DATASETS = ("mnist", "fashion_mnist", "cifar10", "imagenet32", "imagenet64", "celeba",
            "lsun", "folder")
SAMPLE_MODES = ("sample", "reconstruct", "interpolate", "manipulate", "conditional")


class ConfigError(ValueError):
  """A configuration value is invalid; the message names it and what would work."""


T = TypeVar("T")


# ---- Checks written once ------------------------------------------------------------


def _enum_name(kind: str, names: Sequence[str], value: Any) -> str:
  """Maps an index (int or digit string, the original's flags) or a name to the name."""
  if isinstance(value, str) and value.strip().isdigit():
    value = int(value)
  if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
    return names[value]
  if isinstance(value, str) and value in names:
    return value
  choices = ", ".join(f"{i} = {n}" for i, n in enumerate(names))
  raise ConfigError(f"unknown {kind} {value!r}; use one of {choices}.")


def permutation_name(value: Any) -> str:
  """The original's `--flow_permutation` (0, 1, 2, or a name) as a name of `PERMUTATIONS`."""
  return _enum_name("flow_permutation", PERMUTATIONS, value)


def coupling_name(value: Any) -> str:
  """The original's `--flow_coupling` (0, 1, or a name) as a name of `COUPLINGS`."""
  return _enum_name("flow_coupling", COUPLINGS, value)


def check_temperature(value: float) -> float:
  """A sampling temperature (the standard deviation of the latents): a number >= 0."""
  try:
    t = float(value)
  except (TypeError, ValueError):
    raise ConfigError(f"temperature {value!r} is not a number.") from None
  if not t >= 0:  # also rejects NaN
    raise ConfigError(f"temperature must be >= 0, got {value}.")
  return t


def check_positive_int(owner: str, name: str, value: Any, optional: bool = False) -> Optional[int]:
  """`value` as an `int` when it is a positive integer (or `None` when `optional`).

  Python and numpy integers pass; `bool`s and floats do not.

  Raises:
    ConfigError: "<owner>: <name> must be a positive integer, got <value>."
  """
  if optional and value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    unset = " or unset" if optional else ""
    raise ConfigError(f"{owner}: {name} must be a positive integer{unset}, got {value!r}.")
  return int(value)


def check_n_classes(owner: str, value: Any) -> Optional[int]:
  """A number of classes: `None` (unconditional) or an integer >= 2, as an `int`."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
    raise ConfigError(f"{owner}: n_classes must be unset (None) or an integer >= 2, got "
                      f"{value!r}.")
  return int(value)


def check_log_scale_bound(owner: str, value: Any) -> float:
  """A prior log-scale bound: 0 (none, the original's) or a positive number, as a float."""
  if (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0
      or not math.isfinite(value)):
    raise ConfigError(f"{owner}: prior_log_scale_bound must be 0 (unbounded) or > 0, "
                      f"got {value!r}.")
  return float(value)


def check_spike_guard(threshold: Any, warmup: Any) -> Tuple[float, int]:
  """The spike guard's threshold (> 0) and warm-up in applied steps (an integer >= 0)."""
  if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not threshold > 0:
    raise ConfigError(f"spike_threshold must be > 0, got {threshold!r}.")
  if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral) or warmup < 0:
    raise ConfigError(f"spike_warmup_steps must be an integer >= 0, got {warmup!r}.")
  return float(threshold), int(warmup)


def check_optimizer(kind: Any) -> str:
  """The name of an optimizer of `OPTIMIZERS` (`TrainConfig.optimizer`, `GlowOptimizer`'s `kind`)."""
  if kind not in OPTIMIZERS:
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {kind!r}.")
  return kind


def check_weight_decay(value: Any) -> float:
  """The original's multiplicative weight decay, in (0, 1] (1: none), as a float."""
  if not 0 < value <= 1:  # also rejects NaN
    raise ConfigError(f"weight_decay must be in (0, 1] (1: none), got {value!r}.")
  return float(value)


def check_split(split: Any, flag: str = "--split") -> str:
  """A split score.py reads: `"train"` or `"test"` (`flag` names it in the message)."""
  if split not in ("train", "test"):
    raise ConfigError(f"{flag} must be train or test, got {split!r}.")
  return split


def check_n_dequant_samples(value: Any) -> int:
  """score.py's `K`, the dequantisation draws per image: an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ConfigError(f"--n_dequant_samples must be an integer >= 1, got {value!r}.")
  return int(value)


def check_score_output(path: str) -> str:
  """score.py's `--output`: a file name ending in one of `SCORE_OUTPUT_EXTENSIONS`."""
  if not path.endswith(SCORE_OUTPUT_EXTENSIONS):
    raise ConfigError(f"--output {path!r}: use a .csv, .jsonl (JSON lines) or .json file name.")
  return path


def check_latents_path(path: str) -> str:
  """score.py's `--latents`: an `.npz` file name."""
  if not path.endswith(".npz"):
    raise ConfigError(f"--latents {path!r}: use an .npz file name.")
  return path


def check_replica_divisible(batch_size: int, num_replicas: int, name: str) -> int:
  """The per-replica share of a global batch; raises when the replicas do not divide it."""
  if batch_size % num_replicas:
    raise ConfigError(f"{name}={batch_size} is not divisible by the {num_replicas} replicas; "
                      "use a multiple of the number of devices.")
  return batch_size // num_replicas


# The datasets the original augmented (its get_mnist_cifar.py), and the
# highest level each takes; Fashion-MNIST is MNIST-like.
AUGMENTED_DATASETS = {"mnist": 1, "fashion_mnist": 1, "cifar10": 2}


def augmentation_level(dataset: str, dal: int) -> int:
  """The augmentation level applied to `dataset`'s training images for `--dal=dal`.

  The original augmented MNIST and CIFAR-10 only (level 2 is CIFAR-10's), so
  any other dataset gets 0 whatever `dal` says, as there.

  Raises:
    ConfigError: `dal` is not 0, 1 or 2, or 2 for a dataset other than CIFAR-10.
  """
  if dal not in (0, 1, 2) or isinstance(dal, bool):
    raise ConfigError(f"dal (data augmentation level) must be 0, 1 or 2, got {dal!r}.")
  if dal == 2 and dataset != "cifar10":
    raise ConfigError(f"--dal=2 (flips, rotations, zoom, shear) is the original's CIFAR-10 "
                      f"augmentation; for {dataset} use --dal=1 (shifts) or --dal=0.")
  return min(dal, AUGMENTED_DATASETS.get(dataset, 0))


def level_shapes(image_shape: Sequence[int], n_levels: int) -> List[List[int]]:
  """Per-level latent shapes `[height, width, channels]`: one per split, then the top.

  Raises:
    ConfigError: when the image cannot be squeezed `n_levels` times.
  """
  image_shape = [int(d) for d in image_shape]
  if len(image_shape) != 3 or min(image_shape) < 1:
    raise ConfigError(f"image_shape must be [height, width, channels], got {image_shape}.")
  if isinstance(n_levels, bool) or not isinstance(n_levels, numbers.Integral) or n_levels < 1:
    raise ConfigError(f"n_levels must be a positive int, got {n_levels!r}.")
  n_levels = int(n_levels)
  h, w, c = image_shape
  f = 2 ** n_levels
  if h % f or w % f:
    fits = [n for n in range(1, 12) if h % 2 ** n == 0 and w % 2 ** n == 0]
    hint = (f"use n_levels <= {max(fits)}" if fits else
            "resize or pad the image to a multiple of 2")
    raise ConfigError(
        f"image size {h}x{w} is not divisible by 2^n_levels = {f} "
        f"(n_levels={n_levels}): {hint}, or choose an --image_size divisible by {f}.")
  shapes = []
  for level in range(n_levels):
    h, w, c = h // 2, w // 2, c * 4
    if level < n_levels - 1:
      shapes.append([h, w, c // 2])
      c = c // 2
  shapes.append([h, w, c])
  return shapes


def _positive_int(obj: Any, owner: str, field: str, optional: bool = False,
                  label: Optional[str] = None) -> None:
  """Checks the frozen dataclass `obj`'s field `field` (`check_positive_int`) and stores it as an `int`."""
  value = check_positive_int(owner, label or field, getattr(obj, field), optional)
  object.__setattr__(obj, field, value)


def _one_of(owner: str, name: str, value: Any, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ConfigError(f"{owner}: {name} must be one of {', '.join(allowed)}; got {value!r}.")


def default_of(cls: type, name: str) -> Any:
  """The default of field `name` of dataclass `cls` (what the flags default to)."""
  for f in dataclasses.fields(cls):
    if f.name == name:
      if f.default is not dataclasses.MISSING:
        return f.default
      if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
      raise KeyError(f"{cls.__name__}.{name} has no default")
  raise KeyError(f"{cls.__name__} has no field {name!r}")


def _from_mapping(cls: Type[T], values: Mapping[str, Any], where: str,
                  renamed: Optional[Mapping[str, Optional[str]]] = None) -> T:
  """Builds dataclass `cls` from `values`, rejecting unknown keys by name.

  `renamed` maps keys that earlier versions wrote to their field now
  (`None`: a key dropped because another config holds it).
  """
  values = dict(values)
  for old, new in (renamed or {}).items():
    if old in values:
      v = values.pop(old)
      if new is not None and new not in values:
        values[new] = v
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__}; "
                      f"known fields: {', '.join(sorted(known))}.")
  return cls(**values)


# ---- The architecture ---------------------------------------------------------------


CONDITIONS = ("none", "lowres", "gray", "class", "attributes", "tensor")
DEQUANTIZATIONS = ("uniform", "variational")
# How q's flow maps noise to logits (glow_tf.dequantization): "encode", its encoding
# direction (contracting: the default); "generate", the first version's (it can overflow).
DEQUANT_SAMPLINGS = ("encode", "generate")
IMAGE_CONDITIONS = ("lowres", "gray")
N_ATTRIBUTES = 40  # CelebA's binary attributes


def check_conditioning_shape(where: str, conditioning_shape: Optional[Sequence[int]]
                             ) -> Optional[List[int]]:
  """`None`, or the condition's event shape `[K]` or `[h, w, K]` as ints; raises on anything else."""
  if conditioning_shape is None:
    return None
  try:
    shape = [int(d) for d in conditioning_shape]
  except (TypeError, ValueError):
    shape = None
  if shape is None or len(shape) not in (1, 3) or min(shape) < 1:
    raise ConfigError(
        f"{where}: conditioning_shape must be [K] (a vector) or [h, w, K] (an image or "
        f"feature map) of positive sizes, got {conditioning_shape!r}.")
  return shape


def check_condition(condition: str, image_shape: Optional[Sequence[int]], factor: int,
                    given_shape: Optional[Sequence[int]] = None, where: str = "ModelConfig") -> None:
  """Raises ConfigError, naming the fix, for a condition that cannot be built for these images.

  (Whether the data has the labels `class` needs, or the attributes
  `attributes` needs, is checked where the data is known.)
  """
  if condition not in CONDITIONS:
    raise ConfigError(f"{where}: condition must be one of {', '.join(CONDITIONS)}, got {condition!r}.")
  if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
    raise ConfigError(f"{where}: condition_factor must be a positive int, got {factor!r}.")
  if condition == "tensor" and given_shape is None:
    raise ConfigError(f"{where}: condition='tensor' needs conditioning_shape ([K] or [h, w, K]).")
  if image_shape is None:
    return
  h, w, c = (int(d) for d in image_shape)
  if condition == "lowres" and (factor < 2 or h % factor or w % factor):
    raise ConfigError(
        f"{where}: condition='lowres' needs a condition_factor >= 2 that divides the image "
        f"size {h}x{w}, got {factor}; pick a divisor (e.g. 2 or 4) or another --image_size.")
  if condition == "gray" and c != 3:
    raise ConfigError(
        f"{where}: condition='gray' (colourisation) needs RGB images; these have {c} "
        "channel(s). Use another condition, e.g. lowres.")


def condition_shape(condition: str, image_shape: Sequence[int], factor: int,
                    n_classes: Optional[int], given_shape: Optional[Sequence[int]] = None
                    ) -> Optional[Tuple[int, ...]]:
  """The condition's event shape (after `check_condition`).

  `None` for `none`, and for `class` before the classes are known.
  """
  h, w, c = (int(d) for d in image_shape)
  if condition == "none":
    return None
  if condition == "lowres":
    return (h // factor, w // factor, c)
  if condition == "gray":
    return (h, w, 1)
  if condition == "class":
    return None if n_classes is None else (int(n_classes),)
  if condition == "attributes":
    return (N_ATTRIBUTES,)
  return tuple(int(d) for d in given_shape)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The Glow architecture and its data representation (the original's defaults).

  Attributes:
    image_shape: `(height, width, channels)` of the images, both sides
      divisible by `2**n_levels`; `None` until the data is known (see
      `resolve_for_data`).
    n_levels: number of levels `L` (`--n_levels`).
    depth: flow steps per level `K` (`--depth`).
    width: coupling network width (`--width`).
    flow_permutation: `"reverse"`, `"shuffle"` or `"invconv"` (the
      original's 0, 1, 2 are accepted and normalised).
    flow_coupling: `"additive"` or `"affine"` (the original's 0, 1).
    lu_decomposed: LU form of the 1x1 convolutions.
    learntop: learn the top prior's mean and scale (`--learntop`).
    ycond: class-conditional top prior and classifier head (`--ycond`).
    n_classes: number of classes; required with `ycond` (from the dataset).
    weight_y: weight of the classifier's loss in bits (`--weight_y`).
    n_bits_x: bits per colour channel kept (`--n_bits_x`), 1..8.
    recompute_gradients: backpropagate by reconstructing each flow step's
      input from its output instead of storing activations (constant
      activation memory in depth; costs about one extra forward pass).
    precision: `"float32"`, or `"mixed_bfloat16"`: coupling networks
      compute in bfloat16 with float32 weights (`--precision`); `"auto"`:
      `mixed_bfloat16` where bfloat16 is native and fast (a CPU with AMX, a
      GPU of compute capability 8.0 or newer), else `float32`
      (`glow_tf.hardware.resolve_precision`; train.py saves the choice).
    seed: seed of the random initialisation.
    prior_log_scale_bound: `0` (the original's priors: unbounded), or `b > 0`:
      the priors' (split and learned top) log-scales are soft-clamped to
      `b * tanh(log_scale / b)`, in `(-b, b)` (`--prior_log_scale_bound`).
    condition: what a conditional Glow is conditioned on (`--condition`):
      `"none"` (the original's model), `"lowres"`, `"gray"`, `"class"`,
      `"attributes"` (built from each image or its labels, see
      `glow_tf.condition_sources`), or `"tensor"`: any tensor of
      `conditioning_shape` the caller passes.
    condition_factor: `lowres`'s downsampling factor (`--condition_factor`).
    condition_width: the conditioning network's feature channels
      (`--condition_width`).
    conditioning_shape: the condition's event shape; derived from the data
      for the named sources, given for `"tensor"`.
    dequantization: `"uniform"` (the original's noise) or `"variational"`:
      a learned noise distribution `q(u | x)` trained with the model
      (`glow_tf.dequantization`; `--dequantization`).
    dequant_depth, dequant_width: the depth and width of `q`'s conditional
      Glow (`--dequant_depth`, `--dequant_width`).
    dequant_sampling: which direction of `q`'s flow maps its noise to
      logits: `"encode"` (new runs) or `"generate"` (runs whose config.json
      predates the field; it can overflow float32, see
      `glow_tf.dequantization`).
  """
  image_shape: Optional[Tuple[int, int, int]] = (32, 32, 3)
  n_levels: int = 3
  depth: int = 32
  width: int = 512
  flow_permutation: str = "invconv"
  flow_coupling: str = "additive"
  lu_decomposed: bool = False
  learntop: bool = False
  ycond: bool = False
  n_classes: Optional[int] = None
  weight_y: float = 0.0
  n_bits_x: int = 8
  recompute_gradients: bool = False
  precision: str = "float32"
  seed: int = 0
  prior_log_scale_bound: float = 0.
  condition: str = "none"
  condition_factor: int = 4
  condition_width: int = 16
  conditioning_shape: Optional[Tuple[int, ...]] = None
  dequantization: str = "uniform"
  dequant_depth: int = 4
  dequant_width: int = 32
  dequant_sampling: str = "encode"

  def __post_init__(self):
    if self.image_shape is not None:
      object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
    for name in ("n_levels", "depth", "width"):
      _positive_int(self, "ModelConfig", name)
    if self.image_shape is not None:
      level_shapes(self.image_shape, self.n_levels)  # raises on bad sizes
    object.__setattr__(self, "flow_permutation", permutation_name(self.flow_permutation))
    object.__setattr__(self, "flow_coupling", coupling_name(self.flow_coupling))
    _one_of("ModelConfig", "precision", self.precision, PRECISIONS)
    if isinstance(self.n_bits_x, bool) or not isinstance(self.n_bits_x, int) or not 1 <= self.n_bits_x <= 8:
      raise ConfigError(f"ModelConfig: n_bits_x must be an integer in 1..8, got {self.n_bits_x!r}.")
    object.__setattr__(self, "n_classes", check_n_classes("ModelConfig", self.n_classes))
    if self.ycond and self.image_shape is not None and self.n_classes is None:
      raise ConfigError("ModelConfig: ycond=True needs n_classes >= 2 (a labelled dataset).")
    if self.condition == "class" and self.image_shape is not None and self.n_classes is None:
      raise ConfigError("ModelConfig: condition='class' needs n_classes >= 2 (a labelled "
                        "dataset).")
    if not self.weight_y >= 0:
      raise ConfigError(f"ModelConfig: weight_y must be >= 0, got {self.weight_y!r}.")
    check_log_scale_bound("ModelConfig", self.prior_log_scale_bound)
    _positive_int(self, "ModelConfig", "condition_width")
    _one_of("ModelConfig", "dequantization", self.dequantization, DEQUANTIZATIONS)
    for name in ("dequant_depth", "dequant_width"):
      _positive_int(self, "ModelConfig", name)
    _one_of("ModelConfig", "dequant_sampling", self.dequant_sampling, DEQUANT_SAMPLINGS)
    given = self.conditioning_shape if self.condition == "tensor" else None
    check_condition(self.condition, self.image_shape, self.condition_factor, given)
    if self.condition == "tensor":
      shape = tuple(check_conditioning_shape("ModelConfig", given))
    elif self.image_shape is not None:
      shape = condition_shape(self.condition, self.image_shape, self.condition_factor,
                              self.n_classes, given)
    else:
      shape = None
    object.__setattr__(self, "conditioning_shape", shape)

  @property
  def is_conditional(self) -> bool:
    """Whether the model is a conditional Glow (`condition` other than `"none"`)."""
    return self.condition != "none"

  @property
  def is_resolved(self) -> bool:
    """Whether the data-dependent fields (image shape, classes) are set."""
    return self.image_shape is not None

  @property
  def n_bins(self) -> int:
    """Number of intensity levels per channel, `2**n_bits_x`."""
    return 2 ** self.n_bits_x

  @property
  def latent_shapes(self) -> List[List[int]]:
    """Per-level latent shapes `[height, width, channels]`: one per split, then the top."""
    if self.image_shape is None:
      raise ConfigError("ModelConfig: the image shape is not known yet (resolve_for_data).")
    return level_shapes(self.image_shape, self.n_levels)


def resolve_for_data(model: ModelConfig, image_shape: Sequence[int],
                     n_classes: Optional[int], dataset: str = "the dataset",
                     attribute_names: Optional[Sequence[str]] = None) -> ModelConfig:
  """The model config completed with what the data says: the image shape and classes.

  Raises:
    ConfigError: the architecture does not fit the images, or `ycond` asks
      for labels the data does not have.
  """
  if model.ycond and not n_classes:
    raise ConfigError(f"--ycond needs labels, and {dataset} has none.")
  if model.condition == "class" and not n_classes:
    raise ConfigError(f"--condition=class needs labels, and {dataset} has none.")
  if model.condition == "attributes" and len(attribute_names or ()) != N_ATTRIBUTES:
    raise ConfigError(f"--condition=attributes needs CelebA's {N_ATTRIBUTES} attributes (TFDS "
                      f"celeb_a, or the original's shards with `attr`), and {dataset} has none.")
  labelled = model.ycond or model.condition == "class"
  return dataclasses.replace(model, image_shape=tuple(int(d) for d in image_shape),
                             n_classes=n_classes if labelled else model.n_classes)


# What a model restored from another run or an export (train.py --restore_path) takes
# from that run's config.json rather than from the flags (plus `seed`, which fixes
# the shuffle permutations).
ARCHITECTURE_FIELDS = ("n_levels", "depth", "width", "flow_permutation", "flow_coupling",
                       "lu_decomposed", "learntop", "ycond", "n_bits_x", "prior_log_scale_bound",
                       "condition", "condition_factor", "condition_width", "dequantization",
                       "dequant_depth", "dequant_width", "dequant_sampling")


def with_architecture_of(saved: ModelConfig, model: ModelConfig, given: Sequence[str] = (),
                         where: str = "the saved config.json") -> ModelConfig:
  """`model` with the architecture (`ARCHITECTURE_FIELDS` and `seed`) of `saved`.

  Args:
    saved: the model config of the run (or export) being restored.
    model: the new run's, from its flags.
    given: the fields the user set explicitly; they must agree with `saved`.
    where: the file `saved` was read from, for the message.

  Raises:
    ConfigError: a field in `given` differs from `saved` (each one listed).
  """
  conflicts = [f"--{name}={getattr(model, name)!r} but {getattr(saved, name)!r}"
               for name in ARCHITECTURE_FIELDS
               if name in given and getattr(model, name) != getattr(saved, name)]
  if conflicts:
    raise ConfigError(
        f"--restore_path's model is defined by {where}, which these flags contradict: "
        f"{'; '.join(conflicts)} there. Drop those flags (the architecture is read from "
        "there), or train from scratch without --restore_path.")
  return dataclasses.replace(model, seed=saved.seed, conditioning_shape=saved.conditioning_shape,
                             **{name: getattr(saved, name) for name in ARCHITECTURE_FIELDS})


# ---- The data -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data and how much of it (`--dataset`, `--data_dir`, ... of train.py).

  Batch sizes and the seed are the training run's (`TrainConfig`): the data
  pipelines receive them as arguments.

  Attributes:
    dataset: one of `DATASETS`.
    data_dir: TFDS data dir, directory of IDX files, image folder, or root of
      OpenAI's TFRecord shards. `None`: TFDS's default and Debian's
      Fashion-MNIST.
    category: LSUN category (`dataset="lsun"`), e.g. `bedroom`.
    image_size: square output size; `None` for the dataset's own (32 for
      padded MNIST-likes, CIFAR-10 and ImageNet32, 64 for ImageNet64, 256 for
      CelebA-HQ, 64 for CelebA, LSUN and folders; the shards' resolution).
    pad_to_32: pad 28x28 MNIST-likes to 32x32 when `image_size` is unset.
    train_subset: use only the first `train_subset` training examples
      (`None`: all; `--train_subset`).
    n_test: use only the first `n_test` test examples (`None`: all).
    shuffle_buffer: examples in the training shuffle buffer.
    holdout_fraction: test fraction of an image folder without `test/`.
    download: let TFDS download and prepare data that is not prepared yet
      (`--download`/`--nodownload`); it first checks, within a few seconds,
      that the download host can be reached, and fails at once if not.
    dal: the original's data augmentation level (`--dal`): 0 none; 1 random
      shifts of up to 10% of the width and height; 2 (CIFAR-10 only) adds
      horizontal flips, rotations of up to 15 degrees, 10% zoom and 0.02
      shear. Applied, as the original did, to MNIST, Fashion-MNIST and
      CIFAR-10 training images only (`augmentation_level`).
  """
  dataset: str = "cifar10"
  data_dir: Optional[str] = None
  category: Optional[str] = None
  image_size: Optional[int] = None
  pad_to_32: bool = True
  train_subset: Optional[int] = None
  n_test: Optional[int] = None
  shuffle_buffer: int = 10000
  holdout_fraction: float = 0.05
  download: bool = True
  dal: int = 1

  def __post_init__(self):
    if self.dataset not in DATASETS:
      raise ConfigError(f"unknown dataset {self.dataset!r}; valid names: {', '.join(DATASETS)}.")
    object.__setattr__(self, "data_dir",
                       os.path.expanduser(str(self.data_dir)) if self.data_dir else None)
    object.__setattr__(self, "category", self.category or None)
    for name in ("image_size", "train_subset", "n_test"):
      _positive_int(self, "DataConfig", name, optional=True)
    _positive_int(self, "DataConfig", "shuffle_buffer")
    if not 0 < self.holdout_fraction < 1:
      raise ConfigError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction!r}.")
    if self.dataset == "lsun" and not self.category:
      raise ConfigError("dataset lsun needs --category (e.g. bedroom, church_outdoor, tower).")
    if self.dataset == "folder" and not self.data_dir:
      raise ConfigError("dataset folder needs --data_dir, a directory of images.")
    augmentation_level(self.dataset, self.dal)  # checks it
    if (self.dataset in ("mnist", "fashion_mnist") and self.image_size == 32
        and not self.pad_to_32):
      raise ConfigError("image_size=32 pads the 28x28 images: drop pad_to_32=False, or use "
                        "image_size=28.")


# ---- Training -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, schedule and output settings (defaults from the original's `train.py`).

  Attributes:
    logdir: output directory: checkpoints, logs, samples, config.json.
    restore_path: a checkpoint (prefix or directory) to start from; when
      empty, training resumes from the latest checkpoint in `logdir` if any.
    optimizer: `"adamax"` or `"adam"`.
    lr: base learning rate.
    beta1: Adam(ax) beta1.
    weight_decay: the original's multiplicative weight decay: each update
      is `w <- weight_decay * w - step` (1: none, the original's default).
    epochs: number of epochs to train; an epoch is `n_train` anchored images.
    epochs_warmup: epochs of linear learning-rate warmup.
    polyak_epochs: sets beta2 and the Polyak averaging decay
      (`1 - 1/(steps_per_epoch * polyak_epochs)`).
    anchor_size: the original's `--anchor_size`: the batch sizes and
      `n_train` count images of `anchor_size x anchor_size`, so a step takes
      `n_batch_train * anchor_size^2 // image_size^2` images (`Schedule`);
      0: they count images at any size.
    n_train: anchored images per epoch (the original's 50000); `None`: the
      size of the training set.
    n_batch_train: anchored global training batch (all replicas together).
    n_batch_test: global test batch, in images.
    n_batch_init: anchored images for the data-dependent actnorm
      initialisation (the original's per-GPU batch: it kept worker 0's).
    epochs_full_valid: epochs between evaluations on the full test set.
    epochs_full_sample: epochs between sample grids.
    n_sample: samples per temperature (columns of the sample grid).
    seed: seeds data order, dequantisation noise and the init batch.
    strategy: `"auto"`, `"default"`, `"mirrored"` or `"multi_worker"`.
    jit_compile: XLA-compile the per-replica loss and gradient computation.
    max_steps: stop after this many steps in total (`None`: no limit).
    time_budget_minutes: stop after this much training time in this run.
    checkpoint_every_minutes: minutes between checkpoints (also at epoch
      ends and at the end of the run).
    keep_checkpoints: checkpoints to keep.
    log_every_steps: steps between log lines / TensorBoard points.
    quick_valid_batches: test batches for the quick estimate logged every epoch.
    max_nonfinite_steps: consecutive skipped (non-finite) steps before the
      `nonfinite_policy` acts.
    nonfinite_policy: `"rollback"` (the default): restore the last
      checkpoint, multiply the learning rate by `rollback_lr_factor` and go
      on, at most `max_rollbacks` times in a run; or `"stop"` the run then.
    rollback_lr_factor: the learning-rate factor of a rollback, in (0, 1).
    max_rollbacks: rollbacks allowed before the run stops.
    spike_guard: skip a step whose loss or gradient norm is far outside the
      run's recent ones, as a non-finite step is (`glow_tf.spike_guard`).
    spike_threshold: how far: in mean absolute deviations of the recent
      steps' loss and log gradient norm (see `glow_tf.spike_guard`).
    spike_warmup_steps: applied steps before the guard skips any.
  """
  logdir: str = "./logs"
  restore_path: str = ""
  optimizer: str = "adamax"
  lr: float = 0.001
  beta1: float = 0.9
  weight_decay: float = 1.
  epochs: int = 1000000
  epochs_warmup: float = 10.
  polyak_epochs: float = 1.
  anchor_size: int = 32
  n_train: Optional[int] = 50000
  n_batch_train: int = 64
  n_batch_test: int = 50
  n_batch_init: int = 256
  epochs_full_valid: int = 50
  epochs_full_sample: int = 50
  n_sample: int = 8
  seed: int = 0
  strategy: str = "auto"
  jit_compile: bool = False
  max_steps: Optional[int] = None
  time_budget_minutes: Optional[float] = None
  checkpoint_every_minutes: float = 10.
  keep_checkpoints: int = 3
  log_every_steps: int = 50
  quick_valid_batches: int = 10
  max_nonfinite_steps: int = 20
  nonfinite_policy: str = "rollback"
  rollback_lr_factor: float = 0.5
  max_rollbacks: int = 3
  spike_guard: bool = True
  spike_threshold: float = 10.
  spike_warmup_steps: int = 50

  def __post_init__(self):
    check_optimizer(self.optimizer)
    _one_of("TrainConfig", "nonfinite_policy", self.nonfinite_policy, NONFINITE_POLICIES)
    if not 0 < self.rollback_lr_factor < 1:
      raise ConfigError(f"rollback_lr_factor must be in (0, 1), got {self.rollback_lr_factor!r}.")
    _positive_int(self, "TrainConfig", "max_rollbacks")
    check_spike_guard(self.spike_threshold, self.spike_warmup_steps)
    _one_of("TrainConfig", "strategy", self.strategy, STRATEGIES)
    for name in ("epochs", "n_batch_train", "n_batch_test", "n_batch_init",
                 "epochs_full_valid", "epochs_full_sample", "n_sample",
                 "keep_checkpoints", "log_every_steps", "max_nonfinite_steps"):
      _positive_int(self, "TrainConfig", name)
    for name in ("n_train", "max_steps"):
      _positive_int(self, "TrainConfig", name, optional=True)
    if not self.lr > 0:
      raise ConfigError(f"lr must be > 0, got {self.lr!r}.")
    check_weight_decay(self.weight_decay)
    if not (isinstance(self.anchor_size, int) and self.anchor_size >= 0):
      raise ConfigError(f"anchor_size must be a positive image size, or 0 to count batches in "
                        f"images at any size; got {self.anchor_size!r}.")
    if not 0 <= self.beta1 < 1:
      raise ConfigError(f"beta1 must be in [0, 1), got {self.beta1!r}.")
    if not (self.epochs_warmup >= 0 and self.polyak_epochs > 0):
      raise ConfigError("epochs_warmup must be >= 0 and polyak_epochs > 0, got "
                        f"{self.epochs_warmup!r} and {self.polyak_epochs!r}.")
    if self.quick_valid_batches < 0:
      raise ConfigError(f"quick_valid_batches must be >= 0, got {self.quick_valid_batches!r}.")
    if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
      raise ConfigError(f"time_budget_minutes must be > 0 or unset, got "
                        f"{self.time_budget_minutes!r}.")
    if not self.checkpoint_every_minutes > 0:
      raise ConfigError(f"checkpoint_every_minutes must be > 0, got "
                        f"{self.checkpoint_every_minutes!r}.")
    if not self.logdir:
      raise ConfigError("logdir must be a directory path.")

  def schedule(self, image_size: int, num_replicas: int = 1,
               num_train_examples: Optional[int] = None) -> "Schedule":
    """The run's schedule at `image_size` on `num_replicas` replicas (see `Schedule`).

    Args:
      image_size: the images' height (and width).
      num_replicas: replicas in sync (all GPUs of all workers).
      num_train_examples: the training set's size, needed only when
        `n_train` is `None`.

    Raises:
      ConfigError: an anchor that does not fit the image size, an anchored
        batch of no image per replica, or replicas that do not divide it.
    """
    return Schedule.of(self, image_size, num_replicas, num_train_examples)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The original's per-resolution schedule (its `train.py` and `optim.py`), from `TrainConfig.schedule`.

  The batch flags are anchored at `anchor_size` (`a`): at image size `s`
  each of the `R` replicas takes `(n_batch_train / R) * a^2 // s^2` images a
  step (the original's per-GPU rounding) and the init batch is
  `n_batch_init * a^2 // s^2` images. An epoch is `n_train` anchored images:
  `ceil(n_train / n_batch_train)` steps. The learning rate of the step
  after `k` steps is `lr * min(1, k * n_batch_train / (n_train *
  epochs_warmup))` (the original counts the anchored images processed before
  the step: its first step has rate 0), and `beta2 = 1 - 1 / (steps_per_epoch
  * polyak_epochs)` is Adam's beta2 and the Polyak decay. The original's
  `--n_batch_train` is per GPU, ours the total over all replicas: its `mpiexec
  -n N ... --n_batch_train=B` is ours `--n_batch_train=N*B`, and its init
  batch (worker 0's, broadcast) is ours `--n_batch_init` as it is.

  Attributes:
    image_size: `s`.
    anchor_size: `a` (equal to `s` when the config's is 0).
    num_replicas: replicas the batch is split over.
    anchored_batch: `n_batch_train`, in anchored images.
    images_per_step: the global batch in images.
    init_images: images of the data-dependent initialisation.
    n_train: anchored images per epoch.
    steps_per_epoch: the original's `train_its`.
    warmup_steps: steps until the learning rate is full (fractional: the
      rate of the step after `k` steps is `lr * min(1, k / warmup_steps)`).
    polyak_steps: `steps_per_epoch * polyak_epochs`.
    beta2: Adam's beta2 and the Polyak averaging decay, `1 - 1 / polyak_steps`.
  """
  image_size: int
  anchor_size: int
  num_replicas: int
  anchored_batch: int
  images_per_step: int
  init_images: int
  n_train: int
  steps_per_epoch: int
  warmup_steps: float
  polyak_steps: float
  beta2: float

  @classmethod
  def of(cls, train: "TrainConfig", image_size: int, num_replicas: int = 1,
         num_train_examples: Optional[int] = None) -> "Schedule":
    """`TrainConfig.schedule`'s implementation."""
    s = int(image_size)
    a = train.anchor_size or s
    if s % a and a % s:
      raise ConfigError(
          f"--anchor_size={a} does not fit --image_size={s}: one must divide the other (the "
          f"batch sizes are scaled by (anchor/size)^2). Use --anchor_size={s} (or 0) to count "
          f"the batches in {s}x{s} images.")

    def too_small(n, flag, replicas):
      per = "" if replicas == 1 else f" per replica ({n} over {replicas} replicas)"
      share = n // replicas
      return ConfigError(
          f"--{flag}={n} anchored at {a}x{a} is {share * a * a / (s * s):g} images of {s}x{s}"
          f"{per}: no image at all. Use --{flag}={replicas * -(-(s * s) // (a * a))} or more "
          f"({'1 image a step' if flag == 'n_batch_train' else '1 image'}"
          f"{' per replica' if replicas > 1 else ''}), or --anchor_size={s} to "
          f"count in {s}x{s} images.")
    if train.n_batch_train % num_replicas:
      raise ConfigError(
          f"--n_batch_train={train.n_batch_train} is not divisible by the {num_replicas} "
          f"replicas (each replica takes an equal share, the original's per-GPU batch); use a "
          f"multiple of {num_replicas}.")
    # As the original per GPU: each replica's anchored share, rounded down to whole images.
    per_replica = (train.n_batch_train // num_replicas) * a * a // (s * s)
    if per_replica < 1:
      raise too_small(train.n_batch_train, "n_batch_train", num_replicas)
    images_per_step = per_replica * num_replicas
    init_images = train.n_batch_init * a * a // (s * s)  # worker 0's, as the original
    if init_images < 1:
      raise too_small(train.n_batch_init, "n_batch_init", 1)
    n_train = train.n_train if train.n_train is not None else num_train_examples
    if n_train is None:
      raise ConfigError("n_train=None means the training set's size: pass num_train_examples.")
    steps_per_epoch = max(1, math.ceil(n_train / train.n_batch_train))
    return cls(image_size=s, anchor_size=a, num_replicas=num_replicas,
               anchored_batch=train.n_batch_train, images_per_step=images_per_step,
               init_images=init_images, n_train=n_train, steps_per_epoch=steps_per_epoch,
               warmup_steps=n_train * train.epochs_warmup / train.n_batch_train,
               polyak_steps=steps_per_epoch * train.polyak_epochs,
               beta2=1. - 1. / max(steps_per_epoch * train.polyak_epochs, 1.))

  def describe(self) -> str:
    """One line with the five numbers a reproduction must match."""
    anchor = (f" ({self.anchored_batch} anchored at {self.anchor_size}x{self.anchor_size})"
              if self.anchor_size != self.image_size else "")
    return (f"schedule: {self.images_per_step} images of {self.image_size}x{self.image_size} a "
            f"step{anchor} on {self.num_replicas} replica(s), {self.steps_per_epoch} steps per "
            f"epoch of {self.n_train} anchored images, warmup {math.ceil(self.warmup_steps)} "
            f"steps, beta2 = Polyak decay = 1 - 1/{self.polyak_steps:g}, init on {self.init_images} "
            "images")


# ---- A run --------------------------------------------------------------------------

# Keys that config.json files of earlier versions hold, and where they went.
_LEGACY_DATA_KEYS = {"n_train": "train_subset", "n_batch_train": None, "n_batch_test": None,
                     "n_batch_init": None, "seed": None}


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a training run needs: data, model and training settings (`config.json`)."""
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

  def to_dict(self) -> Dict[str, Dict[str, Any]]:
    return {"data": dataclasses.asdict(self.data), "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train)}

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=list)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "RunConfig":
    """Reads `to_dict`'s output, and the `config.json` files earlier versions wrote.

    Raises:
      ConfigError: a missing section or an unknown field, named.
    """
    if not isinstance(d, Mapping):
      raise ConfigError(f"{where}: expected a JSON object with data, model and train.")
    unknown = sorted(set(d) - {"data", "model", "train"})
    if unknown:
      raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}; expected data, "
                        "model and train.")
    missing = [k for k in ("data", "model", "train") if k not in d]
    if missing:
      raise ConfigError(f"{where}: missing section(s) {', '.join(missing)}.")
    model = dict(d["model"])
    # Variational runs written before `dequant_sampling` existed sample q generating.
    model.setdefault("dequant_sampling", "generate" if model.get("dequantization") == "variational"
                     else "encode")
    if model.get("image_shape") is not None:
      model["image_shape"] = tuple(model["image_shape"])
    # Runs written before `dal` and `anchor_size` existed trained without
    # augmentation and with batches counted in images: they resume so.
    data = dict(d["data"])
    data.setdefault("dal", 0)
    train = dict(d["train"])
    train.setdefault("anchor_size", 0)
    return cls(_from_mapping(DataConfig, data, f"{where} (data)", _LEGACY_DATA_KEYS),
               _from_mapping(ModelConfig, model, f"{where} (model)"),
               _from_mapping(TrainConfig, train, f"{where} (train)"))

  @classmethod
  def from_json(cls, text: str, where: str = "config") -> "RunConfig":
    """Parses `to_json`'s output; an invalid file raises `ConfigError` naming `where`."""
    try:
      values = json.loads(text)
    except ValueError as e:
      raise ConfigError(f"{where} is not valid JSON ({e}); restore it from a backup or "
                        "retrain into a new --logdir.") from None
    return cls.from_dict(values, where)


# What a resumed run may change: when to stop, how often to report, where and
# on what hardware it runs, the learning rate, and the recompute-for-memory
# switch (the same function). Everything else defines the model, its data or
# its optimisation and must match the run's config.json.
RESUMABLE_FIELDS = {
    "data": frozenset({"data_dir", "download"}),
    "model": frozenset({"recompute_gradients"}),
    "train": frozenset({"logdir", "restore_path", "lr", "epochs", "max_steps",
                        "time_budget_minutes", "checkpoint_every_minutes", "keep_checkpoints",
                        "log_every_steps", "quick_valid_batches", "max_nonfinite_steps",
                        "epochs_full_valid", "epochs_full_sample", "n_sample", "n_batch_test",
                        "strategy", "jit_compile", "nonfinite_policy", "rollback_lr_factor",
                        "max_rollbacks", "spike_guard", "spike_threshold",
                        "spike_warmup_steps"}),
}


def resume_differences(saved: RunConfig, new: RunConfig) -> List[Tuple[str, Any, Any]]:
  """The fields a resume may not change (see `RESUMABLE_FIELDS`) that differ: `(name, saved, new)`."""
  out = []
  for section in ("data", "model", "train"):
    a, b = dataclasses.asdict(getattr(saved, section)), dataclasses.asdict(getattr(new, section))
    for name in a:
      if name not in RESUMABLE_FIELDS[section] and a[name] != b[name]:
        out.append((f"{section}.{name}", a[name], b[name]))
  return out


# ---- Sampling -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """What sample.py draws (`flags/sample_flags.py` documents each field)."""
  mode: str = "sample"
  logdir: str = "./logs"
  restore_path: str = ""
  temperatures: Tuple[float, ...] = (0.7,)
  n_samples: int = 8
  seed: int = 0
  output: str = ""
  label: Optional[str] = None
  images: Tuple[str, ...] = ()
  n_steps: int = 9
  attribute: Optional[str] = None
  scales: Tuple[float, ...] = (-1.5, -1., -.5, 0., .5, 1., 1.5)
  n_direction_examples: int = 2000
  data_dir: Optional[str] = None
  polyak: Optional[bool] = None  # None: the weights with the better test bits/dim
  zoom: int = 0
  default_logdir: bool = False  # the user did not choose --logdir: fall back to the shipped model
  n_conditions: int = 4
  attributes: Tuple[str, ...] = ()

  def __post_init__(self):
    _one_of("sample.py", "--mode", self.mode, SAMPLE_MODES)
    if not self.temperatures:
      raise ConfigError("--temperature needs at least one value.")
    object.__setattr__(self, "temperatures",
                       tuple(check_temperature(t) for t in self.temperatures))
    object.__setattr__(self, "images", tuple(self.images))
    object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
    object.__setattr__(self, "attributes", tuple(self.attributes))
    for name in ("n_samples", "n_direction_examples", "n_conditions"):
      _positive_int(self, "sample.py", name, label=f"--{name}")
    if isinstance(self.n_steps, bool) or not isinstance(self.n_steps, int) or self.n_steps < 2:
      raise ConfigError(f"--n_steps must be an integer >= 2, got {self.n_steps!r}.")
    if self.zoom < 0:
      raise ConfigError(f"--zoom must be >= 0 (0: automatic), got {self.zoom}.")
    if self.mode == "manipulate" and self.attribute is None:
      raise ConfigError("--mode=manipulate needs --attribute (e.g. Smiling, or a class name).")
    if self.mode == "interpolate" and self.images and len(self.images) != 2:
      raise ConfigError(f"--mode=interpolate takes two --images, got {len(self.images)}.")


# ---- Scoring ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
  """What score.py scores and writes (`flags/score_flags.py` documents each field).

  The images are a dataset split (`dataset`, `data_dir`, `split`; by default
  the model's own dataset) or `images` (files, folders, globs); the
  out-of-distribution set, if any, likewise (`ood_*`).
  """
  logdir: str = "./logs"
  restore_path: str = ""
  polyak: Optional[bool] = None  # None: the weights with the better test bits/dim
  dataset: Optional[str] = None
  data_dir: Optional[str] = None
  split: str = "test"
  images: Tuple[str, ...] = ()
  max_images: Optional[int] = None
  ood_dataset: Optional[str] = None
  ood_data_dir: Optional[str] = None
  ood_split: str = "test"
  ood_images: Tuple[str, ...] = ()
  output: str = ""
  latents: str = ""
  histogram: str = ""
  overwrite: bool = False
  n_dequant_samples: int = 1
  dequantization: str = ""  # "": the model's; "uniform": uniform draws for any model
  batch_size: int = 100
  seed: int = 0
  typicality_batch: int = 10
  typicality_train_images: int = 2000
  strategy: str = "auto"
  download: bool = True
  default_logdir: bool = False  # the user did not choose --logdir: fall back to the shipped model

  def __post_init__(self):
    object.__setattr__(self, "images", tuple(self.images))
    object.__setattr__(self, "ood_images", tuple(self.ood_images))
    for name in ("dataset", "ood_dataset"):
      value = getattr(self, name)
      if value is not None and value not in DATASETS:
        raise ConfigError(f"--{name}: unknown dataset {value!r}; valid names: {', '.join(DATASETS)}.")
    if self.dataset and self.images:
      raise ConfigError("give --dataset or --images, not both.")
    if self.ood_dataset and self.ood_images:
      raise ConfigError("give --ood_dataset or --ood_images, not both.")
    for name in ("split", "ood_split"):
      check_split(getattr(self, name), f"--{name}")
    object.__setattr__(self, "n_dequant_samples", check_n_dequant_samples(self.n_dequant_samples))
    if self.dequantization:
      _one_of("score.py", "--dequantization", self.dequantization, DEQUANTIZATIONS)
    for name in ("batch_size", "typicality_batch", "typicality_train_images"):
      _positive_int(self, "score.py", name, label=f"--{name}")
    _positive_int(self, "score.py", "max_images", optional=True, label="--max_images")
    _one_of("score.py", "--strategy", self.strategy, STRATEGIES)
    if self.output:
      check_score_output(self.output)
    if self.latents:
      check_latents_path(self.latents)
    if self.histogram and not self.histogram.endswith(".png"):
      raise ConfigError(f"--histogram {self.histogram!r}: use a .png file name.")

  @property
  def has_ood(self) -> bool:
    return bool(self.ood_dataset or self.ood_images)


# ---- Exporting ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """What export.py exports and where (`flags/export_flags.py` documents each field).

  `polyak=None` leaves the choice of weights to `glow_tf.sampling.load_model`'s
  default: of a training checkpoint's raw and Polyak-averaged weights, the
  ones with the better test bits/dim in the run's latest evaluation (the
  Polyak-averaged ones when the checkpoint holds no evaluation;
  `glow_tf.sampling.weights_choice`). `True`/`False` force the averaged/the
  raw weights.
  """
  logdir: str = "./logs"
  restore_path: str = ""
  output: str = ""  # default: <logdir>/export
  polyak: Optional[bool] = None
  overwrite: bool = False

  def __post_init__(self):
    if not (self.logdir or self.restore_path):
      raise ConfigError("export.py needs --logdir or --restore_path.")
    if self.polyak not in (None, True, False):
      raise ConfigError(f"--polyak must be true, false or unset, got {self.polyak!r}.")

  @property
  def output_dir(self) -> str:
    """Where the SavedModel goes: `output`, else `<logdir>/export`."""
    return self.output or os.path.join(self.logdir, "export")
