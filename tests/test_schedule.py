"""The original's schedule, number for number: every row of docs/reproducing.md, the warmup, bad combinations."""

import math
import os
import re

import pytest
from absl import flags

from flags import glow_flags
from glow_tf import config as config_lib
from glow_tf import optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The original's defaults (openai/glow train.py's argparse).
ORIGINAL_DEFAULTS = dict(image_size=-1, anchor_size=32, n_batch_train=64, n_batch_init=256,
                         n_train=50000, epochs_warmup=10, polyak_epochs=1, lr=0.001)


def original_schedule(hps, n_gpus):
  """The five numbers as the original computes them (train.py, optim.py), written out.

  train.py: local_batch_train = n_batch_train * s * s // (image_size * image_size),
  local_batch_init likewise; train_its = ceil(n_train / (n_batch_train * hvd.size()));
  lr = hps.lr * min(1., n_processed / (n_train * epochs_warmup)) before each step,
  then n_processed += hvd.size() * n_batch_train. optim.py: beta2 = 1 - 1 / (train_its
  * polyak_epochs), also the ExponentialMovingAverage decay.
  """
  s = hps["anchor_size"]
  local_batch_train = hps["n_batch_train"] * s * s // (hps["image_size"] * hps["image_size"])
  local_batch_init = hps["n_batch_init"] * s * s // (hps["image_size"] * hps["image_size"])
  train_its = int(math.ceil(hps["n_train"] / (hps["n_batch_train"] * n_gpus)))
  rates, n_processed = [], 0
  while not rates or rates[-1] < hps["lr"]:
    rates.append(hps["lr"] * min(1., n_processed / (hps["n_train"] * hps["epochs_warmup"])))
    n_processed += n_gpus * hps["n_batch_train"]
  beta2 = 1 - 1. / (train_its * hps["polyak_epochs"])
  return dict(images_per_step=n_gpus * local_batch_train, steps_per_epoch=train_its,
              warmup_steps=len(rates) - 1, beta2=beta2, polyak_decay=beta2,
              init_images=local_batch_init, rates=rates)


def parse_original(command):
  """`--flag value` / `--flag=value` / `--switch` tokens of an original command, with its defaults."""
  hps = dict(ORIGINAL_DEFAULTS)
  tokens = command.replace("=", " ").split()
  for i, token in enumerate(tokens):
    if token.startswith("--"):
      name = token[2:]
      value = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].startswith("--") else "1"
      try:
        hps[name] = int(value)
      except ValueError:
        try:
          hps[name] = float(value)
        except ValueError:
          hps[name] = value
  return hps


def readme_rows():
  with open(os.path.join(ROOT, "docs", "reproducing.md")) as f:
    text = f.read()
  section = text[text.index("### From the original's commands to ours"):]
  section = section[:section.index("\n### ", 10)]
  rows = []
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 8 and cells[1].isdigit():
      rows.append(dict(run=cells[0], gpus=int(cells[1]), original=cells[2].strip("`"),
                       ours=cells[3].strip("`").split(), images=int(cells[4]),
                       steps=int(cells[5]), warmup=int(cells[6]), beta2=cells[7]))
  return rows


def ours_from_flags(argv):
  """What train.py computes from `argv`: its flags, its config, its schedule at the row's size."""
  values = flags.FlagValues()
  glow_flags.define_flags(values)
  values(["train.py"] + argv)
  return glow_flags.config_from_flags(values)


ROWS = readme_rows()


def test_the_readme_has_the_rows():
  assert len(ROWS) >= 8
  assert {"CIFAR-10", "ImageNet 64x64", "CelebA-HQ 256"} <= {r["run"] for r in ROWS}


