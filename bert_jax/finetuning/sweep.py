"""The paper's fine-tuning protocol in one command: learning rates x restarts, best on dev.

    python -m bert_jax.main --config=configs/glue.py --config.task=rte --workdir=WORKDIR \
        --config.init_checkpoint=PRETRAINED \
        --config.sweep.learning_rates=5e-5,4e-5,3e-5,2e-5 --config.sweep.seeds=3

Every member (a learning rate, a seed) is the run fine-tuning would make alone with them
(finetuning/sweep_program.py trains them together as one compiled program), through the same
loop: progress line, evals, SIGTERM save and resume, the workdir lock. WORKDIR gets
`sweep.json` (every member's dev metrics at every eval), `sweep.md` (per learning rate, the mean
and standard deviation over seeds of the final dev metric, and the best member), `best/` and
`best.json` (the best member's params at its best eval: export, predict and encode use them)
and `predictions/step_N/member_K/`. A member whose step is not finite is dropped from the
ranking with a line (train.nan_policy='skip' skips that step instead, as a run alone does); the
loop's policy applies to the sweep when every member's step is not finite.
"""

import dataclasses
import functools
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from bert_jax import errors
from bert_jax import files
from bert_jax.config import validation
from bert_jax.finetuning import finetune
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning import sweep_program
from bert_jax.finetuning import sweep_report
from bert_jax.finetuning import task_eval
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.families import record
from bert_jax.finetuning.families import registry
from bert_jax.model import modeling
from bert_jax.runtime import checkpoint
from bert_jax.runtime import loop
from bert_jax.runtime import metrics
from bert_jax.runtime import progress
from bert_jax.runtime import report
from bert_jax.runtime import resume
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from bert_jax.runtime import workdir_lock


