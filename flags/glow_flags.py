"""train.py's flags: the original's names and defaults, plus ours; and their config.

`define_flags()` is called only by the entry points (never on import), and
`config_from_flags(FLAGS)` turns the parsed values into a validated
`glow_tf.config.RunConfig`; the library never reads flags. Every default is
read from the config dataclasses (`glow_tf.config.default_of`), where it is
defined once. This module imports only `glow_tf.config`, which needs no
TensorFlow, so `--help` answers at once.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from glow_tf import config as config_lib
from glow_tf.config import DataConfig, ModelConfig, TrainConfig, default_of

__all__ = ["define_flags", "config_from_flags", "define_checkpoint_flags", "define_download_flag",
           "run_app"]


def run_app(main, define, flag_module):
  """Defines the flags, answers --help (exit 0) and runs `main` under absl.

  Args:
    main: the entry point's `main(argv)`.
    define: the function defining the flags.
    flag_module: the module defining them (its flags are listed by --help).
  """
  define()
  help_flags = ("--help", "-h", "--helpshort", "-?", "--helpfull")
  if any(a in help_flags for a in sys.argv[1:]):
    flags.FLAGS.mark_as_parsed()
    print((sys.modules["__main__"].__doc__ or "").strip() + "\n")
    print(flags.FLAGS.module_help(flag_module) if "--helpfull" not in sys.argv
          else flags.FLAGS.get_help())
    sys.exit(0)
  logging.set_verbosity(logging.WARNING)
  app.run(main)


def define_checkpoint_flags(config_cls: type, flag_values: flags.FlagValues, module_name: str,
                            weights_help: str = "the") -> None:
  """`--restore_path` and `--[no]polyak`, as every entry point that loads a trained model has them.

  Args:
    config_cls: the entry point's config dataclass (the defaults).
    flag_values: where to define them.
    module_name: the flag module they belong to (its `--help` lists them).
    weights_help: how the polyak help starts ("the", or e.g. "export the").
  """
  flags.DEFINE_string(
      "restore_path", default_of(config_cls, "restore_path"),
      "A checkpoint prefix or directory (overrides --logdir), e.g. logs/checkpoints/ckpt-1200; "
      "best: --logdir's checkpoint with the best full test bits/dim.", flag_values=flag_values,
      module_name=module_name)
  flags.DEFINE_boolean(
      "polyak", default_of(config_cls, "polyak"),
      f"--polyak / --nopolyak: {weights_help} Polyak-averaged / the raw weights of a training "
      "checkpoint; default: the ones with the better test bits/dim in the run's latest "
      "evaluation.", flag_values=flag_values, module_name=module_name)


def define_download_flag(config_cls: type, flag_values: flags.FlagValues, module_name: str) -> None:
  """`--[no]download`, as every entry point that reads a dataset has it (train.py, score.py).

  Args:
    config_cls: the dataclass with the `download` default (`DataConfig`, `ScoreConfig`).
    flag_values: where to define it.
    module_name: the flag module it belongs to (its `--help` lists it).
  """
  flags.DEFINE_boolean(
      "download", default_of(config_cls, "download"),
      "Let TFDS download and prepare a dataset that is not prepared yet. One connection to the "
      "download host is tried first (a few seconds at most): without network access the run "
      "stops at once, saying how to get the data (e.g. --data_dir with the data prepared). "
      "--nodownload: never download; stop at once with how to get the data.",
      flag_values=flag_values, module_name=module_name)


def _unset_as(value, unset):
  """The flag's spelling of an unset (`None`) config default: `-1` or `""`, as the original."""
  return unset if value is None else value


def _model(name):
  return default_of(ModelConfig, name)


def _train(name):
  return default_of(TrainConfig, name)


def _data(name):
  return default_of(DataConfig, name)


def _index_of(names, default):
  """The original's integer spelling (as a string flag) of an enum default."""
  return str(names.index(default))


