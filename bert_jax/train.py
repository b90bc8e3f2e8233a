"""Pre-training: the train state, `train_step` / `eval_step`, and `train_and_evaluate`.

Reads top to bottom: build the data, the model and the mesh; create or restore the state; then
one loop of jitted steps with logging, evaluation and checkpoints at fixed intervals. With two
sequence-length phases (phases.py) the loop switches to phase 2's inputs and program once.
"""

import dataclasses
import datetime
import functools
import time
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bert_jax import checkpoint
from bert_jax import config_validation
from bert_jax import flops
from bert_jax import losses
from bert_jax import metrics
from bert_jax import modeling
from bert_jax import nan_guard
from bert_jax import optim
from bert_jax import phases
from bert_jax import preemption
from bert_jax import progress
from bert_jax import resume
from bert_jax import sharding
from bert_jax.data import inputs
from bert_jax.data import pipeline



@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def dummy_batch(batch_size: int, max_seq_length: int,
                max_predictions_per_seq: int) -> dict[str, jax.Array]:
  """A batch of the right shapes and dtypes, for init and for abstract evaluation.

  Host numpy, not device arrays: it is built under meshes of compile-only devices too (aot.py),
  where no device op can run.
  """
  tokens = np.zeros((batch_size, max_seq_length), np.int32)
  predictions = np.zeros((batch_size, max_predictions_per_seq), np.int32)
  return {
      "input_ids": tokens, "input_mask": tokens, "segment_ids": tokens,
      "masked_lm_positions": predictions, "masked_lm_ids": predictions,
      "masked_lm_weights": predictions.astype(np.float32),
      "next_sentence_labels": np.zeros((batch_size,), np.int32),
  }


def _model_inputs(batch: dict[str, jax.Array]) -> tuple[jax.Array, ...]:
  """The model's positional inputs; fine-tuning batches have no masked positions."""
  inputs = (batch["input_ids"], batch["segment_ids"], batch["input_mask"])
  if "masked_lm_positions" in batch:
    inputs += (batch["masked_lm_positions"],)
  return inputs


def init_params(rng: jax.Array, model: nn.Module, batch: dict[str, jax.Array]):
  """Params as initialised by the model, still boxed with their logical axis names."""
  return model.init({"params": rng}, *_model_inputs(batch))["params"]


def create_train_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                       batch: dict[str, jax.Array]) -> TrainState:
  params = nn.meta.unbox(init_params(rng, model, batch))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def abstract_train_state(model: nn.Module, tx: optax.GradientTransformation,
                         batch: dict[str, jax.Array], rng: jax.Array, mesh, rules
                         ) -> tuple[TrainState, TrainState]:
  """The state's shapes and its shardings, with nothing materialised.

  Params are sharded by their logical axis names; each optimizer slot (Adam's mu, nu) like the
  param it belongs to; scalars (step, counts) are replicated.

  Returns:
    (abstract state of jax.ShapeDtypeStruct, matching tree of NamedSharding).
  """
  param_shardings = sharding.logical_shardings(
      jax.eval_shape(functools.partial(init_params, model=model, batch=batch), rng), mesh, rules)
  abstract_state = jax.eval_shape(
      functools.partial(create_train_state, model=model, tx=tx, batch=batch), rng)
  state_shardings = TrainState(
      step=sharding.replicated(mesh), params=param_shardings,
      opt_state=optax.tree_utils.tree_map_params(
          tx, lambda _, s: s, abstract_state.opt_state, param_shardings,
          transform_non_params=lambda _: sharding.replicated(mesh)))
  return abstract_state, state_shardings


