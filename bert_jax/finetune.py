"""Fine-tuning: GLUE-style classification and regression, SQuAD spans and NER tags.

    python -m bert_jax.main --config=configs/glue.py --config.task=sst2 \
        --config.init_checkpoint=DIR --workdir=WORKDIR

Reads top to bottom like train.py: the task's data and vocabulary; the model, its encoder
params taken from `init_checkpoint` (any checkpoint interop.load_params reads; the pre-training
heads are dropped, the task head starts fresh); then one loop of jitted steps with evaluation
every `train.eval_every_steps` and at the end. WORKDIR gets `checkpoints/` (the latest states,
to resume), `best/` (the params of the best evaluation so far, by the task's first metric),
`predictions/step_N/` and `best.json`.
"""

import dataclasses
import functools
import json
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax
import tensorflow as tf

from bert_jax import checkpoint
from bert_jax import config_validation
from bert_jax import errors
from bert_jax import flops
from bert_jax import heads
from bert_jax import metrics
from bert_jax import modeling
from bert_jax import nan_guard
from bert_jax import optim
from bert_jax import preemption
from bert_jax import progress
from bert_jax import report
from bert_jax import resume
from bert_jax import sharding
from bert_jax import task_eval
from bert_jax import train_program
from bert_jax.data import finetune_data


def create_model(family: str, model_config: modeling.BertConfig, num_labels: int) -> nn.Module:
  if family == "span":
    return heads.BertForQuestionAnswering(model_config)
  if family == "token":
    return heads.BertForTokenClassification(model_config, num_labels)
  return heads.BertForSequenceClassification(model_config, num_labels)


def task_loss(family: str, outputs: Any, batch: dict[str, jax.Array]) -> jax.Array:
  """The family's loss; `batch['weights']` (1 real, 0 padding) when present."""
  weights = batch.get("weights", jnp.ones(batch["input_ids"].shape[:1], jnp.float32))
  if family == "span":
    return heads.span_loss(*outputs, batch["start_positions"], batch["end_positions"], weights)
  if family == "token":
    return heads.token_loss(outputs, batch["label_ids"],
                            batch["label_weights"] * weights[:, None])
  if family == "regression":
    return heads.regression_loss(outputs, batch["label_ids"], weights)
  return heads.classification_loss(outputs, batch["label_ids"], weights)


def finetune_step(state: train_program.TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                  model: nn.Module, tx, family: str
                  ) -> tuple[train_program.TrainState, dict[str, jax.Array]]:
  """One optimizer step on the task loss."""
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    outputs = model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                          batch["input_mask"], deterministic=False, rngs={"dropout": dropout_rng})
    return task_loss(family, outputs, batch)

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # A NaN/inf loss or gradient leaves params and optimizer state as they were (nan_guard.py).
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
  params, opt_state = nan_guard.keep_if_finite(finite, (params, opt_state),
                                               (state.params, state.opt_state))
  return (train_program.TrainState(step=state.step + 1, params=params, opt_state=opt_state),
          {"loss": jnp.where(finite, loss, 0.0),
           "nonfinite": 1.0 - finite.astype(jnp.float32)})


def predict_step(params: Any, batch: dict[str, jax.Array], *, model: nn.Module) -> Any:
  return model.apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                     batch["input_mask"])


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Rows of the global batch of `step` (0-based): epoch after epoch, each a fresh seeded
  shuffle, so a resumed run sees exactly the batches it would have seen."""
  positions = np.arange(step * batch_size, (step + 1) * batch_size)
  epochs, offsets = np.divmod(positions, num_examples)
  rows = np.empty_like(positions)
  for epoch in np.unique(epochs):
    order = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    rows[epochs == epoch] = order[offsets[epochs == epoch]]
  return rows


def _host_rows(global_batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This host's share of a global batch (rows are split evenly over the processes)."""
  count = len(next(iter(global_batch.values()))) // jax.process_count()
  start = jax.process_index() * count
  return {k: v[start:start + count] for k, v in global_batch.items()}


