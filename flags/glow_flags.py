"""train.py's flags: the original's names and defaults, plus ours; and their config.

`define_flags()` is called only by the entry points (never on import), and
`config_from_flags(FLAGS)` turns the parsed values into a validated
`glow_tf.train_lib.GlowConfig`; the library never reads flags.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import train_lib

__all__ = ["define_flags", "config_from_flags", "run_app"]


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


def define_flags(flag_values=flags.FLAGS):
  """Defines train.py's flags on `flag_values`."""
  f = flag_values
  d = flags
  # Data (the original's --problem is --dataset).
  d.DEFINE_enum("dataset", "cifar10", list(data_lib.DATASETS),
                "Dataset. TFDS where it has the data; fashion_mnist also reads Debian's "
                "dataset-fashion-mnist IDX files offline; folder reads a directory of images "
                "(--data_dir); OpenAI's TFRecord shards are read when --data_dir holds them.",
                flag_values=f)
  d.DEFINE_string("data_dir", "", "Location of data: TFDS data dir, IDX files, an image "
                  "folder, or OpenAI's TFRecord shards (train/ and validation/).", flag_values=f)
  d.DEFINE_string("category", "", "LSUN category (e.g. bedroom, church_outdoor, tower).",
                  flag_values=f)
  d.DEFINE_integer("image_size", -1, "Image size (square); -1: the dataset's own "
                   "(32 for MNIST-likes, padded from 28).", flag_values=f)
  d.DEFINE_integer("n_train", None, "Train epoch size in images (the original: 50000); "
                   "default: the training set's size.", flag_values=f)
  d.DEFINE_integer("n_test", -1, "Valid epoch size: test images used; -1: all.", flag_values=f)
  d.DEFINE_integer("n_batch_train", 64, "Minibatch size (global, over all replicas).",
                   flag_values=f)
  d.DEFINE_integer("n_batch_test", 50, "Minibatch size for evaluation (global).", flag_values=f)
  d.DEFINE_integer("n_batch_init", 256, "Minibatch size for data-dependent init.",
                   flag_values=f)
  d.DEFINE_integer("train_subset", None, "Use only the first N training images "
                   "(quick experiments); default: all.", flag_values=f)
  # Model.
  d.DEFINE_integer("n_levels", 3, "Number of levels.", flag_values=f)
  d.DEFINE_alias("n_level", "n_levels", flag_values=f)  # as the original's README spells it
  d.DEFINE_integer("depth", 32, "Depth of network (flow steps per level).", flag_values=f)
  d.DEFINE_integer("width", 512, "Width of hidden layers.", flag_values=f)
  d.DEFINE_integer("n_bits_x", 8, "Number of bits of x.", flag_values=f)
  d.DEFINE_integer("flow_permutation", 2, "Type of flow. 0=reverse (realnvp), 1=shuffle, "
                   "2=invconv (ours).", flag_values=f)
  d.DEFINE_integer("flow_coupling", 0, "Coupling type: 0=additive, 1=affine.", flag_values=f)
  d.DEFINE_boolean("lu_decomposed", False, "LU-decomposed invertible 1x1 convolutions "
                   "(O(C) log-det).", flag_values=f)
  d.DEFINE_boolean("learntop", False, "Learn spatial prior.", flag_values=f)
  d.DEFINE_boolean("ycond", False, "Use y conditioning.", flag_values=f)
  d.DEFINE_float("weight_y", 0.00, "Weight of log p(y|x) in weighted loss.", flag_values=f)
  d.DEFINE_boolean("recompute_gradients", False, "Memory-saving backprop: reconstruct each "
                   "flow step's input from its output instead of storing activations.",
                   flag_values=f)
  d.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"],
                "Arithmetic of the coupling networks: float32, or mixed_bfloat16 (bfloat16 "
                "convolutions with float32 weights: 1.3-1.5x faster training steps measured on a "
                "CPU with AMX, but 2-4x slower on CPUs without AVX-512 BF16/AMX, which emulate "
                "bfloat16 (train.py warns); each coupling stays exactly invertible).",
                flag_values=f)
  # Optimisation.
  d.DEFINE_enum("optimizer", "adamax", ["adamax", "adam"], "adam or adamax.", flag_values=f)
  d.DEFINE_float("lr", 0.001, "Base learning rate.", flag_values=f)
  d.DEFINE_float("beta1", .9, "Adam beta1.", flag_values=f)
  d.DEFINE_float("polyak_epochs", 1, "Nr of averaging epochs for Polyak and beta2.",
                 flag_values=f)
  d.DEFINE_integer("epochs", 1000000, "Total number of training epochs.", flag_values=f)
  d.DEFINE_float("epochs_warmup", 10, "Warmup epochs.", flag_values=f)
  d.DEFINE_integer("epochs_full_valid", 50, "Epochs between valid (full test set).",
                   flag_values=f)
  d.DEFINE_integer("epochs_full_sample", 50, "Epochs between full scale sample.",
                   flag_values=f)
  d.DEFINE_integer("n_sample", 8, "Samples per temperature row of the sample grids.",
                   flag_values=f)
  d.DEFINE_integer("seed", 0, "Random seed.", flag_values=f)
  # Output and running.
  d.DEFINE_string("logdir", "./logs", "Location to save logs, checkpoints and samples.",
                  flag_values=f)
  d.DEFINE_string("restore_path", "", "Location of checkpoint to restore (prefix or logdir); "
                  "by default training resumes from --logdir's latest checkpoint.",
                  flag_values=f)
  d.DEFINE_enum("strategy", "auto", list(train_lib.STRATEGIES),
                "tf.distribute strategy: auto = multi_worker when TF_CONFIG names several "
                "workers, mirrored with several GPUs, else default (one device).",
                flag_values=f)
  d.DEFINE_boolean("jit_compile", False, "XLA-compile the loss and gradient computation.",
                   flag_values=f)
  d.DEFINE_integer("max_steps", None, "Stop after this many training steps in total.",
                   flag_values=f)
  d.DEFINE_float("time_budget_minutes", None, "Stop after this many minutes of training "
                 "in this run (then evaluate, sample and checkpoint).", flag_values=f)
  d.DEFINE_float("checkpoint_every_minutes", 10., "Minutes between checkpoints (also at "
                 "every epoch end and at the end).", flag_values=f)
  d.DEFINE_integer("keep_checkpoints", 3, "Number of checkpoints kept.", flag_values=f)
  d.DEFINE_integer("log_every_steps", 50, "Steps between log lines and TensorBoard points.",
                   flag_values=f)
  d.DEFINE_integer("quick_valid_batches", 10, "Test batches for the quick estimate at "
                   "epoch ends without a full validation.", flag_values=f)
  d.DEFINE_integer("max_nonfinite_steps", 20, "Consecutive non-finite steps (skipped) "
                   "before training stops.", flag_values=f)


