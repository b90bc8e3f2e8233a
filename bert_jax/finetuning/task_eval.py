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

from bert_jax import files


def softmax(logits: np.ndarray) -> np.ndarray:
  """In float64: the probabilities a user compares with other tools' scores."""
  shifted = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
  return np.exp(shifted) / np.sum(np.exp(shifted), axis=-1, keepdims=True)


def write_predictions(directory: str, split: str, predictions: Any) -> None:
  """`directory/<split>.jsonl` (one row per example), or for SQuAD `<split>_<name>.json`; each
  file whole or not at all (a run stopped while writing it writes it again when resumed)."""
  if isinstance(predictions, dict):
    for name, value in predictions.items():
      files.write_whole(os.path.join(directory, f"{split}_{name}.json"),
                        json.dumps(value, indent=1).encode())
    return
  files.write_whole(os.path.join(directory, f"{split}.jsonl"),
                    "".join(json.dumps(row) + "\n" for row in predictions).encode())