def _model_config(config: ml_collections.ConfigDict) -> tuple[modeling.BertConfig, Any]:
  """The architecture (the checkpoint's, when there is one) and the pre-trained params."""
  runtime = {k: config.model[k] for k in modeling.BertConfig.RUNTIME_FIELDS}
  if not config.init_checkpoint:
    report.line("No config.init_checkpoint: fine-tuning from a random init (a smoke test, not "
                "BERT).")
    return modeling.BertConfig.from_dict(config.model.to_dict()), None
  from bert_jax import interop  # pylint: disable=g-import-not-at-top
  loaded_config, params = interop.load_params(config.init_checkpoint)
  report.line(f"Fine-tuning from {config.init_checkpoint} (its architecture: "
              f"L{loaded_config.num_hidden_layers}/H{loaded_config.hidden_size}/"
              f"A{loaded_config.num_attention_heads})")
  return dataclasses.replace(loaded_config, **runtime), params


def _validate(config: ml_collections.ConfigDict, model_config: modeling.BertConfig,
              mesh: jax.sharding.Mesh, tokenizer_vocab_size: int) -> None:
  train_config, data = config.train, config.data
  config_validation.check_rng_impl(config)
  if data.max_seq_length > model_config.max_position_embeddings:
    raise errors.UserError(f"data.max_seq_length={data.max_seq_length} is larger than the "
                           f"model's max_position_embeddings={model_config.max_position_embeddings}")
  if tokenizer_vocab_size > model_config.vocab_size:
    raise errors.UserError(f"the vocabulary ({tokenizer_vocab_size} tokens) is larger than the "
                           f"model's vocab_size={model_config.vocab_size}: wrong data.vocab_file?")
  data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
  for field in ("batch_size", "eval_batch_size"):
    size = train_config[field]
    if size < 1 or size % data_parallel or size % jax.process_count():
      raise errors.UserError(f"train.{field}={size} must be a positive multiple of the "
                             f"data-parallel size {data_parallel} and of the process count")
  if config.task in finetune_data.SQUAD_TASKS and data.max_seq_length <= data.max_query_length + 3:
    raise errors.UserError(f"data.max_seq_length={data.max_seq_length} leaves no room for the "
                           f"context after data.max_query_length={data.max_query_length}")
  if train_config.num_train_epochs <= 0 and train_config.num_train_steps <= 0:
    raise errors.UserError("train.num_train_epochs and train.num_train_steps are both 0")