def config_from_flags(f):
  """Builds and validates the run's `GlowConfig` from parsed flags.

  Raises:
    ValueError: naming the flag, for any invalid value.
  """
  for name in ("flow_permutation", "flow_coupling"):
    allowed = (0, 1, 2) if name == "flow_permutation" else (0, 1)
    if f[name].value not in allowed:
      raise ValueError(f"--{name} must be one of {allowed}, got {f[name].value}.")
  data = data_lib.DataConfig(
      dataset=f.dataset, data_dir=f.data_dir or None, category=f.category or None,
      image_size=None if f.image_size == -1 else f.image_size,
      n_test=None if f.n_test == -1 else f.n_test, n_train=f.train_subset,
      n_batch_init=f.n_batch_init, n_batch_train=f.n_batch_train,
      n_batch_test=f.n_batch_test, seed=f.seed)
  # image_shape and n_classes come from the data (Trainer completes them);
  # the architecture is validated here against the requested image size.
  size = None if f.image_size == -1 else f.image_size
  model = config_lib.ModelConfig(
      image_shape=(size or 2 ** f.n_levels,) * 2 + (1,),
      n_levels=f.n_levels, depth=f.depth, width=f.width,
      flow_permutation=f.flow_permutation, flow_coupling=f.flow_coupling,
      lu_decomposed=f.lu_decomposed, learntop=f.learntop, ycond=f.ycond,
      n_classes=2 if f.ycond else None, weight_y=f.weight_y, n_bits_x=f.n_bits_x,
      recompute_gradients=f.recompute_gradients, precision=f.precision, seed=f.seed)
  train = train_lib.TrainConfig(
      logdir=f.logdir, restore_path=f.restore_path, optimizer=f.optimizer, lr=f.lr,
      beta1=f.beta1, epochs=f.epochs, epochs_warmup=f.epochs_warmup,
      polyak_epochs=f.polyak_epochs, n_train=f.n_train, n_batch_train=f.n_batch_train,
      n_batch_test=f.n_batch_test, n_batch_init=f.n_batch_init,
      epochs_full_valid=f.epochs_full_valid, epochs_full_sample=f.epochs_full_sample,
      n_sample=f.n_sample, seed=f.seed, strategy=f.strategy, jit_compile=f.jit_compile,
      max_steps=f.max_steps, time_budget_minutes=f.time_budget_minutes,
      checkpoint_every_minutes=f.checkpoint_every_minutes,
      keep_checkpoints=f.keep_checkpoints, log_every_steps=f.log_every_steps,
      quick_valid_batches=f.quick_valid_batches, max_nonfinite_steps=f.max_nonfinite_steps)
  return train_lib.GlowConfig(data=data, model=model, train=train)
