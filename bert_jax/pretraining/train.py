"""Pre-training: `train_and_evaluate`, the compiled steps of train_program.py run by loop.py.

Reads top to bottom: validate the config; build the data; build the program; describe the
mode to the loop (its phases, log line, evaluation, checkpoint metadata); create or restore
the state; run the loop. The loop's callbacks are module-level functions over `_Run`, which
holds what they share; the one thing in it that moves is the count of examples consumed, which
each checkpoint keeps. With two sequence-length phases (phases.py) the loop switches to phase
2's inputs and compiled step once.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from bert_jax.config import validation
from bert_jax.model import flops
from bert_jax.model import losses
from bert_jax.model import modeling
from bert_jax.pretraining import phases
from bert_jax.pretraining import train_program
from bert_jax.pretraining.data import damaged_records
from bert_jax.pretraining.data import inputs
from bert_jax.pretraining.data import pipeline
from bert_jax.runtime import checkpoint
from bert_jax.runtime import loop
from bert_jax.runtime import metrics
from bert_jax.runtime import optim
from bert_jax.runtime import progress
from bert_jax.runtime import report
from bert_jax.runtime import resume
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from bert_jax.runtime import workdir_lock


def _startup_summary(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, params,
                    data: inputs.Inputs, flops_per_step: float, peak: tuple[float, str],
                    compile_seconds: float) -> None:
  """A few lines saying what is about to run, from process 0."""
  if jax.process_index() != 0:
    return
  model, train = config.model, config.train
  devices = jax.devices()
  mesh_axes = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
  num_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
  seq_length = config.data.max_seq_length
  tokens = train.batch_size * seq_length
  report.line(f"Devices: {len(devices)} x {devices[0].device_kind} ({devices[0].platform}) on "
              f"{jax.process_count()} process(es); mesh {mesh_axes}")
  report.line(f"Model: {num_params / 1e6:,.1f}M params (L{model.num_hidden_layers}/"
              f"H{model.hidden_size}/A{model.num_attention_heads}/I{model.intermediate_size}, "
              f"vocab {model.vocab_size}), {model.dtype} compute, scan_layers={model.scan_layers}, "
              f"remat={model.remat_policy}")
  report.line(f"Batch: {train.batch_size} sequences global, "
              f"{train.batch_size // jax.process_count()} per host, x {seq_length} tokens = "
              f"{tokens:,} tokens per step, "
              f"{config.data.max_predictions_per_seq} predictions per sequence")
  files = f" {config.data.input_files}" if config.data.input_files else ""
  report.line(f"Data: data.source={config.data.source!r}{files}; {len(data.train_files)} "
              f"training and {len(data.eval_files)} eval record files")
  report.line(f"Compiled the train step in {compile_seconds:.1f} s; {flops_per_step / 1e9:,.1f} "
              f"GFLOP per step; MFU against {peak[0]:,.2f} TFLOP/s per device ({peak[1]})")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Pre-trains BERT as `config` says, in `workdir`; resumes from its latest checkpoint.

  Returns:
    The final eval metrics, with `most_frequent_token_accuracy` for comparison.
  """
  mesh = sharding.create_mesh(config.mesh)
  validation.validate(config, mesh)
  # One run per workdir: a second one stops here (runtime/workdir_lock.py).
  with workdir_lock.held(workdir):
    return _pretrain(config, workdir, mesh)


def _pretrain(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh
              ) -> dict[str, float]:
  """`train_and_evaluate` once the workdir is this run's: the final eval metrics."""
  model_config = modeling.BertConfig.from_config(config.model)
  rules = sharding.logical_axis_rules(config)
  # Phase 1 (the config's shapes), then phase 2 from train.phase2_start_step (phases.py).
  run_phases = phases.plan(config)
  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), config.train.max_checkpoints_to_keep)
  # The newest step whose metadata reads (an unreadable newer one is skipped with a warning).
  latest, meta = loop.saved_run(checkpointer, model_config)
  if loop.already_complete(checkpointer, latest, config.train.num_train_steps, "Training"):
    checkpointer.close()
    return meta.get("eval", {})

  data, eval_batches, baseline, damaged = _data(config, workdir, run_phases)
  schedule = optim.learning_rate_schedule(config.train)  # One over all phases (phases.py).
  init_rng, dropout_rng = jax.random.split(train_state.root_key(config))
  # MFU's denominator; outside the mesh, since on CPU it times a matmul on one local device.
  peak = progress.peak_tflops_per_device(config)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    # Phase 1's program: it creates or restores the state and evaluates, in every phase.
    program = train_program.build_program(config, mesh, rules, data.next_sentence_prediction)
    run = _Run(config, model_config, mesh, rules, run_phases, data, eval_batches, baseline,
               program, schedule, jax.jit(optax.global_norm), peak, dropout_rng, damaged)
    task = _task(run, workdir, checkpointer)
    state, meta = _initial_state(run, task, latest, init_rng)
    run.examples_consumed = int(meta.get("examples_consumed", 0))
    first = _segment(run, int(state.step) + 1, state)
    _startup_summary(phases.phase_of(run_phases, int(state.step) + 1).config, mesh, state.params,
                     data, first.flops_per_step, peak, first.compile_seconds)
    outcome = loop.run(task, state, dropout_rng, first, meta.get("eval", {}))
  if outcome.preempted:
    return outcome.eval_metrics
  count = _damaged_count(run)
  went_past = (f"; went past {count} damaged record{'s' if count > 1 else ''} "
               f"(data.skip_damaged_records)" if count else "")
  report.line(f"Final eval at step {outcome.step}: "
              f"{metrics.eval_summary(outcome.eval_metrics, baseline)}{went_past}")
  report.line(f"Checkpoints in {checkpointer.directory}, TensorBoard logs in {workdir}/tensorboard")
  return outcome.eval_metrics


