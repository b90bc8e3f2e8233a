"""Pre-training: `train_and_evaluate`, the compiled steps of train_program.py run by loop.py.

Reads top to bottom: validate the config; build the data; build the program; describe the
mode to the loop (its phases, log line, evaluation, checkpoint metadata); create or restore
the state; run the loop. With two sequence-length phases (phases.py) the loop switches to phase
2's inputs and compiled step once.
"""

import dataclasses
import time
from typing import Any

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
  model_config = modeling.BertConfig.from_config(config.model)
  rules = sharding.logical_axis_rules(config)
  # Phase 1 (the config's shapes), then phase 2 from train.phase2_start_step (phases.py).
  run_phases = phases.plan(config)
  num_steps = config.train.num_train_steps

  checkpointer = checkpoint.Checkpointer(
      checkpoint.checkpoint_dir(workdir), config.train.max_checkpoints_to_keep)
  # The newest step whose metadata reads (an unreadable newer one is skipped with a warning).
  latest, meta = loop.saved_run(checkpointer, model_config)
  if loop.already_complete(checkpointer, latest, num_steps, "Training"):
    checkpointer.close()
    return meta.get("eval", {})

  # ---- Data: records, vocabulary, masking; built once into WORKDIR/data from text ----
  data = inputs.resolve(config, workdir)
  phases.check_records(run_phases, data)
  if data.vocab_size < config.model.vocab_size:
    report.line(f"The tokenizer has {data.vocab_size} pieces; embedding rows past them "
                f"(model.vocab_size={config.model.vocab_size}) are never used.")
  nsp = data.next_sentence_prediction
  eval_batches = inputs.eval_batches(config, data)  # At phase 1's shapes throughout.
  baseline = inputs.most_frequent_token_accuracy(eval_batches)

  # ---- Model, optimizer, shardings, compiled steps ----
  schedule = optim.learning_rate_schedule(config.train)  # One over all phases (phases.py).
  init_rng, dropout_rng = jax.random.split(train_state.root_key(config))
  # MFU's denominator; outside the mesh, since on CPU it times a matmul on one local device.
  peak = progress.peak_tflops_per_device(config)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    # Phase 1's program: it creates or restores the state and evaluates, in every phase.
    program = train_program.build_program(config, mesh, rules, nsp)
    p_param_norm = jax.jit(optax.global_norm)
    # Each host resumes its own stream right after the examples it has already consumed; the
    # count is kept in the checkpoint, so phases with different batch sizes add up.
    examples_consumed = 0

    def segment(step: int, state) -> loop.Segment:
      """The phase of `step`: its compiled step, its data stream from here, its progress."""
      phase = phases.phase_of(run_phases, step)  # At the boundary: phase 2.
      phase_config = phase.config
      phase_program = program
      if phase_config is not config:
        phase_program = train_program.build_program(phase_config, mesh, rules, nsp)
        phases.check_same_state(program, phase_program)
      batch_size = phase_config.train.batch_size
      # Compiled here, not at the first call: the compile time is reported on its own.
      compile_start = time.perf_counter()
      p_train_step = phase_program.train_step.lower(
          state, train_program.abstract_batch(phase_config, batch_size, program.batch_sharding),
          dropout_rng).compile()
      compile_seconds = time.perf_counter() - compile_start
      start = phases.stream_start(run_phases, phase, data, examples_consumed)
      phase_data = phases.phase_inputs(data, phase)
      train_iter = pipeline.numpy_iterator(
          inputs.train_dataset(phase_config, phase_data, start // jax.process_count()),
          phase_data.train_files, "data.input_files")

      def next_batch(unused_step: int) -> dict[str, np.ndarray]:
        nonlocal examples_consumed
        examples_consumed += batch_size
        return next(train_iter)

      flops_per_step = flops.pretraining_flops_per_step(
          config.model, batch_size, phase_config.data.max_seq_length,
          phase_config.data.max_predictions_per_seq)
      reporter = progress.Progress(
          step - 1, num_steps, batch_size, phase_config.data.max_seq_length,
          flops_per_step, progress.total_peak_flops(peak[0]))
      return loop.Segment(
          phase.first_step, phase.last_step, p_train_step, next_batch, reporter,
          flops_per_step, compile_seconds,
          message=f"Phase {phase.number} from step {step}: {phase.describe()} (recompiled in "
                  f"{compile_seconds:.1f} s)")

    def train_scalars(pending, state, step: int) -> dict[str, float]:
      summed = train_program.sum_over_steps(pending)
      scalars = losses.summarize(summed, nsp)
      scalars["grad_norm"] = summed["grad_norm"] / len(pending)
      scalars["param_norm"] = float(p_param_norm(state.params))
      scalars["learning_rate"] = float(schedule(step - 1))
      return scalars

    def evaluate(state, step: int, writer: metrics.MetricWriter) -> tuple[dict[str, float], str]:
      eval_metrics = program.evaluate(state.params, eval_batches)
      eval_metrics["most_frequent_token_accuracy"] = baseline
      metrics.log_line("eval", step, eval_metrics)
      writer.write_scalars("eval", step, eval_metrics)
      target = config.train.target_mlm_accuracy
      if 0 < target <= eval_metrics["mlm_accuracy"]:
        return eval_metrics, (f"Reached the target MLM accuracy "
                              f"{eval_metrics['mlm_accuracy']:.4f} >= {target}")
      return eval_metrics, ""

    def checkpoint_meta(step: int, eval_metrics: dict[str, float]) -> dict[str, Any]:
      return {"step": step, "examples_consumed": examples_consumed,
              "model": dataclasses.asdict(model_config), "eval": eval_metrics,
              "config": config.to_dict()}

    task = loop.Task(
        workdir=workdir, num_steps=num_steps, train_config=config.train,
        profile_steps=config.profile.steps, checkpointer=checkpointer,
        abstract_state=program.abstract_state, state_shardings=program.state_shardings,
        batch_sharding=program.batch_sharding, segment=segment, train_scalars=train_scalars,
        log_fields=("loss", "mlm_accuracy", "nsp_accuracy", "learning_rate",
                    "sequences_per_second", "mfu", "input_wait_fraction"),
        evaluate=evaluate, meta=checkpoint_meta)

    # ---- Create or restore the state ----
    shapes = train_program.dummy_batch(1, config.data.max_seq_length,
                                       config.data.max_predictions_per_seq)
    initial_params = None
    if config.init_checkpoint:
      initial_params = lambda params: resume.initial_params(  # pylint: disable=g-long-lambda
          config.init_checkpoint, model_config, program.state_shardings.params)
    state, meta = loop.initial_state(task, latest, program.model, program.tx, shapes, init_rng,
                                     initial_params)
    examples_consumed = int(meta.get("examples_consumed", 0))

    first = segment(int(state.step) + 1, state)
    _startup_summary(phases.phase_of(run_phases, int(state.step) + 1).config, mesh,
                             state.params, data, first.flops_per_step, peak,
                             first.compile_seconds)
    outcome = loop.run(task, state, dropout_rng, first, meta.get("eval", {}))
  if outcome.preempted:
    return outcome.eval_metrics
  report.line(f"Final eval at step {outcome.step}: "
              f"{metrics.eval_summary(outcome.eval_metrics, baseline)}")
  report.line(f"Checkpoints in {checkpointer.directory}, TensorBoard logs in {workdir}/tensorboard")
  return outcome.eval_metrics
