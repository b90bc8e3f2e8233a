"""A fine-tuning run's data: the vocabulary, the task's examples, and model-ready features.

One shape for every task family, so the loop in finetune.py never branches on the task:
`TaskData.train` and each `EvalSet.features` are dicts of numpy arrays with the original
BERT's feature names, one row per model input; what is needed to score predictions (examples,
SQuAD windows, NER word alignment) rides along in the EvalSet.
"""

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from bert_jax import errors
from bert_jax.finetuning.data import choices
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import squad
from bert_jax.finetuning.data import squad_windows
from bert_jax.finetuning.data import tasks
from bert_jax.tokenizers import tokenization
from bert_jax.tokenizers import vocab_location

SQUAD_TASKS = {"squad": "squad/v1.1", "squad_v1.1": "squad/v1.1", "squad_v2.0": "squad/v2.0"}
# The model inputs of each family, beside input_ids, input_mask and segment_ids.
LABEL_FEATURES = {
    "classification": ("label_ids",), "regression": ("label_ids",),
    "token": ("label_ids", "label_weights"), "span": ("start_positions", "end_positions"),
    "multiple_choice": ("label_ids",),
}


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
    family: 'classification', 'regression', 'token', 'span' or 'multiple_choice'.
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


def check_task(config: ml_collections.ConfigDict) -> None:
  """A task name that is neither SQuAD nor in the task registry is a one-line error, as is a
  SQuAD window with no room for the context."""
  data = config.data
  if config.task in SQUAD_TASKS and data.max_seq_length <= data.max_query_length + 3:
    raise errors.UserError(f"data.max_seq_length={data.max_seq_length} leaves no room for the "
                           f"context after data.max_query_length={data.max_query_length}")
  if config.task not in SQUAD_TASKS:
    try:
      tasks.get_task(config.task)
    except errors.UserError as e:
      raise errors.UserError(f"config.task: {e} (or {', '.join(SQUAD_TASKS)})") from e


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


def _take(examples: list[Any], max_examples: int) -> list[Any]:
  return examples[:max_examples] if max_examples > 0 else examples


def _squad(config: ml_collections.ConfigDict, tokenizer) -> TaskData:
  data = config.data
  name = "squad/v2.0" if data.version_2_with_negative else SQUAD_TASKS[config.task]

  def read(split: str, local_file: str, is_training: bool):
    if local_file:
      examples = squad.read_squad_json(local_file, is_training=is_training)
    else:
      examples = squad.tfds_examples(name, split, data.tfds_data_dir or None,
                                     is_training=is_training)
    examples = _take(examples, data.max_examples)
    features = squad_windows.convert_examples_to_features(
        examples, tokenizer, max_seq_length=data.max_seq_length, doc_stride=data.doc_stride,
        max_query_length=data.max_query_length, is_training=is_training)
    return examples, features

  train_examples, train_features = read("train", data.train_file, True)
  eval_examples, eval_features = read("validation", data.eval_file, False)
  _check_read(train_examples, "train", data.train_file, "data.train_file")
  _check_read(eval_examples, "validation", data.eval_file, "data.eval_file")
  return TaskData(
      name=name, family="span", num_labels=2, label_names=None, metrics=("f1", "exact_match"),
      train=_span_arrays(train_features, with_positions=True),
      evals=[EvalSet("validation", _span_arrays(eval_features, with_positions=False),
                     eval_examples, eval_features)],
      version_2_with_negative=name.endswith("v2.0"))


def _check_read(examples: list[Any], split: str, local_file: str, field: str) -> None:
  """Before any step: an eval set without a row would end a whole run at its first eval."""
  if not examples:
    where = f"{field}={local_file}" if local_file else f"the TFDS split {split!r}"
    raise errors.UserError(f"{where} holds no example (an empty file, or only a header?)")


def _span_arrays(features, with_positions: bool) -> dict[str, np.ndarray]:
  arrays = {"input_ids": features.input_ids, "input_mask": features.input_mask,
            "segment_ids": features.segment_ids}
  if with_positions:
    arrays.update(start_positions=features.start_positions, end_positions=features.end_positions)
  return arrays


def _multiple_choice(task: tasks.TaskSpec, data: ml_collections.ConfigDict,
                     tokenizer) -> TaskData:
  def read(split: str, field: str):
    if data[field]:
      return choices.read(data[field], f"data.{field}", split, data)
    if not task.tfds_name:
      raise errors.UserError(f"task {task.name!r} reads your own files (TFDS has no SWAG): set "
                             f"data.{field} (SWAG's CSV: sent1, sent2, ending0..ending3, label)")
    return choices.tfds_examples(task.tfds_name, split, data)

  train = read("train", "train_file")
  evals = read("validation", "eval_file")
  _check_read(train, "train", data.train_file, "data.train_file")
  _check_read(evals, "validation", data.eval_file, "data.eval_file")
  return TaskData(name=task.name, family=task.family, num_labels=1, label_names=None,
                  metrics=task.metrics, train=choices.encode(train, tokenizer, data.max_seq_length),
                  evals=[EvalSet("validation", choices.encode(evals, tokenizer,
                                                              data.max_seq_length), evals)])


def load(config: ml_collections.ConfigDict, tokenizer) -> TaskData:
  """The task's training features and its eval sets, tokenized for max_seq_length."""
  if config.task in SQUAD_TASKS:
    return _squad(config, tokenizer)
  task = tasks.get_task(config.task)
  data = config.data
  if task.family == "multiple_choice":
    return _multiple_choice(task, data, tokenizer)
  train_examples, label_names = tasks.load_examples(task, "train", data)
  _check_read(train_examples, task.train_split, data.train_file, "data.train_file")

  def encode(examples):
    if task.family == "token":
      return featurize.encode_token_examples(examples, tokenizer, data.max_seq_length)
    return featurize.encode_text_examples(examples, tokenizer, data.max_seq_length, task.family)

  evals = []
  for split in tasks.eval_split_names(task, data):
    examples, _ = tasks.load_examples(task, split, data, label_names=label_names)
    _check_read(examples, split, data.eval_file, "data.eval_file")
    evals.append(EvalSet(split, encode(examples), examples))
  num_labels = 1 if task.family == "regression" else len(label_names)
  # Entity-level scores are named 'f1', 'precision', 'recall' by task_metrics.entity_f1.
  metric_names = ("f1", "precision", "recall") if task.family == "token" else task.metrics
  return TaskData(name=task.name, family=task.family, num_labels=num_labels,
                  label_names=label_names, metrics=metric_names, train=encode(train_examples),
                  evals=evals)
