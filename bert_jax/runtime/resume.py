"""Where a run's state comes from besides a fresh init: its own checkpoints, or another's params.

Shared by pre-training (train.py), fine-tuning (finetune.py), mode=eval (evaluation.py) and
mode=encode (encode.py).
"""

import dataclasses
from typing import Any

import ml_collections
import tensorflow as tf

from bert_jax import errors
from bert_jax.model import modeling
from bert_jax.runtime import checkpoint
from bert_jax.runtime import report
from bert_jax.runtime import sharding


def check_same_model(saved: dict[str, Any], model_config: modeling.BertConfig,
                     directory: str) -> None:
  """A workdir is never silently shared by two model shapes."""
  for field, value in saved.items():
    current = getattr(model_config, field, None)
    if field not in modeling.BertConfig.RUNTIME_FIELDS and current != value:
      raise errors.UserError(
          f"model.{field}={current!r} but {directory} holds a model with {value!r}: use a new "
          f"--workdir (or another checkpoint), or the same model config")


def check_fits(model_config: modeling.BertConfig, max_seq_length: int,
               tokenizer_vocab_size: int) -> None:
  """A loaded checkpoint's model takes the run's sequences and every id of its tokenizer."""
  if max_seq_length > model_config.max_position_embeddings:
    raise errors.UserError(f"data.max_seq_length={max_seq_length} is larger than the model's "
                           f"max_position_embeddings={model_config.max_position_embeddings}")
  if tokenizer_vocab_size > model_config.vocab_size:
    raise errors.UserError(f"the vocabulary ({tokenizer_vocab_size} tokens) is larger than the "
                           f"model's vocab_size={model_config.vocab_size}: wrong data.vocab_file?")


def initial_params(path: str, model_config: modeling.BertConfig, shardings: Any) -> Any:
  """Params of another checkpoint (ours, HF's or Google's), placed with our shardings."""
  from bert_jax.interop import convert  # pylint: disable=g-import-not-at-top
  loaded_config, params, loaded = convert.load_params(path, return_report=True)
  if not loaded.head.record.pretraining:
    raise errors.UserError(f"config.init_checkpoint={path} is a fine-tuned model "
                           f"({loaded.head.architecture}), without the MLM/NSP heads that "
                           "pre-training continues: start from a pre-training checkpoint")
  check_same_model(dataclasses.asdict(loaded_config), model_config, path)
  params = sharding.place(params, shardings, path)
  report.line(f"Initialised the params from {path}")
  return params


def roll_back(checkpointer: checkpoint.Checkpointer, abstract_state: Any, state_shardings: Any,
              bad_step: int) -> tuple[Any, int]:
  """The state of the latest checkpoint, after a non-finite step under nan_policy='rollback'.

  Returns:
    (the restored train state, its step).
  """
  checkpointer.wait_until_finished()
  if checkpointer.latest_step() is None:
    raise errors.UserError(f"non-finite loss or gradient at step {bad_step} and no checkpoint "
                           "to roll back to (train.nan_policy='rollback')")
  target = sharding.with_shardings(abstract_state, state_shardings)
  latest, state, _ = checkpointer.restore_latest(target)
  report.line(f"Non-finite loss or gradient at step {bad_step}: rolled back to the checkpoint at "
              f"step {latest}; going on with the data after step {bad_step}")
  return state, latest


def params_source(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, bool]:
  """Where a run that does not train takes its params from.

  Returns:
    (`workdir`, True) when it holds a checkpoint, else (config.init_checkpoint, False).

  Raises:
    errors.UserError: Neither has params to read.
  """
  directory = checkpoint.checkpoint_dir(workdir)
  # Checked before a Checkpointer is made: it would create the directory.
  if tf.io.gfile.isdir(directory):
    checkpointer = checkpoint.Checkpointer(directory)
    latest = checkpointer.latest_step()
    checkpointer.close()
    if latest is not None:
      return workdir, True
  if config.init_checkpoint:
    return config.init_checkpoint, False
  raise errors.UserError(f"--workdir={workdir} has no checkpoint and config.init_checkpoint is "
                         f"empty: no params for mode={config.mode!r}")