def sweep(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the sweep's members together in `workdir`; resumes from its latest checkpoint.

  Returns:
    The final eval metrics of every member, {member index: {split: {metric: value}}}.
  """
  family = registry.check_task(config)
  members = sweep_program.grid(config)
  mesh = sharding.create_mesh(config.mesh)
  validation.validate(config, mesh)
  with workdir_lock.held(workdir):
    return _sweep(config, workdir, mesh, family, members)


@dataclasses.dataclass
class _Sweep:
  """What the sweep's callbacks from the loop share."""
  config: ml_collections.ConfigDict
  run_config: ml_collections.ConfigDict
  workdir: str
  model_config: modeling.BertConfig
  data: finetune_data.TaskData
  family: record.TaskFamily
  tokenizer: Any
  program: sweep_program.SweepProgram
  alone: finetune_program.Program  # One member's program: its predictions.
  packed: dict[str, Any]
  train_features: dict[str, np.ndarray]
  step_rows: int
  task_meta: dict[str, Any]
  best_checkpointer: checkpoint.Checkpointer
  state: dict[str, Any]  # sweep_report's: history, best, dropped (kept in the checkpoints).


def _sweep(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
           family: record.TaskFamily, members: tuple[sweep_program.Member, ...]
           ) -> dict[str, Any]:
  tokenizer = finetune_data.load_tokenizer(config)
  model_config, pretrained, pretrained_head = finetune.model_config_of(config)
  resume.check_fits(model_config, config.data.max_seq_length, tokenizer.vocab_size)
  data = family.load(registry.task(config), config, tokenizer)
  run_config = finetune.with_steps(config, data)
  packed, step_rows = finetune.pack_task(config, data, family.packing, mesh)
  keep_head = finetune.checkpoint_head(pretrained_head, data)
  report.line(sweep_report.plan_line(members, mesh))
  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), config.train.max_checkpoints_to_keep)
  best_checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "best"), 1)
  best_checkpointer.set_aside_unfinished()
  check = functools.partial(finetune.check_meta, config, data, checkpointer, workdir,
                            sweep=True)
  latest, meta = loop.saved_run(checkpointer, model_config,
                                lambda saved: (check(saved), _check_members(saved, members)))
  if loop.already_complete(checkpointer, latest, run_config.train.num_train_steps, "The sweep"):
    checkpointer.close()
    best_checkpointer.close()
    if not tf.io.gfile.exists(os.path.join(workdir, "sweep.md")):  # Stopped before its table.
      sweep_report.finish(workdir, meta["sweep"], data.metrics[0])
    return meta.get("eval", {})
  rules = sharding.logical_axis_rules(config)
  train_features = finetune.train_features_of(data, packed, family)
  example = {k: v[:1] for k, v in train_features.items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    alone = finetune_program.build_program(run_config, mesh, rules, model_config, data.family,
                                           data.num_labels, example)
  program = sweep_program.build_sweep_program(run_config, model_config, data.family,
                                              data.num_labels, members, mesh)
  run = _Sweep(config, run_config, workdir, model_config, data, family, tokenizer, program,
               alone, packed, train_features, step_rows, finetune.task_meta(config, data),
               best_checkpointer, meta.get("sweep") or sweep_report.new_state(members))
  initial = functools.partial(finetune.initial_params, config, pretrained, pretrained_head,
                              keep_head, alone.state_shardings.params)
  # Each member as its run alone starts (a resume keeps only their dropout keys).
  started = [program.init_state(member, example, run_config, initial) for member in members]
  task = _task(run, checkpointer, mesh, started[0][0])
  states, rngs = _initial_states(task, latest, started)
  first = _segment(run, int(states.step) + 1, states)
  report.line(f"Compiled the sweep's step in {first.compile_seconds:.1f} s; "
              f"{first.flops_per_step / 1e9:,.1f} GFLOP per step ({len(members)} members)")
  outcome = loop.run(task, states, rngs, first, meta.get("eval", {}))
  if not outcome.preempted:
    sweep_report.finish(workdir, run.state, data.metrics[0])
  return outcome.eval_metrics


def _check_members(meta: dict[str, Any], members: tuple[sweep_program.Member, ...]) -> None:
  saved = (meta.get("sweep") or {}).get("members")
  if saved is None:
    raise errors.UserError("config.sweep: this --workdir holds a fine-tuning run, not a sweep: "
                           "use a new --workdir")
  if saved != [dataclasses.asdict(m) for m in members]:
    raise errors.UserError(f"config.sweep's {len(members)} members are not the {len(saved)} of "
                           f"the sweep in this --workdir: use a new --workdir")


def _task(run: _Sweep, checkpointer: checkpoint.Checkpointer, mesh: jax.sharding.Mesh,
          member_state: Any) -> loop.Task:
  """The sweep as the loop sees it; `member_state`: one member's state (its shapes)."""
  num_members = len(run.program.members)
  abstract = sweep_program.abstract_states(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), member_state), num_members)
  return loop.Task(
      workdir=run.workdir, num_steps=run.run_config.train.num_train_steps,
      train_config=run.run_config.train, profile_steps=run.config.profile.steps,
      checkpointer=checkpointer, abstract_state=abstract,
      state_shardings=sweep_program.state_shardings(mesh, num_members, abstract),
      batch_sharding=sweep_program.member_sharding(mesh, num_members),
      segment=functools.partial(_segment, run),
      train_scalars=functools.partial(_train_scalars, run),
      log_fields=("loss", "loss_min", "loss_max", "sequences_per_second", "mfu",
                  "input_wait_fraction"),
      evaluate=functools.partial(_evaluate, run), meta=functools.partial(_checkpoint_meta, run),
      other_checkpointers=(run.best_checkpointer,))


def _initial_states(task: loop.Task, latest: int | None,
                    started: list[tuple[Any, jax.Array]]) -> tuple[Any, jax.Array]:
  """(the stacked states, the members' dropout keys): `started` (each member's new state and
  key), or the newest checkpoint that reads."""
  rngs = sweep_program.stack([rng for _, rng in started])
  if latest is None:
    states = sweep_program.stack_states([state for state, _ in started])
    return jax.device_put(states, task.state_shardings), rngs
  target = sharding.with_shardings(task.abstract_state, task.state_shardings)
  latest, states, _ = task.checkpointer.restore_latest(target)
  report.line(f"Resumed from the checkpoint at step {latest} in {task.checkpointer.directory}")
  return states, rngs


def _segment(run: _Sweep, step: int, states: Any) -> loop.Segment:
  """The whole sweep: the compiled step of every member, their batches, the progress."""
  compile_start = time.perf_counter()
  num_members = len(run.program.members)
  batch = {k: jax.ShapeDtypeStruct((num_members, run.step_rows) + v.shape[1:], v.dtype)
           for k, v in run.train_features.items()}
  # The loop hands the keys replicated; the peaks go the same way.
  replicated = sharding.replicated(run.alone.batch_sharding.mesh)
  rngs = jax.ShapeDtypeStruct((num_members,), train_state.root_key(run.config).dtype,
                              sharding=replicated)
  learning_rates = jax.device_put(run.program.learning_rates, replicated)
  compiled = run.program.train_step.lower(states, batch, rngs, learning_rates).compile()
  flops_per_step = num_members * finetune.step_flops(run.model_config, run.data, run.family,
                                                     run.step_rows)
  train = run.run_config.train
  reporter = progress.Progress(step - 1, train.num_train_steps, num_members * train.batch_size,
                               run.data.train["input_ids"].shape[-1], flops_per_step,
                               progress.total_peak_flops(progress.peak_tflops_per_device(
                                   run.config)[0]))
  return loop.Segment(1, train.num_train_steps,
                      lambda s, b, r: compiled(s, b, r, learning_rates),
                      functools.partial(_next_batch, run), reporter, flops_per_step,
                      time.perf_counter() - compile_start)


