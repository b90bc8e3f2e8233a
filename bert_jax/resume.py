"""Where a run's state comes from besides a fresh init: its own checkpoints, or another's params.

Shared by pre-training (train.py), fine-tuning (finetune.py) and mode=eval (evaluation.py).
"""

import dataclasses
from typing import Any

from bert_jax import checkpoint
from bert_jax import errors
from bert_jax import modeling
from bert_jax import report
from bert_jax import sharding


def check_same_model(saved: dict[str, Any], model_config: modeling.BertConfig,
                     directory: str) -> None:
  """A workdir is never silently shared by two model shapes."""
  for field, value in saved.items():
    current = getattr(model_config, field, None)
    if field not in modeling.BertConfig.RUNTIME_FIELDS and current != value:
      raise errors.UserError(
          f"model.{field}={current!r} but {directory} holds a model with {value!r}: use a new "
          f"--workdir (or another checkpoint), or the same model config")


def initial_params(path: str, model_config: modeling.BertConfig, shardings: Any) -> Any:
  """Params of another checkpoint (ours, HF's or Google's), placed with our shardings."""
  from bert_jax import interop  # pylint: disable=g-import-not-at-top
  loaded_config, params = interop.load_params(path)
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
