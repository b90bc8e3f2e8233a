"""The shape of a task family's data side (registry.py holds the records)."""

import dataclasses
from typing import Any, Callable

import ml_collections
import numpy as np

from bert_jax import errors
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import packing as packed_rows
from bert_jax.finetuning.data import tasks
from bert_jax.model import families


@dataclasses.dataclass
class Prepared:
  """mode=predict's inputs as model features, and the way back to one JSON object per input.

  Attributes:
    features: Model-ready features, one row per model input.
    decode: The model's outputs (numpy, a row per feature) -> a JSON object per input.
    apply: (params, batch, *, model, top_k) -> outputs, where the family's outputs are not the
      model's own (fill-mask's top tokens); None = the model's outputs.
  """
  features: dict[str, np.ndarray]
  decode: Callable[[Any], list[dict[str, Any]]]
  apply: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class TaskFamily:
  """A task family's data side; `model` is its model side.

  Attributes:
    model: The model side (model/families.py): head, loss, FLOPs, Hugging Face architecture.
    load: (task, config, tokenizer) -> finetune_data.TaskData: the training features and the
      eval sets, featurized. None for pre-training (it is not fine-tuned).
    score: (task data, eval set, outputs, config, tokenizer) -> (metrics, predictions) of one
      eval set; outputs have one row per feature, no padding.
    predict: (config, input file, tokenizer, head, max_seq_length) -> Prepared (mode=predict).
    packing: How packed rows hold its examples; None = it does not pack (data.packing is then
      ignored).
    reader: How tasks.load_examples reads its examples, for families whose examples are text
      rows or tagged words; None where the family reads its own (SQuAD's JSON, choices).
    check: config -> None, raising errors.UserError for a config the family cannot run, before
      anything is read or compiled.
    resolve: (config.task's TaskSpec, config) -> the task the config runs (SQuAD's
      data.version_2_with_negative reads v2.0 whichever version is named).
    steps_note: What counting steps in examples leaves out (an estimate prints it).
  """
  model: families.Family
  load: Callable[[tasks.TaskSpec, ml_collections.ConfigDict, Any],
                 finetune_data.TaskData] | None
  score: Callable[..., tuple[dict[str, float], Any]] | None
  predict: Callable[..., Prepared]
  packing: packed_rows.Layout | None = None
  reader: tasks.Reader | None = None
  check: Callable[[ml_collections.ConfigDict], None] = lambda config: None
  resolve: Callable[[tasks.TaskSpec, ml_collections.ConfigDict],
                    tasks.TaskSpec] = lambda task, config: task
  steps_note: str = ""

  @property
  def name(self) -> str:
    return self.model.name


def check_read(examples: list[Any], split: str, local_file: str, field: str) -> None:
  """Before any step: an eval set without a row would end a whole run at its first eval."""
  if not examples:
    where = f"{field}={local_file}" if local_file else f"the TFDS split {split!r}"
    raise errors.UserError(f"{where} holds no example (an empty file, or only a header?)")


def read_splits(task: tasks.TaskSpec, data_config: ml_collections.ConfigDict,
                reader: tasks.Reader, encode: Callable[[list[Any]], dict[str, np.ndarray]]
                ) -> tuple[dict[str, np.ndarray], list[finetune_data.EvalSet],
                           tuple[str, ...] | None]:
  """(training features, eval sets, label names) of a task read by `reader`, every split
  featurized by `encode`; eval splits take the training split's label ids."""
  train_examples, label_names = tasks.load_examples(task, task.train_split, data_config,
                                                    reader=reader)
  check_read(train_examples, task.train_split, data_config.train_file, "data.train_file")
  evals = []
  for split in tasks.eval_split_names(task, data_config):
    examples, _ = tasks.load_examples(task, split, data_config, label_names=label_names,
                                      reader=reader)
    check_read(examples, split, data_config.eval_file, "data.eval_file")
    evals.append(finetune_data.EvalSet(split, encode(examples), examples))
  return encode(train_examples), evals, label_names
