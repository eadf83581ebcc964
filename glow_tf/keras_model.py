"""Training Glow with tf_keras (Keras 2) `fit`, through train.py's own step (`glow_tf.steps`).

`GlowKerasModel` is a thin `tf_keras.Model` around a `GlowModel` and a
`GlowOptimizer`. Its `fit` runs, at each step, the training step that
`train.py` runs (`steps.build_train_step`: the same loss, the replica sums,
the finite-gradient and spike guards, the original's Adamax with Polyak averages), not a
second training loop: it replaces Keras's train function and so ignores
`compile`'s optimizer and loss. It reports `loss` and `bits_per_dim` (running
means over the epoch, as Keras metrics), runs the data-dependent actnorm
initialisation explicitly before its first step (on the first batch of
`fit`'s data, or call `initialize` yourself), and works with
`tf_keras.callbacks` such as `ModelCheckpoint(save_weights_only=True)`,
`BackupAndRestore` and `TensorBoard`: the model, optimiser slots, step and
initialisation flag are tracked by its checkpoints.

Why tf_keras: Keras 3 does not track the `tf.Variable`s of `tf.Module`s
(glow_tf's layers), so its checkpoints and callbacks would not see them;
Keras 2, which TensorFlow Probability itself builds on, does.

```python
model = GlowKerasModel(model_config, batch_size=64)
model.compile()
model.fit(keras_train_dataset(data, 64, seed=0), steps_per_epoch=100, epochs=10)
```
"""

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional

import tensorflow as tf
import tf_keras

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import model as model_lib
from glow_tf import optim
from glow_tf import spike_guard as spike_guard_lib
from glow_tf import steps as steps_lib
from glow_tf.ops import TensorLike

__all__ = ["GlowKerasModel", "keras_test_dataset", "keras_train_dataset"]


def keras_train_dataset(data: data_lib.ImageDataset, batch_size: int, seed: int = 0) -> tf.data.Dataset:
  """train.py's training batches with their dequantisation noise (`{'image', 'label', 'noise'}`), endless."""
  return steps_lib.with_noise(data.train_dataset(batch_size, seed), seed,
                              steps_lib.TRAIN_NOISE_STREAM).prefetch(tf.data.AUTOTUNE)


def keras_test_dataset(data: data_lib.ImageDataset, batch_size: int, seed: int = 0) -> tf.data.Dataset:
  """train.py's test batches with their noise: one pass over the test set."""
  return steps_lib.with_noise(data.test_dataset(batch_size), seed, steps_lib.TEST_NOISE_STREAM)


