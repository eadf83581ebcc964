#!/usr/bin/env bash
# Sets up glow-tf on a fresh clone: Debian's Fashion-MNIST files, a venv in .venv
# with the pinned requirements. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing Debian package dataset-fashion-mnist (offline Fashion-MNIST)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: no apt-get; get Fashion-MNIST's four IDX .gz files and pass --data_dir" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import sys; sys.exit(0 if open('requirements.txt').read() == open('.venv/.requirements-installed').read() else 1)" 2>/dev/null; then
  echo "setup: installing requirements.txt into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q --no-deps -e .
  cp requirements.txt .venv/.requirements-installed
fi

# glow_tf's compiled CPU kernels (glow_tf/kernels): faster training on x86-64
# CPUs with AVX2. Optional: without them glow_tf uses TensorFlow's ops.
KERNELS=glow_tf/kernels
if [ ! -f "$KERNELS/_glow_kernels.so" ] || [ -n "$(find $KERNELS -name '*.cc' -newer $KERNELS/_glow_kernels.so)" ] \
    || [ .venv/.requirements-installed -nt "$KERNELS/_glow_kernels.so" ]; then
  if ! command -v "${CXX:-g++}" >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing Debian package g++ (to build glow_tf's CPU kernels)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ >/dev/null
  fi
  echo "setup: building glow_tf's CPU kernels (about 20 s)"
  TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -m glow_tf.kernels.build \
    || echo "setup: WARNING: the kernels did not build; glow_tf will use TensorFlow's (slower) ops" >&2
fi
