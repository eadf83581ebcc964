"""What `--precision=auto` picks on this machine, and why.

bfloat16 pays for its rounding only where the hardware computes in it
natively and fast: CPUs with AMX (Intel Xeon from Sapphire Rapids on), and
GPUs of compute capability 8.0 or newer (Ampere on), whose tensor cores
take bfloat16. Elsewhere it is emulated (AVX2 CPUs; V100, T4) or gains too
little for its rounding (AVX-512 BF16 without AMX), and `auto` keeps float32.
The measurements behind the rule are in docs/performance.md.
"""

from typing import Optional, Sequence, Set, Tuple

import tensorflow as tf

__all__ = ["cpu_flags", "gpu_compute_capabilities", "fast_bfloat16", "resolve_precision"]

# The oldest GPU generation with bfloat16 tensor cores (Ampere).
_BFLOAT16_GPU = (8, 0)


def cpu_flags(cpuinfo: Optional[str] = None) -> Optional[Set[str]]:
  """The CPU's feature flags (a `set` of `str`), or `None` where unknown.

  Args:
    cpuinfo: the text of `/proc/cpuinfo` (read when `None`).
  """
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    except OSError:
      return None
  for line in cpuinfo.splitlines():
    if line.startswith("flags"):
      return set(line.split(":", 1)[1].split())
  return None


def gpu_compute_capabilities() -> Tuple[Optional[Tuple[int, int]], ...]:
  """The compute capability `(major, minor)` of each visible GPU (`None` where TensorFlow does not say)."""
  return tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability")
               for gpu in tf.config.list_physical_devices("GPU"))


def fast_bfloat16(cpuinfo: Optional[str] = None,
                  gpus: Optional[Sequence[Optional[Tuple[int, int]]]] = None) -> Optional[bool]:
  """Whether this machine runs bfloat16 natively and fast: `True`, `False` or `None` (unknown).

  Args:
    cpuinfo: the text of `/proc/cpuinfo` (read when `None`).
    gpus: the GPUs' compute capabilities (`gpu_compute_capabilities()` when
      `None`; pass `()` for a CPU-only machine). With GPUs, the answer is theirs.
  """
  gpus = gpu_compute_capabilities() if gpus is None else tuple(gpus)
  if gpus:
    if any(cc is None for cc in gpus):
      return None
    return all(tuple(cc) >= _BFLOAT16_GPU for cc in gpus)
  flags = cpu_flags(cpuinfo)
  return None if flags is None else "amx_bf16" in flags


def resolve_precision(precision: str, cpuinfo: Optional[str] = None,
                      gpus: Optional[Sequence[Optional[Tuple[int, int]]]] = None) -> Tuple[str, str]:
  """`"auto"` -> `"mixed_bfloat16"` where `fast_bfloat16()`, else `"float32"`; others as they are.

  Args:
    precision: one of `glow_tf.config.PRECISIONS`.
    cpuinfo, gpus: as `fast_bfloat16`'s.

  Returns:
    (the precision, a few words on why).
  """
  if precision != "auto":
    return precision, "as asked"
  gpus = gpu_compute_capabilities() if gpus is None else tuple(gpus)
  fast = fast_bfloat16(cpuinfo, gpus)
  if gpus:
    if fast:
      return "mixed_bfloat16", "GPUs of compute capability 8.0 or newer run bfloat16 natively"
    if fast is None:
      return "float32", "a GPU's compute capability is unknown"
    return "float32", "a GPU older than compute capability 8.0 emulates bfloat16"
  if fast:
    return "mixed_bfloat16", "this CPU has AMX: bfloat16 convolutions run several times faster"
  if fast is None:
    return "float32", "this CPU's bfloat16 support is unknown"
  return "float32", "this CPU has no AMX (bfloat16 would be emulated or gain too little)"
