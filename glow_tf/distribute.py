"""Choosing the `tf.distribute` strategy of a run, and which worker writes files."""

import json
import os
from typing import Mapping, Optional

import tensorflow as tf

from glow_tf import config as config_lib

__all__ = ["make_strategy", "is_chief", "num_workers_in_tf_config"]


def num_workers_in_tf_config(environ: Optional[Mapping[str, str]] = None) -> int:
  """How many chief and worker tasks the `TF_CONFIG` environment variable names."""
  environ = os.environ if environ is None else environ
  tf_config = json.loads(environ.get("TF_CONFIG", "{}") or "{}")
  cluster = tf_config.get("cluster", {})
  return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
  """The `tf.distribute` strategy for `name`.

  * `"default"`: the default strategy (one device).
  * `"mirrored"`: `MirroredStrategy` over all local GPUs (or the CPU).
  * `"multi_worker"`: `MultiWorkerMirroredStrategy` configured by `TF_CONFIG`.
  * `"auto"`: multi_worker when `TF_CONFIG` names several workers, mirrored
    when there are several GPUs, else default.
  """
  if name not in config_lib.STRATEGIES:
    raise config_lib.ConfigError(
        f"strategy must be one of {', '.join(config_lib.STRATEGIES)}, got {name!r}.")
  if name == "auto":
    if num_workers_in_tf_config() > 1:
      name = "multi_worker"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "default"
  if name == "multi_worker":
    if num_workers_in_tf_config() < 1:
      raise config_lib.ConfigError("strategy=multi_worker needs TF_CONFIG describing the "
                                   "cluster (see docs/training.md, 'Several GPUs, several hosts').")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's files: the chief, or worker 0 without a chief."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type == "chief" or (task_type == "worker" and task_id == 0 and
                                  "chief" not in resolver.cluster_spec().as_dict())