def _next_batch(run: _Sweep, step: int) -> dict[str, np.ndarray]:
  """Every member's batch of `step`, each in its own seed's order: [members, rows, ...]."""
  return run.program.batches(run.train_features, run.step_rows, step - 1)


def _train_scalars(run: _Sweep, pending: list[dict[str, Any]], states: Any,
                   step: int) -> dict[str, float]:
  """Each member's mean loss since the last log line (its finite steps); the mean, the
  lowest and the highest over the members still ranked."""
  del states  # Unused.
  fetched = jax.device_get(pending)
  losses = np.stack([m["loss"] for m in fetched])  # [steps, members]
  bad = np.stack([m["member_nonfinite"] for m in fetched]) > 0
  sweep_report.drop_diverged(run.state, bad, step, run.run_config.train.nan_policy,
                             run.program.members)
  counts = np.maximum((~bad).sum(axis=0), 1)
  means = np.where(~bad, losses, 0.0).sum(axis=0) / counts  # [members]
  ranked = sweep_report.ranked(run.state) or [0]
  scalars = {f"loss/member_{i}": float(means[i]) for i in range(len(means))}
  scalars.update(loss=float(np.mean(means[ranked])), loss_min=float(np.min(means[ranked])),
                 loss_max=float(np.max(means[ranked])))
  return scalars


def _evaluate(run: _Sweep, states: Any, step: int,
              writer: metrics.MetricWriter) -> tuple[dict[str, Any], str]:
  """Scores every member on every eval set, keeps their metrics in sweep.json, and the best
  member's params at its best eval in WORKDIR/best."""
  results = {}
  for index in range(len(run.program.members)):
    params = jax.device_get(sweep_program.unstack(states.params, index))
    results[str(index)] = _score_member(run, params, index, step, writer)
  sweep_report.record_eval(run.state, step, results, run.data.metrics[0],
                           run.data.evals[0].split)
  best = run.state["best"]
  if best.get("step") == step:  # A new best: its member's params.
    params = jax.device_get(sweep_program.unstack(states.params, best["member"]))
    run.best_checkpointer.save(step, {"params": params}, {
        "step": step, "model": dataclasses.asdict(run.model_config), "eval": best["eval"],
        "sweep_member": best["member"], **run.task_meta}, force=True)
  if jax.process_index() == 0:
    files.write_whole(os.path.join(run.workdir, "sweep.json"),
                      (json.dumps(run.state, indent=1, sort_keys=True) + "\n").encode())
  report.line(sweep_report.eval_line(run.state, step, run.data.metrics[0]))
  return results, ""


def _score_member(run: _Sweep, params: Any, index: int, step: int,
                  writer: metrics.MetricWriter) -> dict[str, Any]:
  """One member's metrics on every eval set; its predictions in predictions/step_N/member_K."""
  member_results = {}
  for eval_set in run.data.evals:
    outputs = finetune.eval_outputs(run.alone, run.packed, run.family, params, eval_set,
                                    run.run_config.train.eval_batch_size)
    member_results[eval_set.split], predictions = run.family.score(
        run.data, eval_set, outputs, run.config, run.tokenizer)
    if jax.process_index() == 0:
      task_eval.write_predictions(
          os.path.join(run.workdir, "predictions", f"step_{step}", f"member_{index}"),
          eval_set.split, predictions)
    writer.write_scalars(f"eval/{eval_set.split}/member_{index}", step,
                         member_results[eval_set.split])
  return member_results


def _checkpoint_meta(run: _Sweep, step: int, eval_metrics: dict[str, Any]) -> dict[str, Any]:
  """A checkpoint's metadata: the task's, and the sweep's members, history and best."""
  return {"step": step, "model": dataclasses.asdict(run.model_config), "eval": eval_metrics,
          "sweep": run.state, "config": run.config.to_dict(), **run.task_meta}