def predict_rows(p_predict, params, features: dict[str, np.ndarray], batch_size: int,
                 batch_sharding) -> Any:
  """The model's outputs for every row of `features`, the last batch padded then trimmed.

  Args:
    p_predict: jit of `f(params, batch)`, its batch split by `batch_sharding`.
    params: Its params.
    features: input_ids, input_mask and segment_ids (any others are left out), the same rows
      on every process.
    batch_size: Rows per call, global: a multiple of the data-parallel size and of the
      process count.
    batch_sharding: How a global batch is split over the mesh.

  Returns:
    `p_predict`'s outputs, host numpy, [len(features['input_ids']), ...], on every process.
  """
  count = len(features["input_ids"])
  padded = math.ceil(count / batch_size) * batch_size
  inputs = {k: features[k] for k in ("input_ids", "input_mask", "segment_ids")}
  inputs = {k: np.concatenate([v, np.zeros((padded - count,) + v.shape[1:], v.dtype)])
            for k, v in inputs.items()}
  outputs = []
  for start in range(0, padded, batch_size):
    global_batch = {k: v[start:start + batch_size] for k, v in inputs.items()}
    batch = jax.make_array_from_process_local_data(batch_sharding, _host_rows(global_batch))
    outputs.append(multihost_utils.process_allgather(p_predict(params, batch), tiled=True))
  return jax.tree.map(lambda *parts: np.concatenate(parts)[:count], *outputs)


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes as `config` says in `workdir`; resumes from its latest checkpoint.

  Returns:
    The final eval metrics, {split: {metric: value}}.
  """
  finetune_data.check_task(config)
  guard = nan_guard.NonFiniteGuard(config.train.nan_policy, config.train.debug_nan_steps)
  tokenizer = finetune_data.load_tokenizer(config)
  model_config, pretrained = _model_config(config)
  rules = sharding.logical_axis_rules(config)
  mesh = sharding.create_mesh(config.mesh)
  _validate(config, model_config, mesh, tokenizer.vocab_size)
  data = finetune_data.load(config, tokenizer)
  num_examples = len(data.train["input_ids"])
  if not num_examples:
    raise errors.UserError(f"task {data.name}: no training example could be used")
  train_config = ml_collections.ConfigDict(config.train.to_dict())
  if train_config.num_train_steps <= 0:
    train_config.num_train_steps = max(1, math.ceil(
        num_examples * train_config.num_train_epochs / train_config.batch_size))
  train_config.num_warmup_steps = int(train_config.num_train_steps * train_config.warmup_proportion)
  num_steps = train_config.num_train_steps
  report.line(f"Task {data.name}: {num_examples} training rows, {num_steps} steps of "
              f"{train_config.batch_size}; eval on {', '.join(e.split for e in data.evals)}")

  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), train_config.max_checkpoints_to_keep)
  best_checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "best"), 1)
  latest = checkpointer.latest_step()
  meta = checkpointer.restore_meta(latest) if latest is not None else {}
  if latest is not None:
    saved = (meta.get("task"), meta.get("num_labels"))
    if saved[0] is None:
      raise errors.UserError(f"{checkpointer.directory} holds a pre-training run: fine-tune in a "
                             f"new --workdir, with --config.init_checkpoint={workdir}")
    if saved != (data.name, data.num_labels):
      raise errors.UserError(
          f"config.task={config.task!r} ({data.num_labels} labels) but {checkpointer.directory} "
          f"holds a fine-tuning run of {saved[0]!r} ({saved[1]} labels): use a new --workdir")
    resume.check_same_model(meta["model"], model_config, checkpointer.directory)
  if latest is not None and latest >= num_steps:
    report.line(f"Fine-tuning is already complete: step {latest} of {num_steps} in "
                f"{checkpointer.directory}; nothing to do.")
    checkpointer.close()
    best_checkpointer.close()
    return meta.get("eval", {})

  model = create_model(data.family, model_config, data.num_labels)
  tx = optim.create_optimizer(train_config)
  init_rng, dropout_rng = jax.random.split(train_program.root_key(config))
  shapes = {k: v[:1] for k, v in data.train.items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract_state, state_shardings = train_program.abstract_train_state(
        model, tx, shapes, init_rng, mesh, rules)
    if latest is None:
      state = jax.jit(functools.partial(train_program.create_train_state, model=model, tx=tx,
                                        batch=shapes), out_shardings=state_shardings)(init_rng)
      if pretrained is not None:
        # The encoder from the checkpoint; the pre-training heads ('cls') are not used.
        bert = heads.reinit_top_layers(pretrained["bert"], jax.device_get(state.params["bert"]),
                                 config.train.get("reinit_top_layers", 0))
        bert = sharding.place(bert, state_shardings.params["bert"], config.init_checkpoint)
        state = state.replace(params={**state.params, "bert": bert})
    else:
      target = sharding.with_shardings(abstract_state, state_shardings)
      # The newest step that reads whole (a damaged one is set aside), and its meta.
      latest, state, meta = checkpointer.restore_latest(target)
      report.line(f"Resumed from the checkpoint at step {latest} in {checkpointer.directory}")
    start_step = int(state.step)

    batch_sharding = sharding.batch_sharding(mesh, rules)
    replicated = sharding.replicated(mesh)
    p_step = jax.jit(
        functools.partial(finetune_step, model=model, tx=tx, family=data.family),
        in_shardings=(state_shardings, batch_sharding, replicated),
        out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    p_predict = jax.jit(functools.partial(predict_step, model=model),
                        in_shardings=(state_shardings.params, batch_sharding))

    writer = metrics.MetricWriter(workdir)
    seq_length = data.train["input_ids"].shape[1]
    peak = progress.peak_tflops_per_device(config)
    reporter = progress.Progress(
        start_step, num_steps, train_config.batch_size, seq_length,
        flops.finetuning_flops_per_step(model_config, train_config.batch_size, seq_length,
                                        data.family, data.num_labels),
        peak[0] * 1e12 * jax.device_count())
    best = meta.get("best", {"step": 0, "value": -math.inf})
    batch_offset = meta.get("batch_offset", 0)
    main_metric = data.metrics[0]
    eval_metrics = meta.get("eval", {})
    pending = []

    def evaluate(step: int) -> dict[str, dict[str, float]]:
      results = {}
      for eval_set in data.evals:
        outputs = predict_rows(p_predict, state.params, eval_set.features,
                               train_config.eval_batch_size, batch_sharding)
        results[eval_set.split], predictions = task_eval.score(
            data, eval_set, outputs, config, tokenizer)
        if jax.process_index() == 0:
          task_eval.write_predictions(os.path.join(workdir, "predictions", f"step_{step}"),
                                      eval_set.split, predictions)
        metrics.log_line(f"eval {eval_set.split}", step, results[eval_set.split])
        writer.write_scalars(f"eval/{eval_set.split}", step, results[eval_set.split])
      return results

    # Until the loop ends, SIGTERM / SIGINT ask for a checkpoint at the current step.
    watch = preemption.Preemption().install()
    try:
      step, pending_steps = start_step, []
      while step < num_steps:
        step += 1
        # After a rollback the batches go on after the bad one: `batch_offset` steps ahead.
        rows = batch_indices(num_examples, train_config.batch_size, step - 1 + batch_offset,
                             config.seed)
        with reporter.input():
          global_batch = guard.maybe_poison(step, {k: v[rows] for k, v in data.train.items()})
          batch = jax.make_array_from_process_local_data(batch_sharding,
                                                         _host_rows(global_batch))
        state, step_metrics = p_step(state, batch, dropout_rng)
        if step == start_step + 1:
          reporter.report(step)  # The first step compiled the program: not in any rate.
        pending.append(step_metrics)
        pending_steps.append(step)
        last = step == num_steps
        due_log = step % train_config.log_every_steps == 0 or last
        eval_every = train_config.eval_every_steps
        due_eval = bool(eval_every and step % eval_every == 0) or last
        # A preemption notice: checkpoint this step and stop (every host at the same step).
        preempted = not last and watch.reached(step)
        due_checkpoint = step % train_config.checkpoint_every_steps == 0 or last or preempted
        if due_log or due_eval or due_checkpoint:
          # Before any log line, eval or checkpoint: the steps since the last check were finite.
          bad_step = guard.check(pending_steps, [m["nonfinite"] for m in pending])
          if bad_step is not None:
            state, step = resume.roll_back(checkpointer, abstract_state, state_shardings,
                                           bad_step)
            batch_offset += bad_step - step
            pending, pending_steps = [], []
            continue
          pending_steps = []
        if due_log:
          # A skipped step has no loss: the mean is over the others (none: no loss field).
          step_losses = [m["loss"] for m in jax.device_get(pending) if not m["nonfinite"]]
          scalars = {"loss": float(np.mean(step_losses))} if step_losses else {}
          scalars["learning_rate"] = float(optim.learning_rate_schedule(train_config)(step - 1))
          scalars.update(reporter.report(step))
          pending = []
          metrics.log_line("train", step, {
              **{name: scalars[name] for name in (
                  "loss", "learning_rate", "sequences_per_second", "mfu", "input_wait_fraction")
                 if name in scalars},
              "eta": progress.format_duration(scalars["eta_seconds"])})
          writer.write_scalars("train", step, scalars)

        if due_eval:
          with reporter.excluded():  # Eval time is not training time.
            eval_metrics = evaluate(step)
          value = eval_metrics[data.evals[0].split][main_metric]
          if value > best["value"]:
            best = {"step": step, "value": value, "metric": main_metric, "eval": eval_metrics}
            best_checkpointer.save(step, {"params": state.params}, {
                "step": step, "model": dataclasses.asdict(model_config), "eval": eval_metrics,
                "task": data.name, "label_names": data.label_names}, force=True)

        if due_checkpoint:
          with reporter.checkpoint():
            checkpointer.save(step, state, {
                "step": step, "model": dataclasses.asdict(model_config), "eval": eval_metrics,
                "best": best, "task": data.name, "num_labels": data.num_labels,
                "batch_offset": batch_offset, "config": config.to_dict()}, force=last)
        if preempted:
          writer.close()
          checkpointer.close()  # Waits until the save is complete.
          best_checkpointer.close()
          watch.uninstall()
          report.line(f"Preempted at step {step}: saved a checkpoint in "
                      f"{checkpointer.directory}; run the same command to resume.")
          return eval_metrics
    except BaseException:
      # Whatever stops the loop, the saves in flight are finished first.
      checkpointer.close()
      best_checkpointer.close()
      watch.uninstall()
      raise
    writer.close()
    checkpointer.close()
    best_checkpointer.close()
    watch.uninstall()  # Only now: a signal while the last save completes must not cut it short.
  if jax.process_index() == 0:
    with tf.io.gfile.GFile(os.path.join(workdir, "best.json"), "w") as f:
      f.write(json.dumps(best, indent=1, sort_keys=True) + "\n")
  report.line(f"Best {main_metric} {best['value']:.4f} at step {best['step']} (params in "
              f"{workdir}/best); predictions in {workdir}/predictions")
  return eval_metrics

