"""Pre-training: `train_and_evaluate`, the loop around the compiled steps of train_program.py.

Reads top to bottom: build the data, the model and the mesh; create or restore the state; then
one loop of jitted steps with logging, evaluation and checkpoints at fixed intervals. With two
sequence-length phases (phases.py) the loop switches to phase 2's inputs and program once.
"""

import dataclasses
import datetime
import functools
import time

import flax.linen as nn
import jax
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
from bert_jax import report
from bert_jax import resume
from bert_jax import sharding
from bert_jax import train_program
from bert_jax.data import inputs
from bert_jax.data import pipeline


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
      report.line(f"Training is already complete: step {latest} of "
                  f"{config.train.num_train_steps} in {checkpointer.directory}; nothing to do.")
      checkpointer.close()
      return meta.get("eval", {})

  # ---- Data: records, vocabulary, masking; built once into WORKDIR/data from text ----
  data = inputs.resolve(config, workdir)
  config_validation.validate_vocab(config, data.vocab_size)
  phases.check_records(run_phases, data)
  if data.vocab_size < config.model.vocab_size:
    report.line(f"The tokenizer has {data.vocab_size} pieces; embedding rows past them "
                f"(model.vocab_size={config.model.vocab_size}) are never used.")
  nsp = data.next_sentence_prediction
  eval_batches = inputs.eval_batches(config, data)  # At phase 1's shapes throughout.
  baseline = inputs.most_frequent_token_accuracy(eval_batches)

  # ---- Model, optimizer, shardings, compiled steps ----
  schedule = optim.learning_rate_schedule(config.train)  # One over all phases (phases.py).
  init_rng, dropout_rng = jax.random.split(train_program.root_key(config))
  # MFU's denominator; outside the mesh, since on CPU it times a matmul on one local device.
  peak = progress.peak_tflops_per_device(config)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    # Phase 1's program: it creates or restores the state and evaluates, in every phase.
    program = train_program.build_program(config, mesh, rules, nsp)
    model, tx = program.model, program.tx
    # A global batch's layout: the same in every phase (it splits the batch axis only).
    state_shardings, batch_sharding = program.state_shardings, program.batch_sharding
    p_param_norm = jax.jit(optax.global_norm)

    # ---- Create or restore the state ----
    if latest is None:
      shapes = train_program.dummy_batch(1, config.data.max_seq_length,
                                     config.data.max_predictions_per_seq)
      state = jax.jit(
          functools.partial(train_program.create_train_state, model=model, tx=tx, batch=shapes),
          out_shardings=state_shardings)(init_rng)
      if config.init_checkpoint:
        state = state.replace(params=resume.initial_params(
            config.init_checkpoint, model_config, state_shardings.params))
    else:
      target = sharding.with_shardings(program.abstract_state, state_shardings)
      # The newest step that reads whole: the data position comes from its meta too.
      latest, state, meta = checkpointer.restore_latest(target)
      report.line(f"Resumed from the checkpoint at step {latest} in {checkpointer.directory}")
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
        phase_program = train_program.build_program(phase_config, mesh, rules, nsp)
        phases.check_same_state(program, phase_program)
      batch_size = phase_config.train.batch_size
      # Compiled here, not at the first call: the compile time is reported on its own.
      compile_start = time.perf_counter()
      p_train_step = phase_program.train_step.lower(
          state, train_program.abstract_batch(phase_config, batch_size, batch_sharding),
          dropout_rng).compile()
      compile_seconds = time.perf_counter() - compile_start
      start = phases.stream_start(run_phases, phase, data, examples_consumed)
      phase_data = phases.phase_inputs(data, phase)
      train_iter = pipeline.numpy_iterator(
          inputs.train_dataset(phase_config, phase_data, start // jax.process_count()),
          phase_data.train_files, "data.input_files")
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
          report.line(f"Phase {phase.number} from step {step}: {phase.describe()} (recompiled in "
                      f"{compile_seconds:.1f} s)")
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
                  "sequences_per_second", "mfu", "input_wait_fraction") if name in scalars},
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
            report.line(f"Reached the target MLM accuracy {eval_metrics['mlm_accuracy']:.4f} >= "
                        f"{target} at step {step}, after {elapsed} of training (time-to-target)")
            last = due_checkpoint = True

        if due_checkpoint:
          with reporter.checkpoint():
            save(step, force=last)
        if preempted:
          writer.close()
          checkpointer.close()  # Waits until the save is complete.
          watch.uninstall()
          report.line(f"Preempted at step {step}: saved a checkpoint in {checkpointer.directory}; "
                      f"run the same command to resume.")
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
  report.line(f"Final eval at step {step}: {metrics.eval_summary(eval_metrics, baseline)}")
  report.line(f"Checkpoints in {checkpointer.directory}, TensorBoard logs in {workdir}/tensorboard")
  return eval_metrics

