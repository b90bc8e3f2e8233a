"""Two sequence-length phases in one run: the switch, and resuming on either side of it."""

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest

from bert_jax import checkpoint
from bert_jax import errors
from bert_jax import phases
from bert_jax import train
from test_train import small_config, write_corpus

_PHASE2_START = 3


def _config(corpus: str):
  """Steps 1-3 at seq 16 (3 predictions, batch 8), steps 4-6 at seq 32 (5, batch 4)."""
  config = small_config(corpus, num_train_steps=6, phase2_start_step=_PHASE2_START,
                        phase2_batch_size=4, log_every_steps=1, checkpoint_every_steps=2,
                        max_checkpoints_to_keep=10)
  config.data.update(max_seq_length=16, max_predictions_per_seq=3, prepare_seq_length=32,
                     phase2_max_seq_length=32, phase2_max_predictions_per_seq=5)
  return config


def _train_losses(workdir: str) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """(corpus, workdir, stdout) of one run through both phases."""
  directory = tmp_path_factory.mktemp("phases")
  corpus = write_corpus(str(directory))
  workdir = str(directory / "uninterrupted")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train.train_and_evaluate(_config(corpus), workdir)
  return corpus, workdir, out.getvalue()


def test_one_run_switches_shapes_at_the_boundary(uninterrupted):
  _, workdir, out = uninterrupted
  assert "x 16 tokens" in out  # The start-up summary: phase 1's shapes.
  assert "Phase 2 from step 4: seq 32, 5 predictions, batch 4 (recompiled in " in out
  assert out.index("train step=3 ") < out.index("Phase 2 from step 4") < out.index(
      "train step=4 ")
  assert all(f"train step={step} " in out for step in range(1, 7))
  # Every 2 steps, and at the end of phase 1.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == ["2", "3", "4", "6"]
  meta = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore_meta(6)
  assert meta["examples_consumed"] == 3 * 8 + 3 * 4


@pytest.mark.parametrize("from_step", [2, _PHASE2_START, 4])
def test_resumed_runs_see_the_same_batches(uninterrupted, tmp_path, capsys, from_step):
  """Resumed in phase 1, exactly at the boundary, and in phase 2: the same losses."""
  corpus, first, _ = uninterrupted
  workdir = str(tmp_path / "resumed")
  shutil.copytree(first, workdir)
  os.remove(os.path.join(workdir, "metrics.jsonl"))
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    if int(step) > from_step:
      shutil.rmtree(os.path.join(workdir, "checkpoints", step))
  train.train_and_evaluate(_config(corpus), workdir)
  out = capsys.readouterr().out
  assert f"Resumed from the checkpoint at step {from_step}" in out
  # Started in phase 2 (at the boundary or after it), or switched to it on the way.
  assert ("x 32 tokens" in out) == (from_step >= _PHASE2_START)
  assert ("Phase 2 from step 4" in out) == (from_step < _PHASE2_START)
  resumed, expected = _train_losses(workdir), _train_losses(first)
  assert sorted(resumed) == list(range(from_step + 1, 7))
  np.testing.assert_allclose([resumed[s] for s in resumed], [expected[s] for s in resumed],
                             rtol=1e-6)


def test_phases_of_steps():
  config = _config("")
  run_phases = phases.plan(config)
  assert [(p.first_step, p.last_step) for p in run_phases] == [(1, 3), (4, 6)]
  assert [phases.phase_of(run_phases, s).number for s in (1, 3, 4, 6)] == [1, 1, 2, 2]
  assert run_phases[1].describe() == "seq 32, 5 predictions, batch 4"
  assert config.data.max_seq_length == 16  # The run's own config is left as it is.
  config.train.phase2_start_step = 0
  assert len(phases.plan(config)) == 1


@pytest.mark.parametrize("field, value, message", [
    ("train.phase2_start_step", 6, "train.phase2_start_step=6 must be between 1 and"),
    ("data.phase2_max_seq_length", 128,
     "data.phase2_max_seq_length=128 must be between 8 and model.max_position_embeddings=64"),
    ("data.phase2_max_predictions_per_seq", 30, "data.phase2_max_predictions_per_seq=30"),
    ("data.prepare_seq_length", 0,
     "data.phase2_max_seq_length=32 is longer than the instances are prepared"),
    ("train.phase2_batch_size", 6, "train.phase2_batch_size=6 is not divisible by"),
])
def test_bad_phase2_fields_are_one_line_errors(tmp_path, field, value, message):
  config = _config(write_corpus(str(tmp_path)))
  config.train.grad_accum_steps = 4  # 6 does not split into 4 micro-batches.
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(errors.UserError, match=message.replace("(", r"\(")):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  assert not os.path.exists(tmp_path / "work")  # Nothing prepared, nothing compiled.
