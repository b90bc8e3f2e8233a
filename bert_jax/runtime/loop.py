"""The training loop of every mode: pre-training (both phases) and fine-tuning of every family.

A mode describes itself as a `Task`: its compiled steps and batches (one `Segment` per stretch
of steps that share them), its log line, its evaluation and its checkpoint metadata. `run` does
the rest the same way for all of them: the NaN guard and its rollback, the progress line with
ETA and MFU, metrics.jsonl and TensorBoard, evaluations, checkpoints, a save at the current step
on SIGTERM/SIGINT, the profiler. `saved_run` and `initial_state` are the start every mode shares:
"already complete", resume from the newest readable step, or create the state.
"""

import dataclasses
import datetime
import functools
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from bert_jax.model import modeling
from bert_jax.runtime import checkpoint
from bert_jax.runtime import metrics
from bert_jax.runtime import nan_guard
from bert_jax.runtime import preemption
from bert_jax.runtime import progress
from bert_jax.runtime import report
from bert_jax.runtime import resume
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state


@dataclasses.dataclass
class Segment:
  """Steps `first_step`..`last_step`, which share one compiled step and one batch stream: a
  pre-training phase, or the whole of a fine-tuning run."""
  first_step: int
  last_step: int
  # (state, batch, rng) -> (state, metrics holding at least 'nonfinite'); compiled already, so
  # that no step's time holds a compilation.
  train_step: Callable[..., Any]
  # step -> this host's rows of that step's global batch.
  next_batch: Callable[[int], dict[str, np.ndarray]]
  reporter: progress.Progress
  # For the mode's startup lines: the model FLOPs of one step, the seconds `train_step` took to
  # compile.
  flops_per_step: float
  compile_seconds: float
  # Logged when the loop enters this segment after the first (a phase switch).
  message: str = ""


@dataclasses.dataclass
class Task:
  """What a training mode gives the loop."""
  workdir: str
  num_steps: int
  # log_every_steps, eval_every_steps, checkpoint_every_steps, nan_policy, debug_nan_steps.
  train_config: ml_collections.ConfigDict
  profile_steps: str
  checkpointer: checkpoint.Checkpointer
  abstract_state: Any
  state_shardings: Any
  batch_sharding: jax.sharding.NamedSharding
  # (step, state) -> the segment that runs `step`, its progress counted from step - 1.
  segment: Callable[[int, Any], Segment]
  # (metrics of the steps since the last log line, state, step) -> scalars for TensorBoard;
  # those named in `log_fields` also go on the log line.
  train_scalars: Callable[[list[dict[str, Any]], Any, int], dict[str, float]]
  log_fields: tuple[str, ...]
  # (state, step, writer) -> (eval metrics, why to stop now: '' = go on). It logs and writes
  # its own scalars (their layout is the mode's).
  evaluate: Callable[[Any, int, metrics.MetricWriter], tuple[dict[str, Any], str]]
  # (step, latest eval metrics) -> the checkpoint's metadata.
  meta: Callable[[int, dict[str, Any]], dict[str, Any]]
  # (bad step, step rolled back to): the data goes on after the bad batch.
  rolled_back: Callable[[int, int], None] = lambda bad_step, step: None
  # Checkpointers besides `checkpointer` (fine-tuning's best/): closed with it.
  other_checkpointers: tuple[checkpoint.Checkpointer, ...] = ()


@dataclasses.dataclass
class Outcome:
  step: int
  eval_metrics: dict[str, Any]
  preempted: bool


def saved_run(checkpointer: checkpoint.Checkpointer, model_config: modeling.BertConfig,
              check_meta: Callable[[dict[str, Any]], None] = lambda meta: None
              ) -> tuple[int | None, dict[str, Any]]:
  """(newest step whose metadata reads, its metadata) of a workdir, or (None, {}).

  A save cut short by a kill is set aside first, with a line. Cheap checks on the JSON metadata
  come before any array is read: `check_meta` (the mode's), then the same architecture. Only a
  run that holds the workdir's lock calls it.
  """
  checkpointer.set_aside_unfinished()
  latest, meta = checkpointer.latest_meta()
  if latest is not None:
    check_meta(meta)
    resume.check_same_model(meta["model"], model_config, checkpointer.directory)
  return latest, meta


def already_complete(checkpointer: checkpoint.Checkpointer, latest: int | None,
                     num_steps: int, what: str) -> bool:
  """True, with a line saying so, when the workdir's run has all its steps."""
  if latest is None or latest < num_steps:
    return False
  report.line(f"{what} is already complete: step {latest} of {num_steps} in "
              f"{checkpointer.directory}; nothing to do.")
  return True


