"""The code examples of the README and of docs/*.md run (the README's first is examples/custom_flow.py)."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                               for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _python_blocks(page="README.md"):
  with open(os.path.join(ROOT, page)) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), re.S)


BLOCKS = [(page, i) for page in PAGES for i in range(len(_python_blocks(page)))]


def _run(code):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env=env, timeout=300, cwd=ROOT)


def test_first_example_is_the_example_file():
  with open(os.path.join(ROOT, "examples", "custom_flow.py")) as f:
    assert _python_blocks()[0] in f.read()


@pytest.mark.parametrize("page, index", BLOCKS, ids=[f"{p}:{i}" for p, i in BLOCKS])
def test_python_block_runs(page, index):
  out = _run(_python_blocks(page)[index])
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip()  # every example prints what it shows