def _data(config: ml_collections.ConfigDict, workdir: str, run_phases: tuple[phases.Phase, ...]
          ) -> tuple[inputs.Inputs, list[dict[str, Any]], float, dict[str, Any]]:
  """(the records, vocabulary and masking, built once into WORKDIR/data from text; the eval
  batches, at phase 1's shapes throughout; their most-frequent-token accuracy, to compare with;
  the eval files with damaged records gone past, with data.skip_damaged_records)."""
  data = inputs.resolve(config, workdir)
  phases.check_records(run_phases, data)
  if data.vocab_size < config.model.vocab_size:
    report.line(f"The tokenizer has {data.vocab_size} pieces; embedding rows past them "
                f"(model.vocab_size={config.model.vocab_size}) are never used.")
  damaged = inputs.damaged_files(config, data.eval_files, is_training=False)
  _report_damaged(damaged, "data.eval_input_files")
  eval_batches = inputs.eval_batches(config, data, damaged)
  return data, eval_batches, inputs.most_frequent_token_accuracy(eval_batches), damaged


def _report_damaged(damaged: dict[str, Any], field: str) -> None:
  if damaged:
    report.line(f"{field}: going past damaged records (data.skip_damaged_records): "
                f"{damaged_records.describe(damaged)}")


def _damaged_count(run: "_Run") -> int:
  """Damaged records this host goes past, in its eval and training files."""
  return sum(len(found.damaged) for found in run.damaged.values())


@dataclasses.dataclass
class _Run:
  """What pre-training's callbacks from the loop share: built once, but for one count."""
  config: ml_collections.ConfigDict
  model_config: modeling.BertConfig
  mesh: jax.sharding.Mesh
  rules: sharding.Rules
  run_phases: tuple[phases.Phase, ...]
  data: inputs.Inputs
  eval_batches: list[dict[str, Any]]
  baseline: float  # The eval batches' most-frequent-token accuracy, to compare with.
  program: train_program.Program  # Phase 1's.
  schedule: optax.Schedule
  param_norm: Callable[[Any], jax.Array]  # Jitted.
  peak: tuple[float, str]  # (TFLOP/s per device, where the number comes from).
  dropout_rng: jax.Array
  # Files with damaged records this run goes past (data.skip_damaged_records), by path.
  damaged: dict[str, Any]
  # Each host resumes its own stream right after the examples it has already consumed; the
  # count is kept in the checkpoint, so phases with different batch sizes add up.
  examples_consumed: int = 0


def _task(run: _Run, workdir: str, checkpointer: checkpoint.Checkpointer) -> loop.Task:
  """Pre-training as the loop sees it."""
  config, program = run.config, run.program
  return loop.Task(
      workdir=workdir, num_steps=config.train.num_train_steps, train_config=config.train,
      profile_steps=config.profile.steps, checkpointer=checkpointer,
      abstract_state=program.abstract_state, state_shardings=program.state_shardings,
      batch_sharding=program.batch_sharding, segment=functools.partial(_segment, run),
      train_scalars=functools.partial(_train_scalars, run),
      log_fields=("loss", "mlm_accuracy", "nsp_accuracy", "learning_rate",
                  "sequences_per_second", "mfu", "input_wait_fraction"),
      evaluate=functools.partial(_evaluate, run), meta=functools.partial(_checkpoint_meta, run))


