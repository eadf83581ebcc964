"""The configs, the flags that build them and the run directory: defaults, enums, old files."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest
from absl import flags

from flags import export_flags
from flags import glow_flags
from flags import sample_flags
from flags import score_flags
from glow_tf import config as config_lib
from glow_tf import rundir
from glow_tf.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shipped model's config.json as first written (glow-tf's first days' format).
OLD_CONFIG = os.path.join(ROOT, "tests", "old_config.json")


def parsed(define, argv):
  values = flags.FlagValues()
  define(values)
  values(["prog"] + list(argv))
  return values


def test_config_module_is_a_leaf_and_needs_no_tensorflow():
  code = ("import sys; import glow_tf.config, flags.glow_flags, flags.sample_flags; "
          "print(sorted(m for m in sys.modules if m.startswith(('glow_tf', 'tensorflow'))))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=60, check=True)
  assert out.stdout.strip() == "['glow_tf', 'glow_tf.config']"


def test_flag_defaults_are_the_config_defaults():
  config = glow_flags.config_from_flags(parsed(glow_flags.define_flags, []))
  assert config.data == DataConfig()
  assert config.train == TrainConfig()
  # The model's image shape is the data's, resolved later; everything else is the default.
  assert config.model.image_shape is None and not config.model.is_resolved
  assert dataclasses.replace(config.model, image_shape=ModelConfig().image_shape) == ModelConfig()
  assert ModelConfig().flow_permutation == "invconv" and ModelConfig().flow_coupling == "additive"


def test_flags_take_the_originals_integers_and_names():
  f = parsed(glow_flags.define_flags, ["--flow_permutation=0", "--flow_coupling=1",
                                       "--image_size=64", "--n_levels=4", "--n_test=7",
                                       "--train_subset=100", "--data_dir=~/x", "--ycond"])
  config = glow_flags.config_from_flags(f)
  assert (config.model.flow_permutation, config.model.flow_coupling) == ("reverse", "affine")
  assert (config.data.image_size, config.data.n_test, config.data.train_subset) == (64, 7, 100)
  assert config.data.data_dir == os.path.expanduser("~/x")
  assert config.model.ycond and config.model.n_classes is None  # classes come from the data
  named = glow_flags.config_from_flags(
      parsed(glow_flags.define_flags, ["--flow_permutation=shuffle", "--flow_coupling=additive"]))
  assert (named.model.flow_permutation, named.model.flow_coupling) == ("shuffle", "additive")


@pytest.mark.parametrize("argv, message", [
    (["--flow_permutation=3"], "unknown flow_permutation 3; use one of 0 = reverse"),
    (["--flow_coupling=affne"], "unknown flow_coupling 'affne'"),
    (["--image_size=28", "--n_levels=3"], r"not divisible by 2\^n_levels = 8"),
    (["--depth=0"], "depth must be a positive integer"),
    (["--lr=0"], "lr must be > 0"),
    (["--n_test=0"], "n_test must be a positive integer"),
    (["--time_budget_minutes=-1"], "time_budget_minutes must be > 0"),
])
def test_bad_flags_raise_config_errors_naming_them(argv, message):
  with pytest.raises(ConfigError, match=message):
    glow_flags.config_from_flags(parsed(glow_flags.define_flags, argv))


def test_resolve_for_data_completes_the_model():
  model = ModelConfig(image_shape=None, n_levels=2, ycond=True)
  resolved = config_lib.resolve_for_data(model, [32, 32, 1], 10)
  assert resolved.image_shape == (32, 32, 1) and resolved.n_classes == 10
  assert resolved.latent_shapes == [[16, 16, 2], [8, 8, 8]]
  with pytest.raises(ConfigError, match="--ycond needs labels, and dataset 'x' has none"):
    config_lib.resolve_for_data(model, [32, 32, 1], None, "dataset 'x'")
  with pytest.raises(ConfigError, match="not divisible"):
    config_lib.resolve_for_data(ModelConfig(image_shape=None, n_levels=3), [28, 28, 1], None)
  with pytest.raises(ConfigError, match="not known yet"):
    _ = model.latent_shapes
  # A class condition: its one-hot shape from the data's classes, which it needs.
  by_class = ModelConfig(image_shape=None, n_levels=2, condition="class")
  assert config_lib.resolve_for_data(by_class, [32, 32, 1], 10).conditioning_shape == (10,)
  with pytest.raises(ConfigError, match="--condition=class needs labels, and dataset 'x'"):
    config_lib.resolve_for_data(by_class, [32, 32, 1], None, "dataset 'x'")


def test_old_config_json_files_still_read():
  with open(OLD_CONFIG) as f:
    old = json.load(f)
  assert old["model"]["flow_permutation"] == 2 and "n_batch_train" in old["data"]
  config = RunConfig.from_dict(old)
  assert config.model.flow_permutation == "invconv" and config.model.flow_coupling == "affine"
  assert config.model.image_shape == (32, 32, 1) and config.data.train_subset is None
  assert config.train.n_batch_train == old["train"]["n_batch_train"]
  # Runs from before the original's augmentation and anchoring resume without them.
  assert config.data.dal == 0 and config.train.anchor_size == 0
  assert config.train.n_train == old["train"]["n_train"]
  # ... and rebuild the original's unbounded priors, with the spike guard on.
  assert config.model.prior_log_scale_bound == 0. and config.train.spike_guard
  assert RunConfig().data.dal == 1 and RunConfig().train.anchor_size == 32
  old["data"]["n_train"] = 640  # earlier versions' name of the subset
  assert RunConfig.from_dict(old).data.train_subset == 640
  assert RunConfig.from_json(config.to_json()) == config  # and the new files round-trip


@pytest.mark.parametrize("change, message", [
    (lambda d: d["model"].update(widht=3), r"\(model\): unknown field\(s\) widht for ModelConfig"),
    (lambda d: d["train"].update(lr2=1), r"\(train\): unknown field\(s\) lr2"),
    (lambda d: d.update(extra={}), r"unknown section\(s\) extra"),
    (lambda d: d.pop("train"), r"missing section\(s\) train"),
])
def test_from_dict_rejects_unknown_and_missing_fields_by_name(change, message):
  d = RunConfig().to_dict()
  change(d)
  with pytest.raises(ConfigError, match=message):
    RunConfig.from_dict(d)


def test_sample_flags_defaults_and_checks():
  config = sample_flags.config_from_flags(parsed(sample_flags.define_flags, []))
  assert dataclasses.replace(config, default_logdir=False) == config_lib.SampleConfig()
  assert config.default_logdir  # --logdir not given: the shipped model may be used
  f = parsed(sample_flags.define_flags, ["--temperature=0.5,0.9", "--logdir=x"])
  assert sample_flags.config_from_flags(f).temperatures == (0.5, 0.9)
  for argv, message in ((["--temperature=-1"], "temperature must be >= 0"),
                        (["--temperature=nan"], "temperature must be >= 0"),
                        (["--temperature=warm"], "not a number"),
                        (["--mode=manipulate"], "needs --attribute"),
                        (["--n_steps=1"], "n_steps must be an integer >= 2")):
    with pytest.raises(ConfigError, match=message):
      sample_flags.config_from_flags(parsed(sample_flags.define_flags, argv))


def test_train_and_score_share_the_download_flag():
  for define, config_of in ((glow_flags.define_flags, lambda c: c.data.download),
                            (score_flags.define_flags, lambda c: c.download)):
    module = sys.modules[define.__module__]
    assert config_of(module.config_from_flags(parsed(define, []))) is True
    assert config_of(module.config_from_flags(parsed(define, ["--nodownload"]))) is False
  train, score = parsed(glow_flags.define_flags, []), parsed(score_flags.define_flags, [])
  assert train["download"].help == score["download"].help and "--nodownload" in train["download"].help


# Measurements belong in docs/ and bench/, not in --help: numbers of seconds, speed ratios, etc.
MEASUREMENT = re.compile(r"measured|\d\s*x\b|\d\s*(s|seconds?|minutes?|ms)\b|bench/|RESULTS",
                         re.IGNORECASE)


@pytest.mark.parametrize("define", [glow_flags.define_flags, score_flags.define_flags,
                                    sample_flags.define_flags, export_flags.define_flags])
def test_flag_help_holds_no_measurements(define):
  values = parsed(define, [])
  found = {name: values[name].help for name in values
           if MEASUREMENT.search(values[name].help or "")}
  assert not found, found


def test_precision_help_says_what_each_choice_does():
  help_text = parsed(glow_flags.define_flags, [])["precision"].help
  for words in ("float32", "mixed_bfloat16", "auto", "AMX", "compute capability 8.0",
                "printed at start", "docs/performance.md"):
    assert words in help_text, words


def test_checks_shared_with_the_library():
  """The checks the library's classes also run (glow_tf.glow.Glow, glow_tf.optim), from config."""
  np = pytest.importorskip("numpy")
  assert config_lib.check_positive_int("Glow", "depth", np.int64(3)) == 3
  assert type(ModelConfig(depth=np.int64(3)).depth) is int  # stored as an int (config.json)
  for bad in (0, -1, 2.5, True, "3"):
    with pytest.raises(ConfigError, match="Glow: depth must be a positive integer"):
      config_lib.check_positive_int("Glow", "depth", bad)
  assert config_lib.check_positive_int("DataConfig", "n_test", None, optional=True) is None
  assert config_lib.check_n_classes("Glow", None) is None
  assert config_lib.check_n_classes("Glow", np.int32(10)) == 10
  with pytest.raises(ConfigError, match="Glow: n_classes must be unset"):
    config_lib.check_n_classes("Glow", 1)
  assert config_lib.check_optimizer("adam") == "adam"
  with pytest.raises(ConfigError, match="optimizer must be one of adamax, adam; got 'sgd'"):
    TrainConfig(optimizer="sgd")
  with pytest.raises(ConfigError, match="optimizer must be one of adamax, adam; got 'sgd'"):
    config_lib.check_optimizer("sgd")
  assert config_lib.check_weight_decay(1) == 1.
  for bad in (0., 1.5, float("nan")):
    with pytest.raises(ConfigError, match=r"weight_decay must be in \(0, 1\]"):
      config_lib.check_weight_decay(bad)
  with pytest.raises(ConfigError, match=r"weight_decay must be in \(0, 1\]"):
    TrainConfig(weight_decay=0.)


