"""Fine-tuning of every task family: classification, regression, NER tags, SQuAD spans, choices.

    python -m bert_jax.main --config=configs/glue.py --config.task=sst2 \
        --config.init_checkpoint=DIR --workdir=WORKDIR

Reads top to bottom like train.py: validate the config; the task's data and vocabulary (its
family's `load`, finetuning/families/); the model, its encoder params taken from
`init_checkpoint` (any checkpoint convert.load_params reads; the pre-training heads are
dropped, the task head starts fresh); then the mode described to loop.py, which runs it with
every guarantee pre-training has (preemption save, NaN policy, fallback past a damaged
checkpoint, progress line), evaluating every `train.eval_every_steps` and at the end. WORKDIR
gets `checkpoints/` (the latest states, to resume), `best/` (the params of the best evaluation
so far, by the task's first metric), `predictions/step_N/` and `best.json`.
"""

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
import tensorflow as tf

from bert_jax import errors
from bert_jax import files
from bert_jax.config import validation
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning import task_eval
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import packing
from bert_jax.finetuning.families import record
from bert_jax.finetuning.families import registry
from bert_jax.model import flops
from bert_jax.model import heads
from bert_jax.model import modeling
from bert_jax.runtime import checkpoint
from bert_jax.runtime import loop
from bert_jax.runtime import metrics
from bert_jax.runtime import optim
from bert_jax.runtime import progress
from bert_jax.runtime import report
from bert_jax.runtime import resume
from bert_jax.runtime import rows
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from bert_jax.runtime import workdir_lock


def pack_task(config: ml_collections.ConfigDict, data: finetune_data.TaskData,
          layout: packing.Layout | None, mesh: jax.sharding.Mesh
          ) -> tuple[dict[str, packing.Packed], int]:
  """The packed rows of the training set ('train') and of each eval split (data.packing, for
  a family that packs: `layout`), and the rows a training step takes: batch_size examples, or
  packed rows that hold that many on average."""
  if not config.data.packing or layout is None:
    return {}, config.train.batch_size
  packed = {"train": packing.pack(data.train, layout)}
  packed.update({e.split: packing.pack(e.features, layout) for e in data.evals})
  train = packed["train"]
  rows_per_step = packing.rows_per_step(config.train.batch_size, train,
                                        sharding.batch_multiple(mesh))
  unpacked_padding = 1 - float(np.mean(data.train["input_mask"]))
  report.line(f"Packing: {len(train.row)} examples in {train.num_rows} rows of "
              f"{config.data.max_seq_length} ({len(train.row) / train.num_rows:.2f} per row; "
              f"padding {unpacked_padding:.1%} -> {train.padding_fraction():.1%}); "
              f"{rows_per_step} rows per step for {config.train.batch_size} examples on average")
  if config.model.attention == "cudnn":
    report.line("Packed rows run the 'xla' attention: cuDNN's masks are padding or causal, not "
                "one block per example (--config.data.packing=false keeps 'cudnn')")
  return packed, rows_per_step


def model_config_of(config: ml_collections.ConfigDict) -> tuple[modeling.BertConfig, Any, Any]:
  """The architecture (the checkpoint's, when there is one), the pre-trained params and their
  head (interop/hf_heads.Head: pre-training, or a fine-tuned model's task head)."""
  if not config.init_checkpoint:
    report.line("No config.init_checkpoint: fine-tuning from a random init (a smoke test, not "
                "BERT).")
    return modeling.BertConfig.from_config(config.model), None, None
  from bert_jax.interop import convert  # pylint: disable=g-import-not-at-top
  loaded_config, params, loaded = convert.load_params(config.init_checkpoint, return_report=True)
  report.line(f"Fine-tuning from {config.init_checkpoint} (its architecture: "
              f"L{loaded_config.num_hidden_layers}/H{loaded_config.hidden_size}/"
              f"A{loaded_config.num_attention_heads})")
  return loaded_config.with_runtime_of(config.model), params, loaded.head


def _absolute(path: str) -> str:
  """A local path as an absolute one (it is read later, from anywhere); gs:// as it is."""
  return path if "://" in path else os.path.abspath(path)


