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
