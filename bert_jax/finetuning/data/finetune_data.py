"""A fine-tuning run's data: the vocabulary, the task's examples, and model-ready features.

One shape for every task family, so the loop in finetune.py never branches on the task:
`TaskData.train` and each `EvalSet.features` are dicts of numpy arrays with the original
BERT's feature names, one row per model input; what is needed to score predictions (examples,
SQuAD windows, NER word alignment) rides along in the EvalSet. Each family's `load`
(finetuning/families/) builds them.
"""

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from bert_jax import errors
from bert_jax.tokenizers import tokenization
from bert_jax.tokenizers import vocab_location


@dataclasses.dataclass
class EvalSet:
  """One eval split: its features, and what turns the model's outputs into predictions."""
  split: str
  features: dict[str, np.ndarray]
  examples: list[Any]
  squad_features: Any = None  # squad.SquadFeatures, for span tasks.


@dataclasses.dataclass
class TaskData:
  """Attributes:
    family: The task family's name (finetuning/families/registry.py).
    num_labels: Outputs of the head (1 for regression and for multiple choice, a score per
      choice; 2, start/end, for spans).
    label_names: Class or tag names in id order (None for regression and spans).
    metrics: The task's metric names (task_metrics), the first one decides the best checkpoint.
  """
  name: str
  family: str
  num_labels: int
  label_names: tuple[str, ...] | None
  metrics: tuple[str, ...]
  train: dict[str, np.ndarray]
  evals: list[EvalSet]
  version_2_with_negative: bool = False


def vocab_file(config: ml_collections.ConfigDict, checkpoint: str | None = None) -> str:
  """data.vocab_file, else the vocabulary that came with the checkpoint.

  Args:
    config: The run's config.
    checkpoint: Where the params come from; None = config.init_checkpoint.
  """
  if config.data.vocab_file:
    return config.data.vocab_file
  found = vocab_location.beside_checkpoint(
      config.init_checkpoint if checkpoint is None else checkpoint)
  if found:
    return found
  source = (f"config.init_checkpoint ({config.init_checkpoint or 'empty'})"
            if checkpoint is None else checkpoint)
  raise errors.UserError(
      f"data.vocab_file is empty and {source} has no vocabulary beside it (vocab.txt, "
      "vocab.model, or a bert_jax workdir's data/): set --config.data.vocab_file")


def load_tokenizer(config: ml_collections.ConfigDict) -> tokenization.Tokenizer:
  return tokenization.load_tokenizer(vocab_file(config), do_lower_case=config.data.do_lower_case)
