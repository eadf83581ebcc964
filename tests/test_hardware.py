"""What `--precision=auto` picks: bfloat16 only where it is native and fast."""

import pytest
import tensorflow as tf

from glow_tf import hardware, nn

FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma{}\n"
CPU_ONLY = ()


@pytest.mark.parametrize("extra, precision", [
    (" avx512f amx_bf16 amx_tile", "mixed_bfloat16"),  # AMX
    (" avx512f avx512_bf16", "float32"),  # native bfloat16 vector instructions, no AMX
    ("", "float32"),  # AVX2 only: emulated
    (" no_amx_bf16x", "float32"),  # a flag that only contains the name
])
def test_auto_on_a_cpu_takes_bfloat16_only_with_amx(extra, precision):
  got, why = hardware.resolve_precision("auto", FLAGS.format(extra), CPU_ONLY)
  assert got == precision and why


@pytest.mark.parametrize("gpus, precision", [
    ([(8, 0)], "mixed_bfloat16"), ([(9, 0), (8, 6)], "mixed_bfloat16"),
    ([(7, 0)], "float32"), ([(7, 5)], "float32"),  # V100, T4: bfloat16 emulated
    ([(8, 0), (7, 5)], "float32"), ([None], "float32"),
])
def test_auto_with_gpus_takes_bfloat16_from_compute_capability_8(gpus, precision):
  # The CPU does not matter where there are GPUs.
  assert hardware.resolve_precision("auto", FLAGS.format(" amx_bf16"), gpus)[0] == precision


def test_unknown_cpu_keeps_float32_and_explicit_precisions_are_kept():
  assert hardware.resolve_precision("auto", "no flags line", CPU_ONLY) == (
      "float32", "this CPU's bfloat16 support is unknown")
  assert hardware.fast_bfloat16("no flags line", CPU_ONLY) is None
  assert hardware.resolve_precision("float32", FLAGS.format(" amx_bf16"), CPU_ONLY) == (
      "float32", "as asked")
  assert hardware.resolve_precision("mixed_bfloat16", FLAGS.format(""), CPU_ONLY)[0] == (
      "mixed_bfloat16")


@pytest.mark.parametrize("choice, dtype", [("mixed_bfloat16", tf.bfloat16), ("float32", None)])
def test_auto_in_a_layer_is_the_hardwares_choice(monkeypatch, choice, dtype):
  monkeypatch.setattr(hardware, "resolve_precision", lambda precision: (
      choice if precision == "auto" else precision, "stub"))
  assert nn.compute_dtype("auto") == dtype
  assert nn.compute_dtype("float32") is None