def initial_state(task: Task, latest: int | None, model: nn.Module,
                  tx: optax.GradientTransformation, shapes: dict[str, Any], init_rng: jax.Array,
                  initial_params: Callable[[Any], Any] | None = None
                  ) -> tuple[train_state.TrainState, dict[str, Any]]:
  """(the train state, the metadata it was saved with: {} when new).

  A new state is initialised on the mesh, its params then replaced by `initial_params(params)`
  when given (another checkpoint's); otherwise the newest step that reads whole is restored (a
  damaged newer one is set aside with a warning).
  """
  if latest is None:
    state = jax.jit(functools.partial(train_state.create_train_state, model=model, tx=tx,
                                      batch=shapes),
                    out_shardings=task.state_shardings)(init_rng)
    if initial_params is not None:
      state = state.replace(params=initial_params(state.params))
    return state, {}
  target = sharding.with_shardings(task.abstract_state, task.state_shardings)
  latest, state, meta = task.checkpointer.restore_latest(target)
  report.line(f"Resumed from the checkpoint at step {latest} in {task.checkpointer.directory}")
  return state, meta


def _close(task: Task) -> None:
  """Waits until the saves in flight are complete."""
  task.checkpointer.close()
  for other in task.other_checkpointers:
    other.close()


def _shut_down(task: Task, closing: tuple[Any, ...]) -> None:
  """Closes `closing` (the profiler, the writer) and finishes the saves in flight, while signals
  still wait for the loop (the caller leaves `deferring` after): a signal while the last save
  completes must not cut it short."""
  for resource in closing:
    resource.close()
  _close(task)


@dataclasses.dataclass
class _Position:
  """Where a run stands: what the loop's helpers read and move on."""
  state: train_state.TrainState
  step: int  # The last step run.
  segment: Segment
  eval_metrics: dict[str, Any]
  # Device metrics since the last log line, and the steps since the last check (the newest of
  # `pending`): fetching them is the loop's only sync.
  pending: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  pending_steps: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Due:
  """What the step just run calls for."""
  last: bool  # The run ends after this step.
  preempted: bool  # A preemption notice: checkpoint this step and stop.
  log: bool
  eval: bool
  checkpoint: bool


def _step(task: Task, at: _Position, guard: nan_guard.NonFiniteGuard,
          profiler: progress.Profiler, dropout_rng: jax.Array) -> None:
  """Runs step `at.step + 1`, in its segment, and keeps its device metrics for the next check."""
  at.step += 1
  if not at.segment.first_step <= at.step <= at.segment.last_step:  # Or back, after a rollback.
    at.segment = task.segment(at.step, at.state)
    if at.segment.message:
      report.line(at.segment.message)
  with at.segment.reporter.input():
    host_batch = guard.maybe_poison(at.step, at.segment.next_batch(at.step))
    batch = jax.make_array_from_process_local_data(task.batch_sharding, host_batch)
  profiler.before_step(at.step)
  at.state, step_metrics = at.segment.train_step(at.state, batch, dropout_rng)
  profiler.after_step(at.step, step_metrics)
  at.pending.append(step_metrics)
  at.pending_steps.append(at.step)


def _due(task: Task, at: _Position, watch: preemption.Preemption) -> _Due:
  """What step `at.step` calls for: a log line, an eval, a checkpoint, the end."""
  config, step = task.train_config, at.step
  last = step == task.num_steps
  # The end of a segment is logged and saved: a clean restart point at a phase boundary.
  segment_end = step == at.segment.last_step
  # Asked at every step but the last, so that every host stops at the same one.
  preempted = not last and watch.reached(step)
  return _Due(
      last=last, preempted=preempted,
      log=step % config.log_every_steps == 0 or last or segment_end,
      eval=bool(config.eval_every_steps and step % config.eval_every_steps == 0) or last,
      checkpoint=(step % config.checkpoint_every_steps == 0 or last or segment_end
                  or preempted))


def _rolled_back(task: Task, at: _Position, guard: nan_guard.NonFiniteGuard) -> bool:
  """Applies the NaN policy to the steps since the last check; True when it rolled `at` back to
  the newest checkpoint (train.nan_policy='rollback')."""
  # `pending` holds every step since the last log line, `pending_steps` only those since the
  # last check (a checkpoint or eval between log lines checks too): pair each with its own.
  unchecked = at.pending[len(at.pending) - len(at.pending_steps):]
  bad_step = guard.check(at.pending_steps, [m["nonfinite"] for m in unchecked])
  at.pending_steps = []
  if bad_step is None:
    return False
  at.state, at.step = resume.roll_back(task.checkpointer, task.abstract_state,
                                       task.state_shardings, bad_step)
  task.rolled_back(bad_step, at.step)
  at.pending = []
  return True