@pytest.mark.parametrize("row", ROWS, ids=[r["run"] for r in ROWS])
def test_every_readme_row_reproduces_the_originals_schedule(row):
  hps = parse_original(row["original"])
  expected = original_schedule(hps, row["gpus"])
  config = ours_from_flags(row["ours"])
  size = config.data.image_size or hps["image_size"]  # (unset: the dataset's own, the row's)
  assert size == hps["image_size"]
  schedule = config.train.schedule(size, num_replicas=row["gpus"])
  assert schedule.images_per_step == expected["images_per_step"] == row["images"]
  assert schedule.steps_per_epoch == expected["steps_per_epoch"] == row["steps"]
  assert math.ceil(schedule.warmup_steps) == expected["warmup_steps"] == row["warmup"]
  assert schedule.beta2 == pytest.approx(expected["beta2"], rel=1e-12)
  assert row["beta2"] == f"1 - 1/{expected['steps_per_epoch']}"
  assert schedule.init_images == expected["init_images"]
  # The learning rate of every warmup step, as train.py's optimiser computes it.
  optimizer = optim.make_optimizer(config.train.optimizer, config.train.lr, config.train.beta1,
                                   schedule.warmup_steps, schedule.beta2)
  assert optimizer.beta2 == pytest.approx(expected["polyak_decay"], rel=1e-12)
  for k in sorted({0, 1, 2, len(expected["rates"]) // 2, len(expected["rates"]) - 2,
                   len(expected["rates"]) - 1}):
    assert float(optimizer.schedule(k + 1)) == pytest.approx(expected["rates"][k], rel=1e-9,
                                                             abs=1e-15), k
  # The model flags the row translates.
  for name in ("n_levels", "depth", "n_bits_x"):
    key = "n_level" if name == "n_levels" else name
    if key in hps:
      assert getattr(config.model, name) == hps[key], name
  if "flow_coupling" in hps:
    assert config.model.flow_coupling == config_lib.coupling_name(hps["flow_coupling"])
  assert config.model.learntop == ("learntop" in hps)


def test_the_design_cards_celeba_command_is_the_papers_one_gpu_schedule():
  config = ours_from_flags(["--dataset=celeba", "--n_levels=6"])
  schedule = config.train.schedule(256)
  expected = original_schedule(dict(ORIGINAL_DEFAULTS, image_size=256), 1)
  assert (schedule.images_per_step, schedule.init_images, schedule.steps_per_epoch) == (1, 4, 782)
  assert (expected["images_per_step"], expected["init_images"], expected["steps_per_epoch"]) == (
      1, 4, 782)
  assert "1 images of 256x256 a step (64 anchored at 32x32)" in schedule.describe()


def test_anchor_zero_counts_images_and_replicas_share_the_anchored_batch():
  plain = config_lib.TrainConfig(anchor_size=0, n_batch_train=24, n_batch_init=40)
  s = plain.schedule(64, num_replicas=2, num_train_examples=None)
  assert (s.images_per_step, s.init_images, s.anchor_size) == (24, 40, 64)
  # n_train=None: the training set's size.
  t = config_lib.TrainConfig(n_train=None, n_batch_train=64).schedule(32, num_train_examples=1000)
  assert (t.n_train, t.steps_per_epoch) == (1000, 16)
  # 16px: four times the images of the anchored count.
  assert config_lib.TrainConfig(n_batch_train=64).schedule(16).images_per_step == 256


@pytest.mark.parametrize("train, size, replicas, message", [
    (dict(n_batch_train=8), 256, 1, r"--n_batch_train=8 anchored at 32x32 is 0.125 images of "
     r"256x256: no image at all. Use --n_batch_train=64 or more"),
    (dict(n_batch_init=16), 256, 1, r"--n_batch_init=16 .* no image at all"),
    (dict(n_batch_train=64), 256, 2, r"per replica \(64 over 2 replicas\).*--n_batch_train=128"),
    (dict(n_batch_train=63), 32, 2, "not divisible by the 2 replicas"),
    (dict(), 28, 1, "--anchor_size=32 does not fit --image_size=28.*--anchor_size=28"),
    (dict(anchor_size=24), 32, 1, "--anchor_size=24 does not fit"),
])
def test_combinations_that_reproduce_nothing_say_what_would_work(train, size, replicas, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.TrainConfig(**train).schedule(size, num_replicas=replicas)


@pytest.mark.parametrize("argv, message", [
    (["--dataset=fashion_mnist", "--dal=2"], "--dal=2 .* CIFAR-10 .* for fashion_mnist use --dal=1"),
    (["--dal=3"], "must be 0, 1 or 2"),
    (["--image_size=256", "--n_levels=6", "--n_batch_train=8"], "no image at all"),
    (["--image_size=28", "--n_levels=2", "--dataset=fashion_mnist"], "--anchor_size=28"),
    (["--weight_decay=0"], "weight_decay must be in"),
])
def test_bad_flag_combinations_fail_before_any_data_is_read(argv, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    ours_from_flags(argv)


def test_augmentation_applies_where_the_original_applied_it():
  level = config_lib.augmentation_level
  assert [level(d, 1) for d in ("mnist", "fashion_mnist", "cifar10", "celeba", "folder")] == [
      1, 1, 1, 0, 0]
  assert level("cifar10", 2) == 2 and level("cifar10", 0) == 0
  assert re.search("dal", config_lib.DataConfig.__doc__)
