"""What every family's scoring shares: probabilities, and predictions written as JSON.

Each family's `score` (finetuning/families/) turns outputs (numpy, one row per feature) into
(metrics, predictions); `write_predictions` puts the predictions in the workdir as JSON, in the
form each task's official tooling reads (SQuAD: qas_id -> answer text, plus the no-answer
scores for v2).
"""

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf


def softmax(logits: np.ndarray) -> np.ndarray:
  """In float64: the probabilities a user compares with other tools' scores."""
  shifted = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
  return np.exp(shifted) / np.sum(np.exp(shifted), axis=-1, keepdims=True)


def write_predictions(directory: str, split: str, predictions: Any) -> None:
  """`directory/<split>.jsonl` (one row per example), or for SQuAD `<split>_<name>.json`."""
  tf.io.gfile.makedirs(directory)
  if isinstance(predictions, dict):
    for name, value in predictions.items():
      with tf.io.gfile.GFile(os.path.join(directory, f"{split}_{name}.json"), "w") as f:
        json.dump(value, f, indent=1)
    return
  with tf.io.gfile.GFile(os.path.join(directory, f"{split}.jsonl"), "w") as f:
    for row in predictions:
      f.write(json.dumps(row) + "\n")