# ---- The run directory ----------------------------------------------------------------------


def test_run_dir_layout_and_config_round_trip(tmp_path):
  run = rundir.RunDir(str(tmp_path / "run"))
  assert not run.has_config() and run.latest_checkpoint() is None
  config = RunConfig(model=ModelConfig(image_shape=(8, 8, 1), n_levels=2))
  run.write_config(config)
  assert run.read_config() == config
  assert os.listdir(run.path) == ["config.json"]  # no temporary file left behind
  run.append_log("train", {"step": 1})
  run.append_log("train", {"step": 2})
  with open(run.log_path("train")) as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2]
  assert run.samples_path(12).endswith("samples_step00000012.png")
  assert run.checkpoint_dir == os.path.join(run.path, "checkpoints")


def test_invalid_config_json_names_the_file(tmp_path):
  run = rundir.RunDir(str(tmp_path))
  with open(run.config_path, "w") as f:
    f.write('{"model": ')
  with pytest.raises(ConfigError, match=f"{run.config_path} is not valid JSON"):
    run.read_config()
  with pytest.raises(rundir.NoCheckpointError, match="no config.json"):
    rundir.RunDir(str(tmp_path / "none")).read_config()


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
  path = str(tmp_path / "f.txt")
  rundir.atomic_write(path, "old")

  with pytest.raises(TypeError):
    rundir.atomic_write(path, 12345)  # not bytes or str: the write fails
  with open(path) as f:
    assert f.read() == "old"
  assert os.listdir(tmp_path) == ["f.txt"]


def test_resolve_checkpoint_errors(tmp_path):
  assert rundir.resolve_checkpoint(str(tmp_path)) is None
  with pytest.raises(rundir.NoCheckpointError, match="does not exist"):
    rundir.resolve_checkpoint(str(tmp_path), str(tmp_path / "ckpt-3"))
  with pytest.raises(rundir.NoCheckpointError, match="no checkpoint in --restore_path"):
    rundir.resolve_checkpoint(str(tmp_path), str(tmp_path))
