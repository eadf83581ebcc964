"""Train Glow: `python train.py --dataset=fashion_mnist --n_levels=2 --depth=8 --width=128`.

Flags follow the original openai/glow train.py (`--problem` is `--dataset`);
see `python train.py --help` and docs/training.md. Training resumes from the latest
readable checkpoint in --logdir. SIGTERM or Ctrl-C stop it after the current
step with a checkpoint of that step: exit code 75 after SIGTERM, 130 after
SIGINT (2 for an error in the flags, the data or the run directory).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from flags import glow_flags  # noqa: E402

FLAGS = absl_flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from glow_tf import preemption, rundir, train_lib  # after parsing: --help needs no TensorFlow
  try:
    config = glow_flags.config_from_flags(FLAGS)
    trainer = train_lib.train_and_evaluate(config)
  except (ValueError, FileNotFoundError, train_lib.TrainingError, rundir.RunDirLocked) as e:
    print(f"train.py: error: {e}", file=sys.stderr)
    sys.exit(2)
  if trainer.stopped_by:  # a checkpoint of the last step is written: restart to continue
    sys.exit(preemption.EXIT_CODES.get(trainer.stopped_by, 75))


if __name__ == "__main__":
  glow_flags.run_app(main, glow_flags.define_flags, glow_flags)
