"""What bert_jax.tpu.aot and bert_jax.tpu.estimate take from a fine-tuning config: its task,
family and head, the architecture, the run's steps and a step's FLOPs, with no data and no
checkpoint."""

import dataclasses
import math

import ml_collections

from bert_jax import errors
from bert_jax.model import families
from bert_jax.model import flops
from bert_jax.model import modeling


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
  """What an estimate and an AOT compile take from a fine-tuning config's task.

  Attributes:
    name: config.task.
    family: Its task family (model/families.py).
    num_labels: The head's outputs.
    choices: Sequences per example: one per ending for multiple choice, else 1.
    train_examples: The task's published training-set size; 0 = unknown (the user's files).
    steps_note: What counting steps in examples leaves out, for this family (its record's).
  """
  name: str
  family: str
  num_labels: int
  choices: int
  train_examples: int
  steps_note: str = ""



def check_mode(config: ml_collections.ConfigDict, architecture: modeling.BertConfig | None
               ) -> None:
  """Pre-training or fine-tuning, and a bert_config.json for fine-tuning only, or a UserError."""
  if config.mode not in ("pretrain", "finetune"):
    raise errors.UserError(f"config.mode={config.mode!r} is not supported (only 'pretrain' and "
                           "'finetune')")
  if architecture is not None and config.mode != "finetune":
    raise errors.UserError("--bert_config is for fine-tuning configs: pre-training builds "
                           "config.model")


def read_architecture(path: str | None) -> modeling.BertConfig | None:
  """The model of --bert_config (a bert_config.json or HF config.json); None without one."""
  if not path:
    return None
  from bert_jax.interop import config_json  # pylint: disable=g-import-not-at-top
  try:
    return config_json.read(path)
  except FileNotFoundError:
    raise errors.UserError(f"--bert_config={path}: no such file") from None


def finetune_task(config: ml_collections.ConfigDict) -> FinetuneTask:
  """The task of a fine-tuning config (finetuning/data/tasks.py), or a UserError."""
  # The registries come with TensorFlow Datasets: imported only when fine-tuning needs them.
  from bert_jax.finetuning.families import registry  # pylint: disable=g-import-not-at-top
  # The run's own checks: an unknown task, one that is not fine-tuned, a SQuAD window with no
  # room for the context.
  data_side = registry.check_task(config)
  spec = registry.task(config)
  family = data_side.model
  # The user's own tasks take their labels from the data: data.label_names when given, else
  # two; the head's size moves the FLOPs and memory by a rounding error.
  label_names = [name for name in config.data.label_names.split(",") if name.strip()]
  num_labels = family.num_labels or spec.num_labels or len(label_names) or 2
  example = family.dummy_batch(1, config.data.max_seq_length, num_labels)
  return FinetuneTask(name=config.task, family=spec.family, num_labels=num_labels,
                      choices=math.prod(example["input_ids"].shape[1:-1]),  # [1, (choices,) L]
                      train_examples=spec.train_examples, steps_note=data_side.steps_note)


def finetune_model(config: ml_collections.ConfigDict,
                   architecture: modeling.BertConfig | None = None) -> modeling.BertConfig:
  """`architecture` (a bert_config.json's; None = config.model's) computed as config.model says
  (dtype, scan, remat, attention); after validation, which resolves model.dtype='auto'.

  Raises:
    errors.UserError: The model has fewer positions than data.max_seq_length.
  """
  model_config = (architecture or modeling.BertConfig.from_config(config.model)).with_runtime_of(
      config.model)
  length, positions = config.data.max_seq_length, model_config.max_position_embeddings
  if length > positions:
    raise errors.UserError(f"data.max_seq_length={length} is larger than the model's "
                           f"max_position_embeddings={positions}")
  return model_config


def finetune_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """Optimizer steps of a fine-tuning run, as finetune.py counts them: train.num_train_steps
  when set, else ceil(num_train_examples x train.num_train_epochs / train.batch_size).

  Raises:
    errors.UserError: Neither the steps nor the examples are known.
  """
  train = config.train
  if train.num_train_steps > 0:
    return train.num_train_steps
  if num_train_examples <= 0:
    raise errors.UserError(
        f"config.task={config.task!r} has no published training-set size to count the steps "
        "from: pass --num_train_examples=N (the examples in data.train_file) or "
        "--config.train.num_train_steps")
  return max(1, math.ceil(num_train_examples * train.num_train_epochs / train.batch_size))


def finetuning_flops_per_step(model_config: modeling.BertConfig, task: FinetuneTask,
                              batch_size: int, seq_length: int) -> int:
  """Model FLOPs of one fine-tuning step on `batch_size` examples with the family's head; a
  multiple-choice example is one sequence per choice."""
  sequences = batch_size * task.choices
  head = families.get(task.family).head_flops(model_config, sequences, seq_length,
                                              task.num_labels)
  return flops.finetuning_flops_per_step(model_config, sequences, seq_length, head)
