"""Two sequence-length phases in one run: the switch, and resuming on either side of it."""

import contextlib
import io
import json
import os
import re
import shutil

import numpy as np
import pytest

from bench import data_recipe
from bert_jax import errors
from bert_jax.pretraining import phases
from bert_jax.pretraining import train
from bert_jax.pretraining.data import corpus
from bert_jax.pretraining.data import inputs
from bert_jax.pretraining.data import masking
from bert_jax.pretraining.data import prepare
from bert_jax.pretraining.data import prepare_summary
from bert_jax.pretraining.data import workdir_data
from bert_jax.runtime import checkpoint
from test_train import small_config, write_corpus

_PHASE2_START = 3


def _config(corpus: str):
  """Steps 1-3 at seq 16 (3 predictions, batch 8), steps 4-6 at seq 32 (5, batch 4)."""
  config = small_config(corpus, num_train_steps=6, phase2_start_step=_PHASE2_START,
                        phase2_batch_size=4, log_every_steps=1, checkpoint_every_steps=2,
                        max_checkpoints_to_keep=10)
  config.data.update(max_seq_length=16, max_predictions_per_seq=3,
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
  # One prepare made each phase's instances at its own length, from the same documents.
  data_files = os.listdir(os.path.join(workdir, "data"))
  assert "train-00000.tfrecord" in data_files and "seq32-train-00000.tfrecord" in data_files
  assert "at length 32 (from the same documents)" in out


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
    ("data.prepare_seq_length", 24,
     "data.phase2_max_seq_length=32 is longer than the instances are prepared "
     "(data.prepare_seq_length=24)"),
    ("train.phase2_batch_size", 6, "train.phase2_batch_size=6 is not divisible by"),
])
def test_bad_phase2_fields_are_one_line_errors(tmp_path, field, value, message):
  config = _config(write_corpus(str(tmp_path)))
  config.train.grad_accum_steps = 4  # 6 does not split into 4 micro-batches.
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(errors.UserError, match=re.escape(message)):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  assert not os.path.exists(tmp_path / "work")  # Nothing prepared, nothing compiled.


def test_each_phase_reads_pairs_made_at_its_own_length(tmp_path, sentencepiece_model, tokenizer):
  """Phase 1 sees what a direct 128 preparation gives, not 512-token pairs cut short."""
  documents = corpus.stdlib_documents()[:120]
  common = dict(short_seq_prob=0.1, dupe_factor=1, num_eval_documents=4, seed=3, num_workers=1,
                progress_interval_s=None)
  loader = prepare.TokenizerLoader(sentencepiece_model)
  both = prepare.prepare_pretraining_data(documents, loader, str(tmp_path / "both"),
                                          max_seq_length=128, extra_seq_lengths=(512,), **common)
  direct_128 = prepare.prepare_pretraining_data(documents, loader, str(tmp_path / "128"),
                                                max_seq_length=128, **common)
  direct_512 = prepare.prepare_pretraining_data(documents, loader, str(tmp_path / "512"),
                                                max_seq_length=512, **common)
  masking_config = masking.MaskingConfig(
      vocab_size=tokenizer.vocab_size, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
      mask_id=tokenizer.mask_id, special_ids=tuple(tokenizer.special_ids),
      max_predictions_per_seq=20)
  (extra,) = both["extra_lengths"]
  assert extra["max_seq_length"] == 512
  assert all(os.path.basename(f).startswith("seq512-train-") for f in extra["train_files"])
  phase1 = data_recipe.pair_statistics(both["train_files"], 128, masking_config)
  phase2 = data_recipe.pair_statistics(extra["train_files"], 512, masking_config)
  assert phase1 == data_recipe.pair_statistics(direct_128["train_files"], 128, masking_config)
  assert phase2 == data_recipe.pair_statistics(direct_512["train_files"], 512, masking_config)
  assert both["num_train_instances"] == direct_128["num_train_instances"]
  assert extra["num_train_instances"] == direct_512["num_train_instances"]
  # The old way, 512-token instances cut to 128 when read, pairs unlike the original's: A
  # is longer than B in most pairs, and there are far fewer of them.
  cut = data_recipe.pair_statistics(direct_512["train_files"], 128, masking_config)
  assert cut["a_longer"] > phase1["a_longer"] + 0.1
  assert cut["instances"] < phase1["instances"] / 2
  # Random next: half of the pairs, plus every chunk of one sentence (the original forces those),
  # whose share depends on the Python's docstrings (0.63 on 3.12's first 120 documents).
  assert 0.4 < phase1["a_longer"] < 0.65 and 0.4 < phase1["random_next"] < 0.7
  # Records made beforehand (source 'tfrecord'): phase 2 reads data.phase2_input_files.
  config = _config("")
  config.data.update(source="tfrecord", input_files=f"{tmp_path}/both/train-*.tfrecord",
                     eval_input_files=f"{tmp_path}/both/eval.tfrecord",
                     phase2_input_files=f"{tmp_path}/both/seq512-train-*.tfrecord",
                     phase2_max_seq_length=512, vocab_file=sentencepiece_model)
  config.model.vocab_size = tokenizer.vocab_size  # resolve checks the model takes every id.
  run_phases = phases.plan(config)
  data = inputs.resolve(config, str(tmp_path / "work"))
  assert phases.phase_inputs(data, run_phases[0]).train_files == both["train_files"]
  assert phases.phase_inputs(data, run_phases[1]).train_files == extra["train_files"]
  # Phase 2 starts its own records at their beginning.
  assert phases.stream_start(run_phases, run_phases[1], data, 3 * 8 + 5) == 5
  config.data.phase2_input_files = ""  # The old way: phase 2 goes on in phase 1's stream.
  data = inputs.resolve(config, str(tmp_path / "work"))
  assert phases.phase_inputs(data, run_phases[1]).train_files == both["train_files"]
  assert phases.stream_start(run_phases, run_phases[1], data, 3 * 8 + 5) == 3 * 8 + 5
  summary = prepare_summary.format_summary(both["summary"])
  assert f"at length 512 (from the same documents): {extra['num_train_instances']} train " \
         "instances" in summary


def test_data_prepared_before_phases_had_their_own_lengths_still_serves(tmp_path):
  """A workdir prepared before issue 16 (one data set at 32, a fixed eval count): accepted,
  phase 2 cutting nothing and phase 1 cutting the long instances; one prepared only at 16 has
  nothing for phase 2, and says so."""
  # pylint: disable=protected-access
  config = _config("")
  fields = workdir_data._fields(config)
  assert fields["extra_seq_lengths"] == [32]
  old = {name: value for name, value in fields.items()
         if name not in ("extra_seq_lengths", "eval_fraction", "min_eval_documents",
                         "max_eval_documents")}
  old["num_eval_documents"] = 200
  workdir_data._check_same_data({"max_seq_length": 32, "config": old}, config, "DIR")
  with pytest.raises(errors.UserError, match="train.phase2_start_step needs instances of "
                                             "data.phase2_max_seq_length=32 but DIR holds none"):
    workdir_data._check_same_data({"max_seq_length": 16, "config": old}, config, "DIR")
