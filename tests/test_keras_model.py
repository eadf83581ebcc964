"""GlowKerasModel: tf_keras `fit` with train.py's step, its metric and the tf_keras callbacks."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from glow_tf import config as config_lib
from glow_tf import data as data_lib
from glow_tf import optim
from glow_tf.keras_model import GlowKerasModel, keras_test_dataset, keras_train_dataset
from tests.synthetic_data import FASHION_MNIST_DIR

BATCH = 32


@pytest.fixture(scope="module")
def data():
  return data_lib.load(config_lib.DataConfig(dataset="fashion_mnist", data_dir=FASHION_MNIST_DIR,
                                             train_subset=640, n_test=128))


def make_model(data):
  config = config_lib.resolve_for_data(
      config_lib.ModelConfig(image_shape=None, n_levels=2, depth=2, width=16, flow_coupling="affine",
                             n_bits_x=5), data.image_shape, data.n_classes)
  model = GlowKerasModel(config, BATCH, optim.GlowOptimizer("adamax", 0.003, beta2=0.99))
  model.compile()
  return model


def weights(model):
  return [v.numpy().copy() for v in model.glow.trainable_variables]


def test_fit_trains_with_train_py_loss_and_lowers_bits_per_dim(data, tmp_path):
  model = make_model(data)
  train = keras_train_dataset(data, BATCH)
  first = next(iter(train))
  model.initialize(first["image"])  # explicit here; fit would do it on its first batch
  before = model.evaluate(keras_test_dataset(data, 64), verbose=0, return_dict=True)
  # One step: Keras reports train.py's loss of the first batch, with its noise.
  expected = float(tf.reduce_mean(model.glow.losses(first["image"], noise=first["noise"])["loss"]))
  history = model.fit(train, steps_per_epoch=1, epochs=1, verbose=0)
  assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
  history = model.fit(train, steps_per_epoch=15, epochs=2, verbose=0, callbacks=[
      tf_keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt" / "w-{epoch}"), save_weights_only=True),
      tf_keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
  after = model.evaluate(keras_test_dataset(data, 64), verbose=0, return_dict=True)
  assert int(model.step.numpy()) == 31
  assert set(history.history) == {"loss", "bits_per_dim"}
  assert after["bits_per_dim"] < before["bits_per_dim"] - 0.2, (before, after)
  with model.averaged_weights():
    averaged = model.evaluate(keras_test_dataset(data, 64), verbose=0, return_dict=True)
  assert averaged["bits_per_dim"] != after["bits_per_dim"]
  assert glob.glob(str(tmp_path / "tb" / "train" / "events.out.tfevents.*"))
  # ModelCheckpoint's weights load into a new model (no initialisation needed).
  other = make_model(data)
  other.load_weights(str(tmp_path / "ckpt" / "w-2"))
  for a, b in zip(weights(other), weights(model)):
    np.testing.assert_array_equal(a, b)
  assert bool(other.initialized.numpy())
  with pytest.raises(ValueError, match="keras_train_dataset"):
    other.fit(tf.data.Dataset.from_tensors(first["image"]), verbose=0)


class _StopAt(tf_keras.callbacks.Callback):
  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.epoch:
      raise RuntimeError("interrupted")


class _WeightsAtStart(tf_keras.callbacks.Callback):
  def on_train_begin(self, logs=None):
    self.weights = weights(self.model)
    self.step = int(self.model.step.numpy())


def test_backup_and_restore_resumes_an_interrupted_fit(data, tmp_path):
  backup = str(tmp_path / "backup")
  model = make_model(data)
  with pytest.raises(RuntimeError, match="interrupted"):
    model.fit(keras_train_dataset(data, BATCH), steps_per_epoch=5, epochs=3, verbose=0,
              callbacks=[tf_keras.callbacks.BackupAndRestore(backup), _StopAt(2)])
  at_interrupt = weights(model)
  assert int(model.step.numpy()) == 10
  resumed = make_model(data)  # a new process would build it afresh
  start = _WeightsAtStart()
  history = resumed.fit(keras_train_dataset(data, BATCH), steps_per_epoch=5, epochs=3, verbose=0,
                        callbacks=[tf_keras.callbacks.BackupAndRestore(backup), start])
  assert history.epoch == [2] and start.step == 10 and int(resumed.step.numpy()) == 15
  for a, b in zip(start.weights, at_interrupt):  # restored, not re-initialised
    np.testing.assert_array_equal(a, b)
  assert not os.path.exists(backup) or not os.listdir(backup)  # removed after a finished fit
