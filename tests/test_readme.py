"""The README's code examples are the files in examples/, and they run."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks():
  with open(os.path.join(ROOT, "README.md")) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_readme_example_is_the_example_file_and_runs():
  with open(os.path.join(ROOT, "examples", "custom_flow.py")) as f:
    example = f.read()
  blocks = _python_blocks()
  assert blocks and blocks[0] in example
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "custom_flow.py")],
                       capture_output=True, text=True, env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "nats/image:" in out.stdout and "(2, 8, 8, 1)" in out.stdout
