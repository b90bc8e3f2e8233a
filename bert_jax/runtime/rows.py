"""Rows of a global batch: this host's share of them, and a jitted function over all of them.

Fine-tuning's batches, its evaluation and mode=encode all hold every row on every host (a task's
data is small) and split each global batch by process.
"""

import math
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from bert_jax.model import modeling


def host_rows(global_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This host's share of a global batch (rows are split evenly over the processes)."""
  count = len(next(iter(global_batch.values()))) // jax.process_count()
  start = jax.process_index() * count
  return {k: v[start:start + count] for k, v in global_batch.items()}


# The model's inputs: unpacked rows have the first three, packed rows all of them.
# What a prediction reads of a row (the MLM's positions: fill-mask, finetuning/predict.py).
_INPUT_KEYS = ("input_ids", "input_mask", "segment_ids", *modeling.PACKING_INPUTS,
               "masked_lm_positions")


def predict_rows(p_predict, params, features: dict[str, np.ndarray], batch_size: int,
                 batch_sharding) -> Any:
  """The model's outputs for every row of `features`, the last batch padded then trimmed.

  Args:
    p_predict: jit of `f(params, batch)`, its batch split by `batch_sharding`.
    params: Its params.
    features: input_ids, input_mask and segment_ids, and for packed rows position_ids,
      example_ids and cls_positions (any others are left out), the same rows on every process.
    batch_size: Rows per call, global: a multiple of the data-parallel size and of the
      process count.
    batch_sharding: How a global batch is split over the mesh.

  Returns:
    `p_predict`'s outputs, host numpy, [len(features['input_ids']), ...], on every process.
  """
  count = len(features["input_ids"])
  padded = math.ceil(count / batch_size) * batch_size
  inputs = {k: features[k] for k in _INPUT_KEYS if k in features}
  inputs = {k: np.concatenate([v, np.zeros((padded - count,) + v.shape[1:], v.dtype)])
            for k, v in inputs.items()}
  outputs = []
  for start in range(0, padded, batch_size):
    global_batch = {k: v[start:start + batch_size] for k, v in inputs.items()}
    batch = jax.make_array_from_process_local_data(batch_sharding, host_rows(global_batch))
    outputs.append(multihost_utils.process_allgather(p_predict(params, batch), tiled=True))
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:count], *outputs)
