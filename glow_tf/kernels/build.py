"""Builds glow_tf's compiled CPU kernels: `python -m glow_tf.kernels.build`.

Compiles `conv3x3.cc` and `optimizer_update.cc` against the installed TensorFlow's headers into
`glow_tf/kernels/_glow_kernels.so` (see `glow_tf/kernels/__init__.py`). Needs
g++ (Debian: `apt-get install g++`), or the compiler named by `$CXX`. Rebuild
after upgrading TensorFlow. On a machine where the kernels cannot run (no
x86-64 with AVX2 and FMA) it builds nothing and says so; glow_tf then uses
TensorFlow's convolutions.
"""

import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile

from glow_tf import kernels

def compile_command(output):
  """The compiler command line (a list) that builds the library into `output`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  cxx = shlex.split(os.environ.get("CXX", "g++"))  # e.g. "ccache g++"
  return (cxx + ["-std=c++17", "-O3", "-mavx2", "-mfma", "-fPIC", "-shared", "-w", *kernels.SOURCES,
           "-o", output] + tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags())


def build(output=None):
  """Compiles the library; returns its path, or `None` where this CPU cannot run it.

  Raises:
    RuntimeError: the compiler is missing or fails (its output included).
  """
  output = output or kernels.library_path()
  if platform.machine() not in ("x86_64", "AMD64") or not kernels.cpu_can_run():
    return None
  compiler = compile_command(output)[0]
  if shutil.which(compiler) is None:
    raise RuntimeError(f"no C++ compiler {compiler!r} found: install g++ "
                       "(`apt-get install g++`) or set CXX, then run "
                       "`python -m glow_tf.kernels.build` again.")
  # Compile to a temporary file and rename, so a failed or interrupted build
  # never leaves a half-written library where the loader looks.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(output))
  os.close(fd)
  try:
    cmd = compile_command(tmp)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f"compiling {', '.join(kernels.SOURCES)} failed:\n{' '.join(cmd)}\n{result.stderr[-4000:]}")
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return output


def main():
  try:
    path = build()
  except (RuntimeError, OSError) as e:  # OSError: e.g. a read-only install
    print(f"glow_tf.kernels.build: {e}", file=sys.stderr)
    return 1
  if path is None:
    print("glow_tf.kernels.build: this CPU has no AVX2 + FMA; nothing built "
          "(glow_tf uses TensorFlow's convolutions).")
  else:
    print(f"glow_tf.kernels.build: built {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