def _micro_batches(batch: dict[str, jax.Array], num: int) -> dict[str, jax.Array]:
  """[batch, ...] -> [num, batch // num, ...]: row j * num + i goes to micro-batch i.

  Strided rather than contiguous, so each device's shard of the batch holds its share of every
  micro-batch and no example moves between devices.
  """
  def split(x):
    x = x.reshape(x.shape[0] // num, num, *x.shape[1:])  # [batch // num, num, ...]
    x = jnp.swapaxes(x, 0, 1)  # [num, batch // num, ...]
    return nn.with_logical_constraint(x, (None, "batch") + (None,) * (x.ndim - 2))
  return jax.tree.map(split, batch)


def root_key(config: ml_collections.ConfigDict) -> jax.Array:
  """The run's root PRNG key: `config.seed` with the generator `config.rng_impl`."""
  return jax.random.key(config.seed, impl=config.rng_impl)


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               model: nn.Module, tx: optax.GradientTransformation,
               next_sentence_prediction: bool = True, grad_accum_steps: int = 1
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the MLM + NSP loss; returns the new state and summed metrics.

  With grad_accum_steps=k the batch runs as k sequential micro-batches whose gradients are
  summed: the same update as the whole batch at once (losses are normalised by the whole
  batch's weights), in 1/k of the activation memory.
  """
  # Dropout depends only on (seed, step): a resumed run draws the same dropout masks.
  dropout_rng = jax.random.fold_in(rng, state.step)
  normalizers = losses.loss_normalizers(batch)

  def loss_fn(params, micro_batch, micro_rng):
    mlm_logits, nsp_logits = model.apply(
        {"params": params}, *_model_inputs(micro_batch), deterministic=False,
        rngs={"dropout": micro_rng})
    return losses.pretraining_loss(mlm_logits, nsp_logits, micro_batch,
                                   next_sentence_prediction, normalizers)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if grad_accum_steps == 1:
    (loss, sums), grads = grad_fn(state.params, batch, dropout_rng)
  else:
    def accumulate(totals, micro):
      micro_batch, index = micro
      (loss, sums), grads = grad_fn(state.params, micro_batch,
                                    jax.random.fold_in(dropout_rng, index))
      return jax.tree.map(jnp.add, totals, (loss, sums, grads)), None

    micro_batches = _micro_batches(batch, grad_accum_steps)
    (loss_shape, sums_shape), _ = jax.eval_shape(
        grad_fn, state.params, jax.tree.map(lambda x: x[0], micro_batches), dropout_rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss_shape, sums_shape))
    # Gradients accumulate in the params' dtype (float32) and, like them, sharded.
    zeros += (jax.tree.map(jnp.zeros_like, state.params),)
    (loss, sums, grads), _ = jax.lax.scan(
        accumulate, zeros, (micro_batches, jnp.arange(grad_accum_steps)))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  # A NaN/inf loss or gradient leaves params and optimizer state untouched (nan_guard.py); the
  # step still counts, its batch is consumed.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  params, opt_state = nan_guard.keep_if_finite(finite, (params, opt_state),
                                               (state.params, state.opt_state))
  new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
  step_metrics = {**sums, "loss": loss, "grad_norm": grad_norm}
  step_metrics = jax.tree.map(lambda v: jnp.where(finite, v, 0.0), step_metrics)
  return new_state, {**step_metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}


def eval_step(params: Any, batch: dict[str, jax.Array], *, model: nn.Module,
              next_sentence_prediction: bool = True) -> dict[str, jax.Array]:
  """Summed eval metrics of one batch, no dropout."""
  mlm_logits, nsp_logits = model.apply({"params": params}, *_model_inputs(batch))
  _, sums = losses.pretraining_loss(mlm_logits, nsp_logits, batch, next_sentence_prediction)
  return sums


@dataclasses.dataclass(frozen=True)
class Program:
  """What a run compiles: the model, its optimizer, the state's layout and the jitted steps.

  Attributes:
    abstract_state: The train state as jax.ShapeDtypeStruct (nothing materialised).
    state_shardings: The matching tree of NamedSharding.
    batch_sharding: How a global batch is split over the mesh.
    train_step: jit of `train_step(state, batch, rng)`, the state donated.
    eval_step: jit of `eval_step(params, batch)`.
  """
  model: nn.Module
  tx: optax.GradientTransformation
  abstract_state: TrainState
  state_shardings: TrainState
  batch_sharding: jax.sharding.NamedSharding
  train_step: Any
  eval_step: Any


def build_program(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  rules: sharding.Rules, next_sentence_prediction: bool) -> Program:
  """The model, optimizer, shardings and jitted steps of `config` on `mesh`.

  Shared by training and by ahead-of-time compilation (aot.py), so that what is compiled for a
  TPU slice is exactly what runs there. Call it under `nn.logical_axis_rules(rules)`; the
  jitted steps must be traced (first call, or `lower`) under `jax.set_mesh(mesh)` too, for the
  activations' sharding constraints.
  """
  model = modeling.BertForPreTraining(modeling.BertConfig.from_dict(config.model.to_dict()))
  tx = optim.create_optimizer(config.train)
  shapes = dummy_batch(1, config.data.max_seq_length, config.data.max_predictions_per_seq)
  # Abstract, like everything here: no op may run under a mesh of compile-only devices.
  rng = jax.eval_shape(lambda: root_key(config))
  abstract_state, state_shardings = abstract_train_state(model, tx, shapes, rng, mesh, rules)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  replicated = sharding.replicated(mesh)
  p_train_step = jax.jit(
      functools.partial(train_step, model=model, tx=tx,
                        next_sentence_prediction=next_sentence_prediction,
                        grad_accum_steps=config.train.grad_accum_steps),
      in_shardings=(state_shardings, batch_sharding, replicated),
      out_shardings=(state_shardings, replicated),
      donate_argnums=(0,))
  p_eval_step = jax.jit(
      functools.partial(eval_step, model=model, next_sentence_prediction=next_sentence_prediction),
      in_shardings=(state_shardings.params, batch_sharding),
      out_shardings=replicated)
  return Program(model=model, tx=tx, abstract_state=abstract_state,
                 state_shardings=state_shardings, batch_sharding=batch_sharding,
                 train_step=p_train_step, eval_step=p_eval_step)


def abstract_batch(config: ml_collections.ConfigDict, batch_size: int,
                   batch_sharding: jax.sharding.NamedSharding) -> dict[str, jax.ShapeDtypeStruct]:
  """A global batch's shapes and shardings, to lower a step without any data."""
  shapes = jax.eval_shape(functools.partial(
      dummy_batch, batch_size, config.data.max_seq_length, config.data.max_predictions_per_seq))
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
          for k, v in shapes.items()}


def _sum_metrics(device_metrics: list[dict[str, jax.Array]]) -> dict[str, float]:
  host = jax.device_get(device_metrics)
  return {k: float(np.sum([m[k] for m in host])) for k in host[0]}


def evaluate(p_eval_step, params, eval_batches, batch_sharding,
             next_sentence_prediction: bool = True) -> dict[str, float]:
  """Mean losses and accuracies over the fixed held-out eval batches."""
  device_metrics = [
      p_eval_step(params, jax.make_array_from_process_local_data(batch_sharding, batch))
      for batch in eval_batches]
  return losses.summarize(_sum_metrics(device_metrics), next_sentence_prediction)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Pre-trains BERT as `config` says, in `workdir`; resumes from its latest checkpoint.

  Returns:
    The final eval metrics, with `most_frequent_token_accuracy` for comparison.
  """
  config_validation.validate(config)
  guard = nan_guard.NonFiniteGuard(config.train.nan_policy, config.train.debug_nan_steps)
  model_config = modeling.BertConfig.from_dict(config.model.to_dict())
  rules = sharding.logical_axis_rules(config)
  mesh = sharding.create_mesh(config.mesh)
  config_validation.validate_batch_sizes(config, mesh)
  # Phase 1 (the config's shapes), then phase 2 from train.phase2_start_step (phases.py).
  run_phases = phases.plan(config)

  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), config.train.max_checkpoints_to_keep)
  # The newest step whose metadata reads (an unreadable newer one is skipped with a warning).
  latest, meta = checkpointer.latest_meta()
  if latest is not None:
    # Cheap checks on the JSON metadata before reading any array.
    resume.check_same_model(meta["model"], model_config, checkpointer.directory)
    if latest >= config.train.num_train_steps:
      print(f"Training is already complete: step {latest} of "
            f"{config.train.num_train_steps} in {checkpointer.directory}; nothing to do.",
            flush=True)
      checkpointer.close()
      return meta.get("eval", {})

  # ---- Data: records, vocabulary, masking; built once into WORKDIR/data from text ----
  data = inputs.resolve(config, workdir)
  config_validation.validate_vocab(config, data.vocab_size)
  phases.check_records(run_phases, data)
  if data.vocab_size < config.model.vocab_size:
    print(f"The tokenizer has {data.vocab_size} pieces; embedding rows past them "
          f"(model.vocab_size={config.model.vocab_size}) are never used.", flush=True)
  nsp = data.next_sentence_prediction
  eval_batches = inputs.eval_batches(config, data)  # At phase 1's shapes throughout.
  baseline = inputs.most_frequent_token_accuracy(eval_batches)

  # ---- Model, optimizer, shardings, compiled steps ----
  schedule = optim.learning_rate_schedule(config.train)  # One over all phases (phases.py).
  init_rng, dropout_rng = jax.random.split(root_key(config))
  # MFU's denominator; outside the mesh, since on CPU it times a matmul on one local device.
  peak = progress.peak_tflops_per_device(config)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    # Phase 1's program: it creates or restores the state and evaluates, in every phase.
    program = build_program(config, mesh, rules, nsp)
    model, tx = program.model, program.tx
    # A global batch's layout: the same in every phase (it splits the batch axis only).
    state_shardings, batch_sharding = program.state_shardings, program.batch_sharding
    p_param_norm = jax.jit(optax.global_norm)

    # ---- Create or restore the state ----
    if latest is None:
      shapes = dummy_batch(1, config.data.max_seq_length, config.data.max_predictions_per_seq)
      state = jax.jit(
          functools.partial(create_train_state, model=model, tx=tx, batch=shapes),
          out_shardings=state_shardings)(init_rng)
      if config.init_checkpoint:
        state = state.replace(params=resume.initial_params(
            config.init_checkpoint, model_config, state_shardings.params))
    else:
      target = sharding.with_shardings(program.abstract_state, state_shardings)
      # The newest step that reads whole: the data position comes from its meta too.
      latest, state, meta = checkpointer.restore_latest(target)
      print(f"Resumed from the checkpoint at step {latest} in {checkpointer.directory}",
            flush=True)
    start_step = int(state.step)
    # A global replicated key, as the compiled step expects (device_put cannot make one across
    # processes; a jit's output sharding can).
    dropout_rng = jax.jit(lambda key: key, out_shardings=sharding.replicated(mesh))(dropout_rng)
    # Each host resumes its own stream right after the examples it has already consumed; the
    # count is kept in the checkpoint, so phases with different batch sizes add up.
    examples_consumed = int(meta.get("examples_consumed", 0)) if latest is not None else 0

    def start_phase(phase: phases.Phase, step: int):
      """Its compiled train step, its data stream from here, its progress reporter."""
      phase_config = phase.config
      phase_program = program
      if phase_config is not config:
        phase_program = build_program(phase_config, mesh, rules, nsp)
        phases.check_same_state(program, phase_program)
      batch_size = phase_config.train.batch_size
      # Compiled here, not at the first call: the compile time is reported on its own.
      compile_start = time.perf_counter()
      p_train_step = phase_program.train_step.lower(
          state, abstract_batch(phase_config, batch_size, batch_sharding),
          dropout_rng).compile()
      compile_seconds = time.perf_counter() - compile_start
      train_iter = pipeline.numpy_iterator(
          inputs.train_dataset(phase_config, phases.phase_inputs(data, phase),
                               examples_consumed // jax.process_count()),
          data.train_files, "data.input_files")
      flops_per_step = flops.pretraining_flops_per_step(
          config.model, batch_size, phase_config.data.max_seq_length,
          phase_config.data.max_predictions_per_seq)
      reporter = progress.Progress(
          step, config.train.num_train_steps, batch_size, phase_config.data.max_seq_length,
          flops_per_step, peak[0] * 1e12 * jax.device_count())
      return p_train_step, train_iter, reporter, flops_per_step, compile_seconds

    phase = phases.phase_of(run_phases, start_step + 1)  # At the boundary: phase 2.
    p_train_step, train_iter, reporter, flops_per_step, compile_seconds = start_phase(
        phase, start_step)
    progress.startup_summary(phase.config, mesh, state.params, data, flops_per_step, peak,
                             compile_seconds)

    writer = metrics.MetricWriter(workdir)
    profiler = progress.Profiler(config.profile.steps, f"{workdir}/profile")
    pending = []  # Device metrics since the last log line: fetching them is the only sync.
    eval_metrics = {}

    def save(step: int, force: bool = False) -> None:
      checkpointer.save(step, state, {
          "step": step,
          "examples_consumed": examples_consumed,
          "model": dataclasses.asdict(model_config), "eval": eval_metrics,
          "config": config.to_dict()}, force=force)

    # Until the loop ends, SIGTERM / SIGINT ask for a checkpoint at the current step.
    watch = preemption.Preemption().install()

    try:
      # ---- The loop ----
      step, pending_steps = start_step, []
      loop_start = time.perf_counter()  # Time-to-target counts from here, like MLPerf's.
      while step < config.train.num_train_steps:
        step += 1
        if step > phase.last_step or step < phase.first_step:  # Or back, after a rollback.
          phase = phases.phase_of(run_phases, step)
          p_train_step, train_iter, reporter, _, compile_seconds = start_phase(phase, step - 1)
          print(f"Phase {phase.number} from step {step}: {phase.describe()} (recompiled in "
                f"{compile_seconds:.1f} s)", flush=True)
        with reporter.input():
          host_batch = guard.maybe_poison(step, next(train_iter))
          batch = jax.make_array_from_process_local_data(batch_sharding, host_batch)
        profiler.before_step(step)
        state, step_metrics = p_train_step(state, batch, dropout_rng)
        profiler.after_step(step, step_metrics)
        examples_consumed += phase.config.train.batch_size
        pending.append(step_metrics)
        pending_steps.append(step)
        last = step == config.train.num_train_steps
        # The end of a phase is logged and saved, for a clean restart point at the boundary.
        phase_end = step == phase.last_step
        due_checkpoint = step % config.train.checkpoint_every_steps == 0 or last or phase_end
        # A preemption notice: checkpoint this step and stop (on every host at the same step).
        preempted = not last and watch.reached(step)
        due_checkpoint = due_checkpoint or preempted
        eval_every = config.train.eval_every_steps
        due_eval = (eval_every and step % eval_every == 0) or last

        # Before any log line, eval (it may end the run) or checkpoint: the steps since the
        # last check were all finite.
        due_log = step % config.train.log_every_steps == 0 or last or phase_end
        if due_log or due_checkpoint or due_eval:
          bad_step = guard.check(pending_steps, [m["nonfinite"] for m in pending])
          pending_steps = []
          if bad_step is not None:
            state, step = resume.roll_back(checkpointer, program.abstract_state,
                                           state_shardings, bad_step)
            pending = []
            continue

        if due_log:
          summed = _sum_metrics(pending)
          scalars = losses.summarize(summed, nsp)
          scalars["grad_norm"] = summed["grad_norm"] / len(pending)
          scalars["param_norm"] = float(p_param_norm(state.params))
          scalars["learning_rate"] = float(schedule(step - 1))
          scalars.update(reporter.report(step))
          pending = []
          metrics.log_line("train", step, {
              **{name: scalars[name] for name in (
                  "loss", "mlm_accuracy", "nsp_accuracy", "learning_rate",
                  "sequences_per_second", "mfu", "input_wait_fraction")},
              "eta": progress.format_duration(scalars["eta_seconds"])})
          writer.write_scalars("train", step, scalars)

        if due_eval:
          with reporter.excluded():  # Eval time is not training time.
            eval_metrics = evaluate(program.eval_step, state.params, eval_batches,
                                    batch_sharding, nsp)
          eval_metrics["most_frequent_token_accuracy"] = baseline
          metrics.log_line("eval", step, eval_metrics)
          writer.write_scalars("eval", step, eval_metrics)
          target = config.train.target_mlm_accuracy
          if 0 < target <= eval_metrics["mlm_accuracy"]:  # MLPerf-style stop: save, then end.
            elapsed = datetime.timedelta(seconds=round(time.perf_counter() - loop_start))
            print(f"Reached the target MLM accuracy {eval_metrics['mlm_accuracy']:.4f} >= "
                  f"{target} at step {step}, after {elapsed} of training (time-to-target)",
                  flush=True)
            last = due_checkpoint = True

        if due_checkpoint:
          with reporter.checkpoint():
            save(step, force=last)
        if preempted:
          writer.close()
          checkpointer.close()  # Waits until the save is complete.
          watch.uninstall()
          print(f"Preempted at step {step}: saved a checkpoint in {checkpointer.directory}; run "
                f"the same command to resume.", flush=True)
          return eval_metrics
        if last:
          break
    except BaseException:
      # Whatever stops the loop (a user error, a damaged record, a second Ctrl-C), the save in
      # flight is finished first: what was saved stays saved.
      profiler.close()
      checkpointer.close()
      watch.uninstall()
      raise

    profiler.close()
    writer.close()
    checkpointer.close()
    watch.uninstall()  # Only now: a signal while the last save completes must not cut it short.
  print(f"Final eval at step {step}: "
        f"MLM accuracy {eval_metrics['mlm_accuracy']:.4f} vs most-frequent-token baseline "
        f"{baseline:.4f}; NSP accuracy {eval_metrics['nsp_accuracy']:.4f}", flush=True)
  print(f"Checkpoints in {checkpointer.directory}, TensorBoard logs in {workdir}/tensorboard",
        flush=True)
  return eval_metrics