def define_flags(flag_values=flags.FLAGS):
  """Defines train.py's flags on `flag_values`."""
  f = flag_values
  d = flags
  # Data (the original's --problem is --dataset).
  d.DEFINE_enum("dataset", _data("dataset"), list(config_lib.DATASETS),
                "Dataset. TFDS where it has the data; fashion_mnist also reads Debian's "
                "dataset-fashion-mnist IDX files offline; folder reads a directory of images "
                "(--data_dir); OpenAI's TFRecord shards are read when --data_dir holds them.",
                flag_values=f)
  d.DEFINE_string(
      "data_dir", _unset_as(_data("data_dir"), ""),
      "Location of data: TFDS data dir, IDX files, an image folder, or OpenAI's TFRecord shards "
      "(train/ and validation/).",
      flag_values=f)
  d.DEFINE_string(
      "category", _unset_as(_data("category"), ""),
      "LSUN category (e.g. bedroom, church_outdoor, tower).",
      flag_values=f)
  d.DEFINE_integer(
      "image_size", _unset_as(_data("image_size"), -1),
      "Image size (square); -1: the dataset's own (32 for MNIST-likes, padded from 28).",
      flag_values=f)
  d.DEFINE_integer(
      "dal", _data("dal"),
      "Data augmentation level: 0=None, 1=Standard (random shifts of up to 10%), 2=Extra (CIFAR-10: "
      "also flips, 15-degree rotations, 10% zoom, 0.02 shear). As the original, applied to MNIST, "
      "Fashion-MNIST and CIFAR-10 only.",
      flag_values=f)
  d.DEFINE_integer(
      "n_train", _unset_as(_train("n_train"), -1),
      "Train epoch size, in images anchored at --anchor_size (the original's 50000); -1: the "
      "training set's size.",
      flag_values=f)
  d.DEFINE_integer(
      "n_test", _unset_as(_data("n_test"), -1),
      "Valid epoch size: test images used; -1: all.",
      flag_values=f)
  d.DEFINE_integer(
      "anchor_size", _train("anchor_size"),
      "Anchor size for deciding batch size: --n_batch_train, --n_batch_init and --n_train count "
      "images of anchor_size x anchor_size, so at image size s a step takes "
      "n_batch_train * anchor_size^2 // s^2 images (the original's); 0: they count images at "
      "any size.",
      flag_values=f)
  d.DEFINE_integer(
      "n_batch_train", _train("n_batch_train"),
      "Minibatch size, anchored (see --anchor_size), global over all replicas: the original's "
      "`mpiexec -n N ... --n_batch_train B` is --n_batch_train=N*B.",
      flag_values=f)
  d.DEFINE_integer(
      "n_batch_test", _train("n_batch_test"),
      "Minibatch size for evaluation, in images (global).",
      flag_values=f)
  d.DEFINE_integer(
      "n_batch_init", _train("n_batch_init"),
      "Minibatch size for data-dependent init, anchored (the original's per-GPU value, as it "
      "is: it kept worker 0's initialisation).",
      flag_values=f)
  d.DEFINE_integer("train_subset", _data("train_subset"), "Use only the first N training images "
                   "(quick experiments); default: all.", flag_values=f)
  define_download_flag(DataConfig, f, __name__)
  # Model.
  d.DEFINE_integer("n_levels", _model("n_levels"), "Number of levels.", flag_values=f)
  d.DEFINE_alias("n_level", "n_levels", flag_values=f)  # as the original's README spells it
  d.DEFINE_integer(
      "depth", _model("depth"),
      "Depth of network (flow steps per level).",
      flag_values=f)
  d.DEFINE_integer("width", _model("width"), "Width of hidden layers.", flag_values=f)
  d.DEFINE_integer("n_bits_x", _model("n_bits_x"), "Number of bits of x.", flag_values=f)
  d.DEFINE_string("flow_permutation",
                  _index_of(config_lib.PERMUTATIONS, _model("flow_permutation")),
                  "Type of flow. 0=reverse (realnvp), 1=shuffle, 2=invconv (ours); the names "
                  "are accepted too.", flag_values=f)
  d.DEFINE_string("flow_coupling",
                  _index_of(config_lib.COUPLINGS, _model("flow_coupling")),
                  "Coupling type: 0=additive, 1=affine; the names are accepted too.",
                  flag_values=f)
  d.DEFINE_boolean(
      "lu_decomposed", _model("lu_decomposed"),
      "LU-decomposed invertible 1x1 convolutions (O(C) log-det).",
      flag_values=f)
  d.DEFINE_boolean("learntop", _model("learntop"), "Learn spatial prior.", flag_values=f)
  d.DEFINE_float(
      "prior_log_scale_bound", _model("prior_log_scale_bound"),
      "0: the original's unbounded prior log-scales. b > 0: the split priors' and the learned "
      "top prior's log-scales are soft-clamped to b * tanh(log_scale / b), so that no image "
      "gets a scale below e^-b (see docs/reproducing.md, where we differ).",
      flag_values=f)
  d.DEFINE_boolean("ycond", _model("ycond"), "Use y conditioning.", flag_values=f)
  d.DEFINE_enum(
      "condition", _model("condition"), [c for c in config_lib.CONDITIONS if c != "tensor"],
      "Conditional Glow: model p(x | c) for a condition c built from each training image: "
      "lowres (the image downsampled by --condition_factor: super-resolution), gray (its "
      "luminance: colourisation, RGB data), class (its one-hot label), attributes (CelebA's 40 "
      "attributes); none: the original's unconditional model (docs/conditional.md).",
      flag_values=f)
  d.DEFINE_integer("condition_factor", _model("condition_factor"),
                   "--condition=lowres: the downsampling factor; it must divide the image size.",
                   flag_values=f)
  d.DEFINE_integer("condition_width", _model("condition_width"),
                   "Conditional Glow: channels of the conditioning network's features.",
                   flag_values=f)
  d.DEFINE_enum(
      "dequantization", _model("dequantization"), list(config_lib.DEQUANTIZATIONS),
      "uniform: the original's uniform noise within each bin. variational: a learned noise "
      "distribution q(u | x), a small conditional flow trained with the model on the tighter "
      "variational bound (Flow++; docs/training.md).", flag_values=f)
  d.DEFINE_integer("dequant_depth", _model("dequant_depth"),
                   "--dequantization=variational: flow steps of q.", flag_values=f)
  d.DEFINE_integer("dequant_width", _model("dequant_width"),
                   "--dequantization=variational: width of q's coupling networks.",
                   flag_values=f)
  d.DEFINE_enum("dequant_sampling", _model("dequant_sampling"), config_lib.DEQUANT_SAMPLINGS,
                "--dequantization=variational: the direction of q's flow that maps its noise "
                "to logits: encode (its couplings contract) or generate (the first version's; "
                "its couplings divide by their scales and can overflow).",
                flag_values=f)
  d.DEFINE_float(
      "weight_y", _model("weight_y"),
      "Weight of log p(y|x) in weighted loss.",
      flag_values=f)
  d.DEFINE_boolean("recompute_gradients", _model("recompute_gradients"),
                   "Memory-saving backprop: reconstruct each "
                   "flow step's input from its output instead of storing activations.",
                   flag_values=f)
  d.DEFINE_enum("precision", _model("precision"), list(config_lib.PRECISIONS),
                "Arithmetic of the coupling networks. float32; mixed_bfloat16: the coupling "
                "networks compute in bfloat16, the variables and the log-dets stay float32; "
                "auto: bfloat16 only where it is native and fast (CPUs with AMX, GPUs of compute "
                "capability 8.0 or newer), float32 elsewhere. The choice and its reason are "
                "printed at start (and the choice saved in config.json). Details: "
                "docs/performance.md.",
                flag_values=f)
  # Optimisation.
  d.DEFINE_enum("optimizer", _train("optimizer"), list(config_lib.OPTIMIZERS),
                "adam or adamax.", flag_values=f)
  d.DEFINE_float("lr", _train("lr"), "Base learning rate.", flag_values=f)
  d.DEFINE_float("beta1", _train("beta1"), "Adam beta1.", flag_values=f)
  d.DEFINE_float(
      "weight_decay", _train("weight_decay"),
      "Weight decay: each update starts from weight_decay * w. Switched off (1) by default.",
      flag_values=f)
  d.DEFINE_float(
      "polyak_epochs", _train("polyak_epochs"),
      "Nr of averaging epochs for Polyak and beta2.",
      flag_values=f)
  d.DEFINE_integer("epochs", _train("epochs"), "Total number of training epochs.", flag_values=f)
  d.DEFINE_float("epochs_warmup", _train("epochs_warmup"), "Warmup epochs.", flag_values=f)
  d.DEFINE_integer(
      "epochs_full_valid", _train("epochs_full_valid"),
      "Epochs between valid (full test set).",
      flag_values=f)
  d.DEFINE_integer(
      "epochs_full_sample", _train("epochs_full_sample"),
      "Epochs between full scale sample.",
      flag_values=f)
  d.DEFINE_integer(
      "n_sample", _train("n_sample"),
      "Samples per temperature row of the sample grids.",
      flag_values=f)
  d.DEFINE_integer("seed", _train("seed"), "Random seed (data order, noise, "
                   "initialisation).", flag_values=f)
  # Output and running.
  d.DEFINE_string("logdir", _train("logdir"), "Location to save logs, checkpoints and samples.",
                  flag_values=f)
  d.DEFINE_string(
      "restore_path", _train("restore_path"),
      "Location of checkpoint to restore (prefix or logdir); by default training resumes from "
      "--logdir's latest checkpoint.",
      flag_values=f)
  d.DEFINE_enum("strategy", _train("strategy"), list(config_lib.STRATEGIES),
                "tf.distribute strategy: auto = multi_worker when TF_CONFIG names several "
                "workers, mirrored with several GPUs, else default (one device).",
                flag_values=f)
  d.DEFINE_boolean(
      "jit_compile", _train("jit_compile"),
      "XLA-compile the loss and gradient computation.",
      flag_values=f)
  d.DEFINE_integer(
      "max_steps", _train("max_steps"),
      "Stop after this many training steps in total.",
      flag_values=f)
  d.DEFINE_float(
      "time_budget_minutes", _train("time_budget_minutes"),
      "Stop after this many minutes of training in this run (then evaluate, sample and "
      "checkpoint).",
      flag_values=f)
  d.DEFINE_float("checkpoint_every_minutes", _train("checkpoint_every_minutes"),
                 "Minutes between checkpoints (also at a new "
                 "run's start, every epoch end and the end).", flag_values=f)
  d.DEFINE_integer(
      "keep_checkpoints", _train("keep_checkpoints"),
      "Number of checkpoints kept.",
      flag_values=f)
  d.DEFINE_integer(
      "log_every_steps", _train("log_every_steps"),
      "Steps between log lines and TensorBoard points.",
      flag_values=f)
  d.DEFINE_integer(
      "quick_valid_batches", _train("quick_valid_batches"),
      "Test batches for the quick estimate at epoch ends without a full validation.",
      flag_values=f)
  d.DEFINE_integer("max_nonfinite_steps", _train("max_nonfinite_steps"),
                   "Consecutive skipped steps (non-finite, or spikes with --spike_guard) before "
                   "--nonfinite_policy acts.",
                   flag_values=f)
  d.DEFINE_enum("nonfinite_policy", _train("nonfinite_policy"),
                list(config_lib.NONFINITE_POLICIES),
                "After --max_nonfinite_steps skipped steps in a row: rollback: restore the "
                "last checkpoint, multiply the learning rate by --rollback_lr_factor and go on "
                "(at most --max_rollbacks times), or stop the run.",
                flag_values=f)
  d.DEFINE_float("rollback_lr_factor", _train("rollback_lr_factor"),
                 "Learning-rate factor of each rollback, in (0, 1).", flag_values=f)
  d.DEFINE_integer("max_rollbacks", _train("max_rollbacks"),
                   "Rollbacks allowed in a run before it stops.", flag_values=f)
  d.DEFINE_boolean("spike_guard", _train("spike_guard"),
                   "Skip a step whose loss or gradient norm is far outside the run's recent "
                   "steps, as a non-finite step is skipped (counted toward "
                   "--max_nonfinite_steps; see docs/training.md).", flag_values=f)
  d.DEFINE_float("spike_threshold", _train("spike_threshold"),
                 "How far outside is a spike: in mean absolute deviations of the recent "
                 "steps' loss and log gradient norm.", flag_values=f)
  d.DEFINE_integer("spike_warmup_steps", _train("spike_warmup_steps"),
                   "Applied steps before the spike guard skips any.", flag_values=f)