def _initial_state(run: _Run, task: loop.Task, latest: int | None, init_rng: jax.Array
                   ) -> tuple[train_state.TrainState, dict[str, Any]]:
  """The restored state, or a new one (its params from config.init_checkpoint when set)."""
  config = run.config
  shapes = train_program.dummy_batch(1, config.data.max_seq_length,
                                     config.data.max_predictions_per_seq)
  initial_params = None
  if config.init_checkpoint:
    initial_params = lambda params: resume.initial_params(  # pylint: disable=g-long-lambda
        config.init_checkpoint, run.model_config, run.program.state_shardings.params)
  return loop.initial_state(task, latest, run.program.model, run.program.tx, shapes, init_rng,
                            initial_params)


def _segment(run: _Run, step: int, state: train_state.TrainState) -> loop.Segment:
  """The phase of `step`: its compiled step, its data stream from here, its progress."""
  phase = phases.phase_of(run.run_phases, step)  # At the boundary: phase 2.
  phase_config = phase.config
  phase_program = run.program
  if phase_config is not run.config:
    phase_program = train_program.build_program(phase_config, run.mesh, run.rules,
                                                run.data.next_sentence_prediction)
    phases.check_same_state(run.program, phase_program)
  batch_size = phase_config.train.batch_size
  # Compiled here, not at the first call: the compile time is reported on its own.
  compile_start = time.perf_counter()
  p_train_step = phase_program.train_step.lower(
      state, train_program.abstract_batch(phase_config, batch_size, run.program.batch_sharding),
      run.dropout_rng).compile()
  compile_seconds = time.perf_counter() - compile_start
  start = phases.stream_start(run.run_phases, phase, run.data, run.examples_consumed)
  phase_data = phases.phase_inputs(run.data, phase)
  damaged = inputs.damaged_files(phase_config, phase_data.train_files, is_training=True)
  _report_damaged(damaged, "data.input_files")
  run.damaged.update(damaged)
  train_iter = pipeline.numpy_iterator(
      inputs.train_dataset(phase_config, phase_data, start // jax.process_count(), damaged),
      phase_data.train_files, "data.input_files")
  flops_per_step = flops.pretraining_flops_per_step(
      run.config.model, batch_size, phase_config.data.max_seq_length,
      phase_config.data.max_predictions_per_seq)
  reporter = progress.Progress(
      step - 1, run.config.train.num_train_steps, batch_size, phase_config.data.max_seq_length,
      flops_per_step, progress.total_peak_flops(run.peak[0]))
  return loop.Segment(
      phase.first_step, phase.last_step, p_train_step,
      functools.partial(_next_batch, run, train_iter, batch_size), reporter,
      flops_per_step, compile_seconds,
      message=f"Phase {phase.number} from step {step}: {phase.describe()} (recompiled in "
              f"{compile_seconds:.1f} s)")


def _next_batch(run: _Run, train_iter: Iterator[dict[str, np.ndarray]], batch_size: int,
                unused_step: int) -> dict[str, np.ndarray]:
  """The stream's next batch, counted into `run.examples_consumed` (saved with each step)."""
  run.examples_consumed += batch_size
  return next(train_iter)


def _train_scalars(run: _Run, pending: list[dict[str, Any]], state: train_state.TrainState,
                   step: int) -> dict[str, float]:
  """The log line's and TensorBoard's numbers for the steps since the last log line."""
  summed = train_program.sum_over_steps(pending)
  scalars = losses.summarize(summed, run.data.next_sentence_prediction)
  scalars["grad_norm"] = summed["grad_norm"] / len(pending)
  scalars["param_norm"] = float(run.param_norm(state.params))
  scalars["learning_rate"] = float(run.schedule(step - 1))
  return scalars


def _evaluate(run: _Run, state: train_state.TrainState, step: int,
              writer: metrics.MetricWriter) -> tuple[dict[str, float], str]:
  """(eval metrics, why to stop: the MLPerf-style target reached, else '')."""
  eval_metrics = run.program.evaluate(state.params, run.eval_batches)
  eval_metrics["most_frequent_token_accuracy"] = run.baseline
  if run.config.data.skip_damaged_records:
    eval_metrics["damaged_records"] = _damaged_count(run)
  metrics.log_line("eval", step, eval_metrics)
  writer.write_scalars("eval", step, eval_metrics)
  target = run.config.train.target_mlm_accuracy
  if 0 < target <= eval_metrics["mlm_accuracy"]:
    return eval_metrics, (f"Reached the target MLM accuracy "
                          f"{eval_metrics['mlm_accuracy']:.4f} >= {target}")
  return eval_metrics, ""


def _checkpoint_meta(run: _Run, step: int, eval_metrics: dict[str, float]) -> dict[str, Any]:
  """What a checkpoint keeps besides the state: enough to resume the data and check the model."""
  return {"step": step, "examples_consumed": run.examples_consumed,
          "model": dataclasses.asdict(run.model_config), "eval": eval_metrics,
          "config": run.config.to_dict()}