def checkpoint_head(head: Any, data: finetune_data.TaskData) -> bool:
  """Whether the checkpoint's task head is this task's: the same family and labels (a
  checkpoint's generic LABEL_i names match any). Says which way it went."""
  if head is None or head.record.pretraining:
    return False
  same = ((head.family, head.num_labels) == (data.family, data.num_labels) and
          (head.generic_labels or not data.label_names or
           tuple(data.label_names) == head.label_names))
  names = f" ({', '.join(head.label_names)})" if head.label_names else ""
  if same:
    report.line(f"The task head from the checkpoint: {head.architecture}, "
                f"{head.num_labels} outputs{names}")
  else:
    report.line(f"The checkpoint's task head ({head.family}, {head.num_labels} outputs{names}) "
                f"is not this task's ({data.family}, {data.num_labels}): a fresh head")
  return same


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes as `config` says in `workdir`; resumes from its latest checkpoint.

  Returns:
    The final eval metrics, {split: {metric: value}}.
  """
  # The task's name first, in the task registry (TFDS's, so not in config/validation.py, which
  # needs no TensorFlow), and the family's own checks.
  family = registry.check_task(config)
  mesh = sharding.create_mesh(config.mesh)
  validation.validate(config, mesh)
  # One run per workdir: a second one stops here (runtime/workdir_lock.py).
  with workdir_lock.held(workdir):
    return _finetune(config, workdir, mesh, family)


def _finetune(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
              family: record.TaskFamily) -> dict[str, Any]:
  """`finetune` once the workdir is this run's: the final eval metrics."""
  tokenizer = finetune_data.load_tokenizer(config)
  model_config, pretrained, pretrained_head = model_config_of(config)
  resume.check_fits(model_config, config.data.max_seq_length, tokenizer.vocab_size)
  data = family.load(registry.task(config), config, tokenizer)
  run_config = with_steps(config, data)
  packed, step_rows = pack_task(config, data, family.packing, mesh)
  keep_head = checkpoint_head(pretrained_head, data)
  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), config.train.max_checkpoints_to_keep)
  best_checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "best"), 1)
  best_checkpointer.set_aside_unfinished()
  latest, meta = loop.saved_run(checkpointer, model_config,
                                functools.partial(check_meta, config, data, checkpointer, workdir))
  num_steps = run_config.train.num_train_steps
  if loop.already_complete(checkpointer, latest, num_steps, "Fine-tuning"):
    checkpointer.close()
    best_checkpointer.close()
    # A run stopped between its last checkpoint and best.json writes it now.
    if "best" in meta and not tf.io.gfile.exists(os.path.join(workdir, "best.json")):
      write_best(workdir, meta["best"], data.metrics[0])
    return meta.get("eval", {})

  rules = sharding.logical_axis_rules(config)
  init_rng, dropout_rng = jax.random.split(train_state.root_key(config))
  train_features = train_features_of(data, packed, family)
  example = {k: v[:1] for k, v in train_features.items()}  # The batch structure, one row.
  peak = progress.peak_tflops_per_device(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    program = finetune_program.build_program(run_config, mesh, rules, model_config,
                                             data.family, data.num_labels, example)
    run = _Run(config, run_config, workdir, model_config, data, family, tokenizer, program,
               packed, train_features, step_rows, task_meta(config, data), best_checkpointer,
               optim.learning_rate_schedule(run_config.train), peak, dropout_rng)
    task = _task(run, checkpointer)
    state, meta = loop.initial_state(
        task, latest, program.model, program.tx, example, init_rng,
        functools.partial(initial_params, config, pretrained, pretrained_head, keep_head,
                          program.state_shardings.params))
    run.best = meta.get("best", run.best)
    run.batch_offset = meta.get("batch_offset", 0)
    first = _segment(run, int(state.step) + 1, state)
    report.line(f"Compiled the fine-tuning step in {first.compile_seconds:.1f} s; "
                f"{first.flops_per_step / 1e9:,.1f} GFLOP per step")
    outcome = loop.run(task, state, dropout_rng, first, meta.get("eval", {}))
  if not outcome.preempted:
    write_best(workdir, run.best, data.metrics[0])
  return outcome.eval_metrics


def with_steps(config: ml_collections.ConfigDict, data: finetune_data.TaskData
                ) -> ml_collections.ConfigDict:
  """The config with train.num_train_steps (from the epochs when 0) and num_warmup_steps
  resolved: what the schedule and the loop count. Says what will run."""
  num_examples = len(data.train["input_ids"])
  if not num_examples:
    raise errors.UserError(f"task {data.name}: no training example could be used")
  run_config = ml_collections.ConfigDict(config.to_dict())
  train = run_config.train
  if train.num_train_steps <= 0:
    train.num_train_steps = max(1, math.ceil(
        num_examples * train.num_train_epochs / train.batch_size))
  train.num_warmup_steps = int(train.num_train_steps * train.warmup_proportion)
  report.line(f"Task {data.name}: {num_examples} training examples, {train.num_train_steps} "
              f"steps of {train.batch_size}; eval on {', '.join(e.split for e in data.evals)}")
  return run_config


def task_meta(config: ml_collections.ConfigDict, data: finetune_data.TaskData) -> dict[str, Any]:
  """What the workdir's checkpoints record of the task, for export (interop/export.py) and
  `init_checkpoint`s that start from them."""
  return {"task": data.name, "family": data.family, "num_labels": data.num_labels,
          "label_names": data.label_names,
          "vocab_file": _absolute(finetune_data.vocab_file(config)),
          "do_lower_case": config.data.do_lower_case,
          "max_seq_length": config.data.max_seq_length}


def check_meta(config: ml_collections.ConfigDict, data: finetune_data.TaskData,
                checkpointer: checkpoint.Checkpointer, workdir: str,
                meta: dict[str, Any], sweep: bool = False) -> None:
  """A workdir that holds another run stops here, before any array is read (`sweep`: the
  caller is one, finetuning/sweep.py, which checks its members itself)."""
  if "sweep" in meta and not sweep:
    raise errors.UserError(f"{checkpointer.directory} holds a sweep: give its config.sweep")
  saved = (meta.get("task"), meta.get("num_labels"))
  if saved[0] is None:
    raise errors.UserError(f"{checkpointer.directory} holds a pre-training run: fine-tune in a "
                           f"new --workdir, with --config.init_checkpoint={workdir}")
  if saved != (data.name, data.num_labels):
    raise errors.UserError(
        f"config.task={config.task!r} ({data.num_labels} labels) but {checkpointer.directory} "
        f"holds a fine-tuning run of {saved[0]!r} ({saved[1]} labels): use a new --workdir")


def train_features_of(data: finetune_data.TaskData, packed: dict[str, packing.Packed],
                    family: record.TaskFamily) -> dict[str, np.ndarray]:
  """Every training row's batch features: the family's (its dummy batch names them) and the
  packing inputs. Every batch carries example weights (all 1): the NaN guard's test poisons
  them, and the compiled step takes one batch structure. Packed text rows weigh each slot."""
  features = {**data.train, "weights": np.ones(len(data.train["input_ids"]), np.float32)}
  if "train" in packed:
    features = {"weights": np.ones(packed["train"].num_rows, np.float32),
                **packed["train"].features}
  keys = {*family.model.dummy_batch(1, 1, data.num_labels), *modeling.PACKING_INPUTS}
  return {k: v for k, v in features.items() if k in keys}


@dataclasses.dataclass
class _Run:
  """What fine-tuning's callbacks from the loop share: built once, but for the best eval so far
  and the batch offset."""
  config: ml_collections.ConfigDict  # As given: what checkpoints record.
  run_config: ml_collections.ConfigDict  # Its steps resolved (with_steps).
  workdir: str
  model_config: modeling.BertConfig
  data: finetune_data.TaskData
  family: record.TaskFamily
  tokenizer: Any
  program: finetune_program.Program
  packed: dict[str, packing.Packed]  # 'train' and eval splits, when packed.
  train_features: dict[str, np.ndarray]
  step_rows: int  # Rows of a training step.
  task_meta: dict[str, Any]
  best_checkpointer: checkpoint.Checkpointer
  schedule: optax.Schedule
  peak: tuple[float, str]  # (TFLOP/s per device, where the number comes from).
  dropout_rng: jax.Array
  best: dict[str, Any] = dataclasses.field(
      default_factory=lambda: {"step": 0, "value": -math.inf})
  # After a rollback the batches go on after the bad one: `batch_offset` steps ahead.
  batch_offset: int = 0


def _task(run: _Run, checkpointer: checkpoint.Checkpointer) -> loop.Task:
  """Fine-tuning as the loop sees it: one segment, one compiled step, one batch order."""
  program = run.program
  return loop.Task(
      workdir=run.workdir, num_steps=run.run_config.train.num_train_steps,
      train_config=run.run_config.train, profile_steps=run.config.profile.steps,
      checkpointer=checkpointer, abstract_state=program.abstract_state,
      state_shardings=program.state_shardings, batch_sharding=program.batch_sharding,
      segment=functools.partial(_segment, run),
      train_scalars=functools.partial(_train_scalars, run),
      log_fields=("loss", "learning_rate", "sequences_per_second", "mfu", "input_wait_fraction"),
      evaluate=functools.partial(_evaluate, run), meta=functools.partial(_checkpoint_meta, run),
      rolled_back=functools.partial(_rolled_back, run),
      other_checkpointers=(run.best_checkpointer,))


def initial_params(config: ml_collections.ConfigDict, pretrained: Any, pretrained_head: Any,
                    keep_head: bool, shardings: Any, params: Any) -> Any:
  """A new run's params: the encoder from config.init_checkpoint (its pre-training heads 'cls'
  unused), and its task head when it is this task's; else the fresh init."""
  if pretrained is None:
    return params
  bert = heads.reinit_top_layers(pretrained["bert"], jax.device_get(params["bert"]),
                                 config.train.reinit_top_layers)
  bert = sharding.place(bert, shardings["bert"], config.init_checkpoint)
  if not keep_head:
    return {**params, "bert": bert}
  group = pretrained_head.param_group  # A fine-tuned model's head, to fine-tune further.
  return {**params, "bert": bert,
          group: sharding.place(pretrained[group], shardings[group], config.init_checkpoint)}


def _segment(run: _Run, step: int, state: train_state.TrainState) -> loop.Segment:
  """All of fine-tuning: the compiled step, the batch order, the progress from `step`."""
  compile_start = time.perf_counter()
  abstract_batch = finetune_program.abstract_batch(
      {k: v[:1] for k, v in run.train_features.items()}, run.step_rows,
      run.program.batch_sharding)
  compiled = run.program.train_step.lower(state, abstract_batch, run.dropout_rng).compile()
  flops_per_step = step_flops(run.model_config, run.data, run.family, run.step_rows)
  train = run.run_config.train
  reporter = progress.Progress(step - 1, train.num_train_steps, train.batch_size,
                               run.data.train["input_ids"].shape[-1], flops_per_step,
                               progress.total_peak_flops(run.peak[0]))
  return loop.Segment(1, train.num_train_steps, compiled, functools.partial(_next_batch, run),
                      reporter, flops_per_step, time.perf_counter() - compile_start)


def step_flops(model_config: modeling.BertConfig, data: finetune_data.TaskData,
               family: record.TaskFamily, step_rows: int) -> float:
  """The model FLOPs of a training step: step_rows rows of seq_length (packed, they hold
  batch_size examples); a row of [choices, length] is that many sequences."""
  input_shape = data.train["input_ids"].shape
  sequences = step_rows * math.prod(input_shape[1:-1])
  return flops.finetuning_flops_per_step(
      model_config, sequences, input_shape[-1],
      family.model.head_flops(model_config, sequences, input_shape[-1], data.num_labels))


def _next_batch(run: _Run, step: int) -> dict[str, np.ndarray]:
  """This host's rows of the batch of `step`: the seeded order, `batch_offset` steps ahead."""
  num_rows = len(run.train_features["input_ids"])
  indices = finetune_program.batch_indices(num_rows, run.step_rows, step - 1 + run.batch_offset,
                                           run.config.seed)
  return rows.host_rows({k: v[indices] for k, v in run.train_features.items()})


def _train_scalars(run: _Run, pending: list[dict[str, Any]], state: train_state.TrainState,
                   step: int) -> dict[str, float]:
  """The mean loss of the steps since the last log line, and the learning rate."""
  del state  # Unused: fine-tuning logs no param norm.
  # A skipped step has no loss: the mean is over the others (none: no loss field).
  step_losses = [m["loss"] for m in jax.device_get(pending) if not m["nonfinite"]]
  scalars = {"loss": float(np.mean(step_losses))} if step_losses else {}
  scalars["learning_rate"] = float(run.schedule(step - 1))
  return scalars


def eval_outputs(program: finetune_program.Program, packed: dict[str, packing.Packed],
                 family: record.TaskFamily, params: Any, eval_set: finetune_data.EvalSet,
                 eval_batch_size: int) -> Any:
  """The model's outputs on an eval set, one row per feature (packed rows unpacked)."""
  if eval_set.split not in packed:
    return rows.predict_rows(program.predict_step, params, eval_set.features,
                             eval_batch_size, program.batch_sharding)
  split = packed[eval_set.split]
  outputs = rows.predict_rows(program.predict_step, params, split.features,
                              eval_batch_size, program.batch_sharding)
  return packing.unpack(outputs, split, family.packing)


def _evaluate(run: _Run, state: train_state.TrainState, step: int,
              writer: metrics.MetricWriter) -> tuple[dict[str, Any], str]:
  """Scores every eval set, writes its predictions, and keeps the params of the best eval by
  the task's first metric in WORKDIR/best. Never asks the loop to stop."""
  results = {}
  for eval_set in run.data.evals:
    results[eval_set.split], predictions = run.family.score(
        run.data, eval_set, eval_outputs(run.program, run.packed, run.family, state.params,
                                         eval_set, run.run_config.train.eval_batch_size),
        run.config, run.tokenizer)
    if jax.process_index() == 0:
      task_eval.write_predictions(os.path.join(run.workdir, "predictions", f"step_{step}"),
                                  eval_set.split, predictions)
    metrics.log_line(f"eval {eval_set.split}", step, results[eval_set.split])
    writer.write_scalars(f"eval/{eval_set.split}", step, results[eval_set.split])
  main_metric = run.data.metrics[0]
  value = results[run.data.evals[0].split][main_metric]
  if value > run.best["value"]:
    run.best = {"step": step, "value": value, "metric": main_metric, "eval": results}
    run.best_checkpointer.save(step, {"params": state.params}, {
        "step": step, "model": dataclasses.asdict(run.model_config), "eval": results,
        **run.task_meta}, force=True)
  return results, ""


def _checkpoint_meta(run: _Run, step: int, eval_metrics: dict[str, Any]) -> dict[str, Any]:
  """What a checkpoint keeps besides the state: the best eval, the batch order, the task."""
  return {"step": step, "model": dataclasses.asdict(run.model_config), "eval": eval_metrics,
          "best": run.best, "batch_offset": run.batch_offset, "config": run.config.to_dict(),
          **run.task_meta}


def _rolled_back(run: _Run, bad_step: int, step: int) -> None:
  """After a rollback to `step`, the batches go on after the bad one's."""
  run.batch_offset += bad_step - step


def write_best(workdir: str, best: dict[str, Any], metric: str) -> None:
  """WORKDIR/best.json: the best eval's step, metric and value (its params are in best/)."""
  if jax.process_index() == 0:
    files.write_whole(os.path.join(workdir, "best.json"),
                      (json.dumps(best, indent=1, sort_keys=True) + "\n").encode())
  report.line(f"Best {metric} {best['value']:.4f} at step {best['step']} "
              f"(params in {workdir}/best); predictions in {workdir}/predictions")
