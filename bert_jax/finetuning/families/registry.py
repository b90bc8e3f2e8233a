"""The task family registry, data side: one record per family (record.TaskFamily), keyed by
the family's name as model/families.py keys its model side.

A new family is a module that builds its two records (model and data) and one `register`
call; a task of it is a tasks.TaskSpec naming it (tasks.register). Nothing else in bert_jax
branches on a family's name.
"""

from typing import Any

import ml_collections

from bert_jax import errors
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import tasks
from bert_jax.finetuning.families import choice
from bert_jax.finetuning.families import fill_mask
from bert_jax.finetuning.families import record
from bert_jax.finetuning.families import span
from bert_jax.finetuning.families import tagging
from bert_jax.finetuning.families import text
from bert_jax.model import families

FAMILIES: dict[str, record.TaskFamily] = {}


def register(family: record.TaskFamily) -> record.TaskFamily:
  """Registers a family: its model side (model/families.py) where it is new, and its data side.

  Raises:
    ValueError: The name has a data side already, or a different model side.
  """
  if family.name in FAMILIES:
    raise ValueError(f"task family {family.name!r} is already registered")
  if family.name not in families.FAMILIES:
    families.register(family.model)
  elif families.FAMILIES[family.name] is not family.model:
    raise ValueError(f"task family {family.name!r} has another model side already")
  FAMILIES[family.name] = family
  return family


def get(name: str) -> record.TaskFamily:
  if name not in FAMILIES:
    raise errors.UserError(f"unknown task family {name!r}: known ones are {', '.join(FAMILIES)}")
  return FAMILIES[name]


for _built_in in (fill_mask.FILL_MASK, text.CLASSIFICATION, text.REGRESSION, tagging.TOKEN,
                  span.SPAN, choice.MULTIPLE_CHOICE):
  register(_built_in)


def check_task(config: ml_collections.ConfigDict) -> record.TaskFamily:
  """The family of config.task, after its own checks of the config: an unknown task, or a
  config the family cannot run, is a one-line error before anything is read or compiled."""
  try:
    task = tasks.get_task(config.task)
  except errors.UserError as e:
    raise errors.UserError(f"config.task: {e}") from e
  family = get(task.family)
  if family.load is None:
    raise errors.UserError(f"config.task={config.task!r} is a {task.family} task: it is not "
                           "fine-tuned")
  family.check(config)
  return family


def task(config: ml_collections.ConfigDict) -> tasks.TaskSpec:
  """The task `config` runs: config.task, as its family resolves it."""
  named = tasks.get_task(config.task)
  return get(named.family).resolve(named, config)


def load(config: ml_collections.ConfigDict, tokenizer) -> finetune_data.TaskData:
  """The task's training features and its eval sets, tokenized for data.max_seq_length."""
  run_task = task(config)
  return get(run_task.family).load(run_task, config, tokenizer)


def load_examples(task: tasks.TaskSpec, split: str, data_config: ml_collections.ConfigDict,
                  label_names: Any = None) -> tuple[list[Any], tuple[str, ...] | None]:
  """tasks.load_examples with the reader of the task's family."""
  return tasks.load_examples(task, split, data_config, label_names,
                             reader=get(task.family).reader)
