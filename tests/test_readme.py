"""The README's code examples run (the first is examples/custom_flow.py)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks():
  with open(os.path.join(ROOT, "README.md")) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def _run(code):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=env, timeout=300, cwd=ROOT)


def test_first_example_is_the_example_file():
  with open(os.path.join(ROOT, "examples", "custom_flow.py")) as f:
    assert _python_blocks()[0] in f.read()


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_block_runs(index):
  out = _run(_python_blocks()[index])
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip()  # every example prints what it shows