class GlowKerasModel(tf_keras.Model):
  """A `GlowModel` trained by tf_keras `fit` with train.py's step.

  Args:
    config: the model's `ModelConfig` (complete: `resolve_for_data`).
    batch_size: images per step, as the datasets give them (the loss is the
      mean over the batch, as train.py's `n_batch_train`).
    optimizer: a `GlowOptimizer` (default: the original's Adamax, lr 1e-3,
      no warmup, Polyak decay 0.999); `optim.make_optimizer` gives train.py's.
    seed: seeds the initialisation's dequantisation noise.
  """

  def __init__(self, config: config_lib.ModelConfig, batch_size: int,
               optimizer: Optional[optim.GlowOptimizer] = None, seed: int = 0, name: str = "glow_keras"):
    super().__init__(name=name)
    self.glow = model_lib.GlowModel(config)
    self.glow_optimizer = optimizer or optim.GlowOptimizer()
    self.glow_optimizer.build(list(self.glow.trainable_variables))  # zero slots: restorable at once
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.spike_guard = spike_guard_lib.SpikeGuard()  # train.py's default guard
    self.initialized = tf.Variable(False, trainable=False, name="initialized")
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.loss_tracker = tf_keras.metrics.Mean(name="loss")
    self.bits_tracker = tf_keras.metrics.Mean(name="bits_per_dim")
    self._init_data = None
    self.built = True  # every variable exists already

  @property
  def metrics(self) -> List[tf_keras.metrics.Metric]:
    return [self.loss_tracker, self.bits_tracker]

  def call(self, inputs: TensorLike, training: bool = False) -> tf.Tensor:
    """Bits per dimension `[B]` of uint8 images `[B, H, W, C]` (or `{'image': ...}`), mid-bin dequantised."""
    del training
    if isinstance(inputs, dict):  # with the batch's labels, attributes or conditioning
      return self.glow.bits_per_dim(inputs["image"], noise=0.5, **self.glow.batch_conditions(inputs))
    return self.glow.bits_per_dim(inputs, noise=0.5)

  def initialize(self, images: TensorLike, labels: Optional[TensorLike] = None) -> None:
    """The data-dependent actnorm initialisation (explicit, once); `fit` calls it if you do not."""
    self._initialize_from({"image": images} if labels is None else {"image": images, "label": labels})

  def _initialize_from(self, batch: Dict[str, tf.Tensor]) -> None:
    """`initialize` on a data batch, with its labels, attributes or conditioning."""
    self.glow.initialize(batch["image"], seed=[self.seed, 1], **self.glow.batch_conditions(batch))
    self.initialized.assign(True)

  @contextlib.contextmanager
  def averaged_weights(self) -> Iterator[None]:
    """Evaluate or sample with the Polyak-averaged weights inside the block (train.py's test weights)."""
    with self.glow_optimizer.averaged_weights(list(self.glow.trainable_variables)):
      yield

  def fit(self, x: Any = None, *args, **kwargs) -> tf_keras.callbacks.History:
    """`tf_keras.Model.fit` on batches of `{'image', 'label', 'noise'}` (`keras_train_dataset`)."""
    if isinstance(x, tf.data.Dataset) and not (isinstance(x.element_spec, dict)
                                               and {"image", "noise"} <= set(x.element_spec)):
      raise ValueError("GlowKerasModel.fit needs batches of {'image', 'noise'} (and 'label' for a "
                       "class-conditional model), as keras_train_dataset(data, batch_size) gives; "
                       f"got elements {x.element_spec}.")
    self._init_data = x
    return super().fit(x, *args, **kwargs)

  def _initialize_if_needed(self):
    # After BackupAndRestore's restore (in on_train_begin), the flag is restored too.
    if bool(self.initialized.numpy()):
      return
    if not isinstance(self._init_data, tf.data.Dataset):
      raise ValueError("GlowKerasModel: call initialize(images) before fit, or fit on a "
                       "tf.data.Dataset (its first batch initialises the actnorms).")
    self._initialize_from(next(iter(self._init_data)))

  def _update_metrics(self, sums: Dict[str, tf.Tensor], count: float) -> Dict[str, tf.Tensor]:
    self.loss_tracker.update_state(sums["loss"] / count, sample_weight=count)
    self.bits_tracker.update_state(sums["bits_x"] / count, sample_weight=count)
    return {m.name: m.result() for m in self.metrics}

  def make_train_function(self, force: bool = False) -> Callable[[Any], Dict[str, tf.Tensor]]:
    """Keras's train function replaced by train.py's step (`steps.build_train_step`)."""
    if self.train_function is not None and not force:
      return self.train_function
    step = steps_lib.build_train_step(self.glow, self.glow_optimizer, self.distribute_strategy,
                                      self.batch_size, self.step, spike_guard=self.spike_guard)

    def train_function(iterator):
      self._initialize_if_needed()
      result = step(iterator)
      self._train_counter.assign_add(1)
      if not result.applied:  # skipped, as train.py skips it
        tf.print("glow_keras: " + ("non-finite loss or gradient" if not result.finite
                                   else "loss or gradient norm spike") + ", update skipped")
        return {m.name: m.result() for m in self.metrics}
      return self._update_metrics(result.sums, float(self.batch_size))

    self.train_function = train_function
    return train_function

  def make_test_function(self, force: bool = False) -> Callable[[Any], Dict[str, tf.Tensor]]:
    """Keras's test function replaced by train.py's evaluation step (`steps.build_eval_step`)."""
    if self.test_function is not None and not force:
      return self.test_function
    eval_step = steps_lib.build_eval_step(self.glow, self.distribute_strategy)

    def test_function(iterator):
      sums, count, _ = eval_step(next(iterator))
      self._test_counter.assign_add(1)
      return self._update_metrics(sums, count)

    self.test_function = test_function
    return test_function