def _architecture_of_restore(f: flags.FlagValues, model: ModelConfig) -> ModelConfig:
  """The architecture of `--restore_path`'s run or export (its config.json), checked against the flags set."""
  from glow_tf import rundir  # pylint: disable=import-outside-toplevel  # TensorFlow: only here
  run_dir = rundir.run_dir_of(rundir.resolve_checkpoint(f.logdir, f.restore_path))
  given = [name for name in config_lib.ARCHITECTURE_FIELDS if f[name].present]
  return config_lib.with_architecture_of(run_dir.read_config().model, model, given,
                                         run_dir.config_path)


def config_from_flags(f: flags.FlagValues) -> config_lib.RunConfig:
  """Builds and validates the run's `RunConfig` from parsed flags.

  The model's image shape and classes come from the data: they stay unset
  here (`config.resolve_for_data` completes them). With `--restore_path`, the
  architecture comes from that run's (or export's) config.json; flags that
  contradict it are an error. An `--image_size` given
  explicitly is checked against `--n_levels` at once, before any data is read.

  Raises:
    ConfigError: naming the flag, for any invalid value.
  """
  image_size = None if f.image_size == -1 else f.image_size
  data = DataConfig(
      dataset=f.dataset, data_dir=f.data_dir or None, category=f.category or None,
      image_size=image_size, train_subset=f.train_subset,
      n_test=None if f.n_test == -1 else f.n_test, dal=f.dal, download=f.download)
  model = ModelConfig(
      image_shape=None, n_levels=f.n_levels, depth=f.depth, width=f.width,
      flow_permutation=f.flow_permutation, flow_coupling=f.flow_coupling,
      lu_decomposed=f.lu_decomposed, learntop=f.learntop, ycond=f.ycond,
      weight_y=f.weight_y, n_bits_x=f.n_bits_x, recompute_gradients=f.recompute_gradients,
      precision=f.precision, seed=f.seed, prior_log_scale_bound=f.prior_log_scale_bound,
      condition=f.condition, condition_factor=f.condition_factor,
      condition_width=f.condition_width, dequantization=f.dequantization,
      dequant_depth=f.dequant_depth, dequant_width=f.dequant_width,
      dequant_sampling=f.dequant_sampling)
  if f.restore_path:
    model = _architecture_of_restore(f, model)
  train = TrainConfig(
      logdir=f.logdir, restore_path=f.restore_path, optimizer=f.optimizer, lr=f.lr,
      beta1=f.beta1, weight_decay=f.weight_decay, epochs=f.epochs,
      epochs_warmup=f.epochs_warmup, polyak_epochs=f.polyak_epochs, anchor_size=f.anchor_size,
      n_train=None if f.n_train == -1 else f.n_train, n_batch_train=f.n_batch_train,
      n_batch_test=f.n_batch_test, n_batch_init=f.n_batch_init,
      epochs_full_valid=f.epochs_full_valid, epochs_full_sample=f.epochs_full_sample,
      n_sample=f.n_sample, seed=f.seed, strategy=f.strategy, jit_compile=f.jit_compile,
      max_steps=f.max_steps, time_budget_minutes=f.time_budget_minutes,
      checkpoint_every_minutes=f.checkpoint_every_minutes,
      keep_checkpoints=f.keep_checkpoints, log_every_steps=f.log_every_steps,
      quick_valid_batches=f.quick_valid_batches, max_nonfinite_steps=f.max_nonfinite_steps,
      nonfinite_policy=f.nonfinite_policy, rollback_lr_factor=f.rollback_lr_factor,
      max_rollbacks=f.max_rollbacks, spike_guard=f.spike_guard,
      spike_threshold=f.spike_threshold, spike_warmup_steps=f.spike_warmup_steps)
  if image_size is not None:  # checks that need only the flags, before any data is read
    config_lib.level_shapes((image_size, image_size, 1), f.n_levels)
    if f.condition == "lowres":
      config_lib.check_condition(f.condition, (image_size, image_size, 1), f.condition_factor,
                                 where="--condition=lowres")
    train.schedule(image_size, num_train_examples=1)
  return config_lib.RunConfig(data=data, model=model, train=train)
