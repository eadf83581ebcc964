"""Test set-up: quiet TensorFlow and split the CPU into 2 logical devices.

The split must happen before TensorFlow initialises its devices, so it lives
here, at import time of the test session. Single-device code keeps using the
first logical CPU; tests of `tf.distribute.MirroredStrategy` get two replicas.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import pytest  # noqa: E402

_STRATEGY = []


def two_replica_strategy():
  """One MirroredStrategy over the 2 logical CPUs, shared by the whole session.

  Collective-op instance keys are per process: a second strategy would reuse
  them with other dtypes and abort the collective runtime.
  """
  if not _STRATEGY:
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    assert len(devices) == 2
    _STRATEGY.append(tf.distribute.MirroredStrategy(devices))
  return _STRATEGY[0]


@pytest.fixture
def two_replicas():
  return two_replica_strategy()
