"""mode='eval': the held-out MLM/NSP metrics of a checkpoint, without training.

    python -m bert_jax.main --config=configs/tiny.py --workdir=WORKDIR --config.mode=eval

Evaluates the params of WORKDIR's latest checkpoint (else of config.init_checkpoint) exactly as
training's own evaluation does: the same records, the same fixed masks, the same compiled
eval step on the same mesh. So a finished run evaluated again reports the numbers its last
eval line did. Writes WORKDIR/eval_results.json; never writes or changes a checkpoint.
"""

import json
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from bert_jax import errors
from bert_jax import files
from bert_jax.config import validation
from bert_jax.model import modeling
from bert_jax.pretraining import train_program
from bert_jax.pretraining.data import inputs
from bert_jax.runtime import checkpoint
from bert_jax.runtime import metrics
from bert_jax.runtime import report
from bert_jax.runtime import resume
from bert_jax.runtime import sharding
from bert_jax.runtime import workdir_lock


def _restore_params(workdir: str, model_config: modeling.BertConfig,
                    program: train_program.Program) -> tuple[int, str, Any]:
  """(step, step directory, params) of the workdir's newest checkpoint whose metadata reads.

  Not `Checkpointer.restore_latest`: it sets unreadable newer steps aside (renames them), and an
  evaluation must leave the checkpoints exactly as they are.
  """
  checkpointer = checkpoint.Checkpointer(checkpoint.checkpoint_dir(workdir))
  try:
    step, meta = checkpointer.latest_meta()
    if "task" in meta:
      raise errors.UserError(f"{checkpointer.directory} holds a fine-tuning run of "
                             f"{meta['task']!r}: mode='eval' evaluates pre-training checkpoints")
    # Cheap checks on the JSON metadata before reading any array.
    resume.check_same_model(meta["model"], model_config, checkpointer.directory)
    target = sharding.with_shardings(program.abstract_state, program.state_shardings)
    step_dir = os.path.join(checkpointer.directory, str(step))
    try:
      state, _ = checkpointer.restore(step, target)
    # Orbax and tensorstore raise many kinds; for a step on disk all mean "unreadable".
    except Exception as e:  # pylint: disable=broad-exception-caught
      reason = " ".join(str(e).split())[:300]
      raise errors.UserError(f"{step_dir}: cannot be read ({type(e).__name__}: {reason})") from e
  finally:
    checkpointer.close()
  return step, step_dir, state.params


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Evaluates the params of `workdir`'s latest checkpoint, else of config.init_checkpoint.

  Writes `workdir/eval_results.json`: {"step", "checkpoint", and the metrics}; the step is 0
  for params from config.init_checkpoint.

  Returns:
    The eval metrics, with `most_frequent_token_accuracy` for comparison: the same dict
    `train.train_and_evaluate` returns after its last eval of the same params.
  """
  mesh = sharding.create_mesh(config.mesh)
  validation.validate(config, mesh)
  model_config = modeling.BertConfig.from_config(config.model)
  rules = sharding.logical_axis_rules(config)
  source, from_workdir = resume.params_source(config, workdir)
  # No lock: an eval or an encode may run beside the training run that writes the checkpoints.
  workdir_lock.check_usable(workdir)

  # The run's own data (prepared into WORKDIR/data once, as training does): the same eval
  # records and masks as every eval of the training run.
  data = inputs.resolve(config, workdir)
  nsp = data.next_sentence_prediction
  eval_batches = inputs.eval_batches(
      config, data, inputs.damaged_files(config, data.eval_files, is_training=False))
  baseline = inputs.most_frequent_token_accuracy(eval_batches)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    program = train_program.build_program(config, mesh, rules, nsp)
    if from_workdir:
      step, checkpoint_path, params = _restore_params(workdir, model_config, program)
    else:
      # Training's own loading of init_checkpoint (model check, placement, the same message).
      params = resume.initial_params(source, model_config, program.state_shardings.params)
      step, checkpoint_path = 0, source
    eval_metrics = program.evaluate(params, eval_batches)
  eval_metrics["most_frequent_token_accuracy"] = baseline
  metrics.log_line("eval", step, eval_metrics)

  results_file = os.path.join(workdir, "eval_results.json")
  if jax.process_index() == 0:
    files.write_whole(results_file, (json.dumps(
        {"step": step, "checkpoint": checkpoint_path, **eval_metrics}, indent=1,
        sort_keys=True) + "\n").encode())
  report.line(f"Eval of {checkpoint_path}: {metrics.eval_summary(eval_metrics, baseline)}; "
              f"results in {results_file}")
  return eval_metrics
