"""Fine-tuning: GLUE-style classification and regression, SQuAD spans and NER tags.

    python -m bert_jax.main --config=configs/glue.py --config.task=sst2 \
        --config.init_checkpoint=DIR --workdir=WORKDIR

Reads top to bottom like train.py: validate the config; the task's data and vocabulary; the
model, its encoder params taken from `init_checkpoint` (any checkpoint convert.load_params
reads; the pre-training heads are dropped, the task head starts fresh); then the mode described
to loop.py, which runs it with every guarantee pre-training has (preemption save, NaN policy,
fallback past a damaged checkpoint, progress line), evaluating every `train.eval_every_steps`
and at the end. WORKDIR gets `checkpoints/` (the latest states, to resume), `best/` (the params
of the best evaluation so far, by the task's first metric), `predictions/step_N/` and
`best.json`.
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
import tensorflow as tf

from bert_jax import errors
from bert_jax.config import validation
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning import task_eval
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import packing
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


def _pack(config: ml_collections.ConfigDict, data: finetune_data.TaskData,
          mesh: jax.sharding.Mesh) -> tuple[dict[str, packing.Packed], int]:
  """The packed rows of the training set ('train') and of each eval split (data.packing),
  and the rows a training step takes: batch_size examples, or packed rows that hold that many
  on average."""
  if not config.data.packing or data.family not in packing.FAMILIES:
    return {}, config.train.batch_size
  packed = {"train": packing.pack(data.train, data.family)}
  packed.update({e.split: packing.pack(e.features, data.family) for e in data.evals})
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


def _model_config(config: ml_collections.ConfigDict) -> tuple[modeling.BertConfig, Any, Any]:
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


def _checkpoint_head(head: Any, data: finetune_data.TaskData) -> bool:
  """Whether the checkpoint's task head is this task's: the same family and labels (a
  checkpoint's generic LABEL_i names match any). Says which way it went."""
  if head is None or head.family == "pretraining":
    return False
  same = (head.family == data.family and head.num_labels == data.num_labels and
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
  # needs no TensorFlow).
  finetune_data.check_task(config)
  mesh = sharding.create_mesh(config.mesh)
  validation.validate(config, mesh)
  # One run per workdir: a second one stops here (runtime/workdir_lock.py).
  with workdir_lock.held(workdir):
    return _finetune(config, workdir, mesh)


def _finetune(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh
              ) -> dict[str, Any]:
  rules = sharding.logical_axis_rules(config)
  tokenizer = finetune_data.load_tokenizer(config)
  model_config, pretrained, pretrained_head = _model_config(config)
  resume.check_fits(model_config, config.data.max_seq_length, tokenizer.vocab_size)
  data = finetune_data.load(config, tokenizer)
  num_examples = len(data.train["input_ids"])
  if not num_examples:
    raise errors.UserError(f"task {data.name}: no training example could be used")
  train_config = ml_collections.ConfigDict(config.train.to_dict())
  if train_config.num_train_steps <= 0:
    train_config.num_train_steps = max(1, math.ceil(
        num_examples * train_config.num_train_epochs / train_config.batch_size))
  train_config.num_warmup_steps = int(train_config.num_train_steps * train_config.warmup_proportion)
  num_steps, batch_size = train_config.num_train_steps, train_config.batch_size
  report.line(f"Task {data.name}: {num_examples} training examples, {num_steps} steps of "
              f"{batch_size}; eval on {', '.join(e.split for e in data.evals)}")
  packed, step_rows = _pack(config, data, mesh)
  keep_head = _checkpoint_head(pretrained_head, data)
  # What the workdir's checkpoints record of the task, for export (interop/export.py) and
  # `init_checkpoint`s that start from them.
  task_meta = {"task": data.name, "family": data.family, "num_labels": data.num_labels,
               "label_names": data.label_names, "vocab_file": _absolute(finetune_data.vocab_file(config)),
               "do_lower_case": config.data.do_lower_case,
               "max_seq_length": config.data.max_seq_length}

  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), train_config.max_checkpoints_to_keep)
  best_checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "best"), 1)

  def check_meta(meta: dict[str, Any]) -> None:
    saved = (meta.get("task"), meta.get("num_labels"))
    if saved[0] is None:
      raise errors.UserError(f"{checkpointer.directory} holds a pre-training run: fine-tune in a "
                             f"new --workdir, with --config.init_checkpoint={workdir}")
    if saved != (data.name, data.num_labels):
      raise errors.UserError(
          f"config.task={config.task!r} ({data.num_labels} labels) but {checkpointer.directory} "
          f"holds a fine-tuning run of {saved[0]!r} ({saved[1]} labels): use a new --workdir")

  latest, meta = loop.saved_run(checkpointer, model_config, check_meta)
  if loop.already_complete(checkpointer, latest, num_steps, "Fine-tuning"):
    checkpointer.close()
    best_checkpointer.close()
    return meta.get("eval", {})

  model = finetune_program.create_model(data.family, model_config, data.num_labels)
  tx = optim.create_optimizer(train_config)
  schedule = optim.learning_rate_schedule(train_config)
  init_rng, dropout_rng = jax.random.split(train_state.root_key(config))
  # Every training batch carries example weights (all 1): the NaN guard's test poisons them, and
  # the compiled step takes one batch structure. Packed text rows weigh each example slot.
  train_features = {**data.train, "weights": np.ones(num_examples, np.float32)}
  if "train" in packed:
    train_features = {"weights": np.ones(packed["train"].num_rows, np.float32),
                      **packed["train"].features}
  num_rows = len(train_features["input_ids"])
  shapes = {k: v[:1] for k, v in train_features.items()}
  peak = progress.peak_tflops_per_device(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract_state, state_shardings = train_state.abstract_train_state(
        model, tx, shapes, init_rng, mesh, rules)
    batch_sharding = sharding.batch_sharding(mesh, rules)
    replicated = sharding.replicated(mesh)
    p_step = jax.jit(
        functools.partial(finetune_program.finetune_step, model=model, tx=tx,
                          family=data.family),
        in_shardings=(state_shardings, batch_sharding, replicated),
        out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    p_predict = jax.jit(functools.partial(finetune_program.predict_step, model=model),
                        in_shardings=(state_shardings.params, batch_sharding))
    # [examples, length], or [examples, choices, length]: a choice is a sequence of its own.
    seq_length = data.train["input_ids"].shape[-1]
    sequences_per_row = math.prod(data.train["input_ids"].shape[1:-1])
    main_metric = data.metrics[0]
    best = {"step": 0, "value": -math.inf}
    # After a rollback the batches go on after the bad one: `batch_offset` steps ahead.
    batch_offset = 0

    def next_batch(step: int) -> dict[str, np.ndarray]:
      indices = finetune_program.batch_indices(num_rows, step_rows, step - 1 + batch_offset,
                                               config.seed)
      return rows.host_rows({k: v[indices] for k, v in train_features.items()})

    def segment(step: int, state) -> loop.Segment:
      """All of fine-tuning: one compiled step, one batch order."""
      compile_start = time.perf_counter()
      abstract_batch = {k: jax.ShapeDtypeStruct((step_rows,) + v.shape[1:],
                                                jax.dtypes.canonicalize_dtype(v.dtype),
                                                sharding=batch_sharding)
                        for k, v in train_features.items()}
      compiled = p_step.lower(state, abstract_batch, dropout_rng).compile()
      # The work done: step_rows rows of seq_length (packed, they hold batch_size examples).
      flops_per_step = flops.finetuning_flops_per_step(
          model_config, step_rows * sequences_per_row, seq_length,
          "classification" if data.family == "multiple_choice" else data.family, data.num_labels)
      reporter = progress.Progress(step - 1, num_steps, batch_size, seq_length, flops_per_step,
                                   progress.total_peak_flops(peak[0]))
      return loop.Segment(1, num_steps, compiled, next_batch, reporter, flops_per_step,
                          time.perf_counter() - compile_start)

    def train_scalars(pending, state, step: int) -> dict[str, float]:
      del state  # Unused: fine-tuning logs no param norm.
      # A skipped step has no loss: the mean is over the others (none: no loss field).
      step_losses = [m["loss"] for m in jax.device_get(pending) if not m["nonfinite"]]
      scalars = {"loss": float(np.mean(step_losses))} if step_losses else {}
      scalars["learning_rate"] = float(schedule(step - 1))
      return scalars

    def evaluate(state, step: int, writer: metrics.MetricWriter) -> tuple[dict[str, Any], str]:
      nonlocal best
      results = {}
      for eval_set in data.evals:
        if eval_set.split in packed:
          rows_out = rows.predict_rows(p_predict, state.params, packed[eval_set.split].features,
                                       train_config.eval_batch_size, batch_sharding)
          outputs = packing.unpack(rows_out, packed[eval_set.split], data.family)
        else:
          outputs = rows.predict_rows(p_predict, state.params, eval_set.features,
                                      train_config.eval_batch_size, batch_sharding)
        results[eval_set.split], predictions = task_eval.score(
            data, eval_set, outputs, config, tokenizer)
        if jax.process_index() == 0:
          task_eval.write_predictions(os.path.join(workdir, "predictions", f"step_{step}"),
                                      eval_set.split, predictions)
        metrics.log_line(f"eval {eval_set.split}", step, results[eval_set.split])
        writer.write_scalars(f"eval/{eval_set.split}", step, results[eval_set.split])
      value = results[data.evals[0].split][main_metric]
      if value > best["value"]:
        best = {"step": step, "value": value, "metric": main_metric, "eval": results}
        best_checkpointer.save(step, {"params": state.params}, {
            "step": step, "model": dataclasses.asdict(model_config), "eval": results,
            **task_meta}, force=True)
      return results, ""

    def checkpoint_meta(step: int, eval_metrics: dict[str, Any]) -> dict[str, Any]:
      return {"step": step, "model": dataclasses.asdict(model_config), "eval": eval_metrics,
              "best": best, "batch_offset": batch_offset, "config": config.to_dict(),
              **task_meta}

    def rolled_back(bad_step: int, step: int) -> None:
      nonlocal batch_offset
      batch_offset += bad_step - step

    task = loop.Task(
        workdir=workdir, num_steps=num_steps, train_config=train_config,
        profile_steps=config.profile.steps, checkpointer=checkpointer,
        abstract_state=abstract_state, state_shardings=state_shardings,
        batch_sharding=batch_sharding, segment=segment, train_scalars=train_scalars,
        log_fields=("loss", "learning_rate", "sequences_per_second", "mfu",
                    "input_wait_fraction"),
        evaluate=evaluate, meta=checkpoint_meta, rolled_back=rolled_back,
        other_checkpointers=(best_checkpointer,))

    def initial_params(params):
      if pretrained is None:
        return params
      # The encoder from the checkpoint; the pre-training heads ('cls') are not used.
      bert = heads.reinit_top_layers(pretrained["bert"], jax.device_get(params["bert"]),
                                     config.train.reinit_top_layers)
      bert = sharding.place(bert, state_shardings.params["bert"], config.init_checkpoint)
      if keep_head:  # A fine-tuned model's head, to fine-tune further.
        group = pretrained_head.param_group
        return {**params, "bert": bert, group: sharding.place(
            pretrained[group], state_shardings.params[group], config.init_checkpoint)}
      return {**params, "bert": bert}

    state, meta = loop.initial_state(task, latest, model, tx, shapes, init_rng, initial_params)
    best = meta.get("best", best)
    batch_offset = meta.get("batch_offset", 0)
    first = segment(int(state.step) + 1, state)
    report.line(f"Compiled the fine-tuning step in {first.compile_seconds:.1f} s; "
                f"{first.flops_per_step / 1e9:,.1f} GFLOP per step")
    outcome = loop.run(task, state, dropout_rng, first, meta.get("eval", {}))
  if outcome.preempted:
    return outcome.eval_metrics
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(workdir, "best.json"), "w") as f:
      f.write(json.dumps(best, indent=1, sort_keys=True) + "\n")
  report.line(f"Best {main_metric} {best['value']:.4f} at step {best['step']} (params in "
              f"{workdir}/best); predictions in {workdir}/predictions")
  return outcome.eval_metrics
