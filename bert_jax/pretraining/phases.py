"""The paper's two sequence-length phases as one run: seq 128 first, then seq 512.

BERT pre-trains 90% of its steps on sequences of 128 tokens (20 predictions each), then 10% on
512 (80 predictions), which teaches the position embeddings past 128 at a quarter of the cost
of training at 512 throughout. With `train.phase2_start_step=N`, steps 1..N run phase 1 (the
config's data.max_seq_length, data.max_predictions_per_seq, train.batch_size) and steps N+1..
num_train_steps run phase 2 (the data.phase2_* and train.phase2_batch_size fields).

What crosses the boundary, and why it can:
- The train state. Params and optimizer state do not depend on the sequence length (position
  embeddings are max_position_embeddings long in both), so the same state goes on; phase 2's
  program is checked to lay it out exactly as phase 1's (`check_same_state`).
- The data. Each phase reads instances made at its own length from the same documents, in one
  prepare (workdir_data.extra_seq_lengths), as the original prepares each phase's data: cut
  from 512-token instances, phase 1's pairs would be unlike the original's 128-token ones
  (segment A longer than B in most pairs, a third as many instances). Phase 2's stream starts
  at the beginning of its own records; resumed, after what it consumed (`examples_consumed`,
  kept in every checkpoint, less phase 1's share). With data.prepare_seq_length (or records of
  source 'tfrecord') both phases read one data set at the longer length, phase 1 cutting it
  when reading, and phase 2's stream goes on after phase 1's.
- The learning-rate schedule: one warmup/decay schedule over all num_train_steps. The
  original ran phase 2 as a second run with init_checkpoint, which loads the weights only: a
  fresh Adam, a fresh step count and so a second warmup. Here the optimizer's moments and step
  count go on through the boundary, as in one run; one schedule is the one that agrees with
  them. (The 76-minute LAMB recipe warms up again in phase 2, to a lower peak: not built.)
- Evaluation: on phase 1's shapes throughout (the fixed eval batches built at start-up), so
  that every eval of the run is on the same examples and masks, comparable along the run and
  with the one most-frequent-token baseline.

Resuming picks the phase from the restored step: a checkpoint at step N (the boundary, always
saved) or later resumes in phase 2.
"""

import dataclasses
from typing import Any

import jax
import ml_collections

from bert_jax import errors
from bert_jax.pretraining.data import inputs
from bert_jax.pretraining.data import pipeline


@dataclasses.dataclass(frozen=True)
class Phase:
  """A stretch of steps at one input shape.

  Attributes:
    number: 1 or 2.
    first_step, last_step: The steps it runs, both included (steps count from 1).
    config: The run's config with this phase's data.max_seq_length,
      data.max_predictions_per_seq and train.batch_size: what its program and data are built
      from.
  """
  number: int
  first_step: int
  last_step: int
  config: ml_collections.ConfigDict

  def describe(self) -> str:
    """'seq 512, 80 predictions, batch 256'."""
    data = self.config.data
    return (f"seq {data.max_seq_length}, {data.max_predictions_per_seq} predictions, batch "
            f"{self.config.train.batch_size}")


def plan(config: ml_collections.ConfigDict) -> tuple[Phase, ...]:
  """The run's phases: one (the config as it is), or two when train.phase2_start_step > 0."""
  num_steps = config.train.num_train_steps
  start = config.train.phase2_start_step
  if not start:
    return (Phase(1, 1, num_steps, config),)
  phase2 = config.copy_and_resolve_references()
  phase2.data.max_seq_length = config.data.phase2_max_seq_length
  phase2.data.max_predictions_per_seq = config.data.phase2_max_predictions_per_seq
  phase2.train.batch_size = config.train.phase2_batch_size or config.train.batch_size
  return (Phase(1, 1, start, config), Phase(2, start + 1, num_steps, phase2))


def phase_of(phases: tuple[Phase, ...], step: int) -> Phase:
  """The phase that runs `step` (a step past the last runs in the last phase)."""
  for phase in phases:
    if step <= phase.last_step:
      return phase
  return phases[-1]


def check_records(phases: tuple[Phase, ...], data: inputs.Inputs) -> None:
  """Phase 2 can read the training records: unmasked, and at least its length.

  Checked at start-up on the first record, not when phase 2's stream is first built, which is
  after phase 1's hours of training.
  """
  if len(phases) == 1:
    return
  length = phases[-1].config.data.max_seq_length
  files = data.length_train_files.get(length, data.train_files)
  record_format = pipeline.inspect_records(files[:1])
  where = f"the records in {files[0]}"
  if record_format.max_predictions_per_seq is not None:
    raise errors.UserError(
        f"train.phase2_start_step={phases[-1].first_step - 1} needs unmasked records, but "
        f"{where} are statically masked (length {record_format.seq_length}): they can be "
        f"neither truncated nor masked again at another length; prepare them with "
        f"`python -m bert_jax.pretraining.prepare` at data.phase2_max_seq_length={length}")
  if record_format.seq_length < length:
    raise errors.UserError(
        f"data.phase2_max_seq_length={length} is longer than {where} "
        f"({record_format.seq_length}): prepare the data at the longest length you train with")


def phase_inputs(data: inputs.Inputs, phase: Phase) -> inputs.Inputs:
  """The run's inputs for this phase: its own length's records when there are some, masking
  up to its data.max_predictions_per_seq."""
  masking_config = dataclasses.replace(
      data.masking_config, max_predictions_per_seq=phase.config.data.max_predictions_per_seq)
  train_files = data.length_train_files.get(phase.config.data.max_seq_length, data.train_files)
  return dataclasses.replace(data, masking_config=masking_config, train_files=train_files)


def stream_start(phases: tuple[Phase, ...], phase: Phase, data: inputs.Inputs,
                 examples_consumed: int) -> int:
  """Where this phase's stream starts (global examples): after what the run consumed, less
  what earlier phases consumed of other records (a phase with records of its own starts
  them at their beginning)."""
  own_files = phase_inputs(data, phase).train_files
  for earlier in phases[:phase.number - 1]:
    if phase_inputs(data, earlier).train_files != own_files:
      steps = earlier.last_step - earlier.first_step + 1
      examples_consumed -= steps * earlier.config.train.batch_size
  return examples_consumed


def check_same_state(first: Any, second: Any) -> None:
  """Two programs (train_program.Program) hold the same train state, laid out the same way.

  Both come from one model config, so this holds unless the shapes leak into the state (an
  input-shaped buffer in the params, say): then continuing phase 1's state in phase 2 would be
  wrong, and this says so before any step runs.
  """
  if jax.tree.structure(first.abstract_state) == jax.tree.structure(second.abstract_state):
    same = jax.tree.map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype,
                        first.abstract_state, second.abstract_state)
    same = jax.tree.map(lambda s, a, b: s and a == b, same, first.state_shardings,
                        second.state_shardings)
    if jax.tree.all(same):
      return
  raise ValueError("phase 2's train state differs from phase 1's in its shapes or shardings: it "
                   "cannot continue phase 1's state")