def _log(task: Task, at: _Position, writer: metrics.MetricWriter) -> None:
  """The progress line, and its scalars to metrics.jsonl and TensorBoard."""
  scalars = task.train_scalars(at.pending, at.state, at.step)
  scalars.update(at.segment.reporter.report(at.step))
  at.pending = []
  metrics.log_line("train", at.step, {
      **{name: scalars[name] for name in task.log_fields if name in scalars},
      "eta": progress.format_duration(scalars["eta_seconds"])})
  writer.write_scalars("train", at.step, scalars)


def _evaluate(task: Task, at: _Position, writer: metrics.MetricWriter, loop_start: float) -> bool:
  """Evaluates at `at.step`; True (with a line saying so) when the mode says to stop there."""
  with at.segment.reporter.excluded():  # Eval time is not training time.
    at.eval_metrics, stop = task.evaluate(at.state, at.step, writer)
  if stop:
    elapsed = datetime.timedelta(seconds=round(time.perf_counter() - loop_start))
    report.line(f"{stop} at step {at.step}, after {elapsed} of training (time-to-target)")
  return bool(stop)


def _save(task: Task, at: _Position, force: bool) -> None:
  """Starts the save of step `at.step` with the mode's metadata; `force` (the run's last step)
  saves it even where the checkpoint manager's own policy would not."""
  with at.segment.reporter.checkpoint():
    task.checkpointer.save(at.step, at.state, task.meta(at.step, at.eval_metrics), force=force)


def _preempted(task: Task, at: _Position, writer: metrics.MetricWriter) -> Outcome:
  """Ends the run after a preemption notice, once its checkpoint is saved."""
  _shut_down(task, (writer,))
  report.line(f"Preempted at step {at.step}: saved a checkpoint in "
              f"{task.checkpointer.directory}; run the same command to resume.")
  return Outcome(at.step, at.eval_metrics, preempted=True)


def run(task: Task, state: train_state.TrainState, dropout_rng: jax.Array, segment: Segment,
        eval_metrics: dict[str, Any]) -> Outcome:
  """Steps `state` to `task.num_steps` (or a stop), starting in `segment`.

  Args:
    task: The mode's description.
    state: The created or restored state.
    dropout_rng: The run's dropout key (each step folds its step number in).
    segment: The segment of the first step to run (built by the mode, which reports its
      compile time).
    eval_metrics: The latest eval metrics (a resumed run's, from its checkpoint).

  Returns:
    The last step, the latest eval metrics and whether a preemption notice stopped the run
    (its checkpoint is saved).
  """
  guard = nan_guard.NonFiniteGuard(task.train_config.nan_policy,
                                   task.train_config.debug_nan_steps)
  # A global replicated key, as the compiled step expects (device_put cannot make one across
  # processes; a jit's output sharding can).
  dropout_rng = jax.jit(lambda key: key, out_shardings=sharding.replicated(
      task.batch_sharding.mesh))(dropout_rng)
  writer = metrics.MetricWriter(task.workdir)
  profiler = progress.Profiler(task.profile_steps, f"{task.workdir}/profile")
  at = _Position(state, int(state.step), segment, eval_metrics)
  # Until the loop ends, SIGTERM / SIGINT ask for a checkpoint at the current step (the
  # command's watch, runtime/preemption.py; a library caller's loop installs its own).
  watch, own = preemption.Preemption.for_loop()
  try:
    with watch.deferring():
      return _loop(task, at, guard, profiler, writer, watch, dropout_rng)
  finally:
    if own:
      watch.uninstall()


def _loop(task: Task, at: _Position, guard: nan_guard.NonFiniteGuard,
          profiler: progress.Profiler, writer: metrics.MetricWriter,
          watch: preemption.Preemption, dropout_rng: jax.Array) -> Outcome:
  """`run`'s steps, with signals waiting for a step boundary."""
  try:
    loop_start = time.perf_counter()  # Time-to-target counts from here, like MLPerf's.
    while at.step < task.num_steps:
      _step(task, at, guard, profiler, dropout_rng)
      due = _due(task, at, watch)
      # Before any log line, eval (it may end the run) or checkpoint: the steps since the last
      # check were all finite.
      if (due.log or due.checkpoint or due.eval) and _rolled_back(task, at, guard):
        continue
      if due.log:
        _log(task, at, writer)
      if due.eval and _evaluate(task, at, writer, loop_start):
        due.last = due.checkpoint = True  # An MLPerf-style stop: save, then end.
      if due.checkpoint:
        _save(task, at, force=due.last)
      if due.preempted:
        return _preempted(task, at, writer)
      if due.last:
        break
  except BaseException:
    # Whatever stops the loop (a user error, a damaged record, a second Ctrl-C), the saves in
    # flight are finished first: what was saved stays saved.
    _shut_down(task, (profiler,))
    raise
  _shut_down(task, (profiler, writer))
  return Outcome(at.step, at.eval_metrics, preempted=False)
