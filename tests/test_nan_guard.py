"""A NaN loss injected at a given step under each train.nan_policy: never in a checkpoint."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bert_jax import errors
from bert_jax.finetuning import finetune
from bert_jax.interop import convert
from bert_jax.pretraining import train
from bert_jax.runtime import checkpoint
from bert_jax.runtime import nan_guard
from test_finetune import _config as finetune_config
from test_train import small_config, write_corpus


def _config(corpus, policy, **overrides):
  config = small_config(corpus, num_train_steps=6, log_every_steps=1, checkpoint_every_steps=2,
                        **overrides)
  config.train.update(nan_policy=policy, debug_nan_steps="3")
  return config


def _saved_params_are_finite(workdir):
  steps = sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int)
  for step in steps:
    _, params = convert.load_params(os.path.join(workdir, "checkpoints", step))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params)), step
  return steps


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def test_stop_names_the_step_and_keeps_the_last_checkpoint(tmp_path, corpus, capsys):
  with pytest.raises(errors.UserError, match="non-finite loss or gradient at step 3 "):
    train.train_and_evaluate(_config(corpus, "stop"), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  assert "train step=3 " not in capsys.readouterr().out


def test_skip_drops_the_update_and_goes_on(tmp_path, corpus, capsys):
  train.train_and_evaluate(_config(corpus, "skip"), str(tmp_path))
  out = capsys.readouterr().out
  assert "Non-finite loss or gradient at step(s) 3: update(s) skipped" in out
  assert "train step=6 " in out and "loss=nan" not in out
  _saved_params_are_finite(str(tmp_path))


def test_rollback_restores_the_checkpoint_and_goes_on(tmp_path, corpus, capsys):
  train.train_and_evaluate(_config(corpus, "rollback"), str(tmp_path))
  out = capsys.readouterr().out
  assert "rolled back to the checkpoint at step 2; going on with the data after step 3" in out
  assert out.count("train step=3 ") == 1 and "train step=6 " in out  # 3 is redone once, clean.
  _saved_params_are_finite(str(tmp_path))


def test_a_checkpoint_between_log_lines_checks_its_own_steps(tmp_path, corpus, capsys):
  # Checked at step 3 (a checkpoint) between the log lines of steps 2 and 4: the check at 4
  # pairs step 4 with its own metrics, not step 3's.
  config = _config(corpus, "rollback")
  config.train.update(log_every_steps=2, checkpoint_every_steps=3, debug_nan_steps="4")
  train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "rolled back to the checkpoint at step 3; going on with the data after step 4" in out
  assert "train step=6 " in out
  _saved_params_are_finite(str(tmp_path))

def test_bad_policy_is_a_user_error():
  with pytest.raises(errors.UserError, match="train.nan_policy='ignore'"):
    nan_guard.NonFiniteGuard("ignore")
  with pytest.raises(errors.UserError, match="train.debug_nan_steps='x'"):
    nan_guard.NonFiniteGuard("stop", "x")


@pytest.mark.parametrize("policy", ["stop", "skip", "rollback"])
def test_fine_tuning_applies_the_same_policy(tmp_path, sentencepiece_model, capsys, policy):
  for name, count in (("train.csv", 48), ("dev.csv", 8)):
    (tmp_path / name).write_text("sentence,label\n" + "".join(
        f"word{i % 7} other words here,{'yes' if i % 2 else 'no'}\n" for i in range(count)))
  config = finetune_config("classification", sentencepiece_model,
                           train_file=str(tmp_path / "train.csv"),
                           eval_file=str(tmp_path / "dev.csv"), text_a_key="sentence",
                           label_key="label", max_examples=0)
  config.train.update(nan_policy=policy, debug_nan_steps="3", checkpoint_every_steps=2,
                      num_train_steps=6, max_checkpoints_to_keep=5)
  workdir = str(tmp_path / "work")
  if policy == "stop":
    with pytest.raises(errors.UserError, match="non-finite loss or gradient at step 3 "):
      finetune.finetune(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
    return
  finetune.finetune(config, workdir)
  out = capsys.readouterr().out
  assert "loss=nan" not in out and "train step=6 " in out
  if policy == "skip":
    assert "Non-finite loss or gradient at step(s) 3: update(s) skipped" in out
  else:
    assert "rolled back to the checkpoint at step 2; going on with the data after step 3" in out
    assert out.count("train step=3 ") == 1  # Redone once, with the next batch.
    meta = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore_meta(6)
    assert meta["batch_offset"] == 1
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    state = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", step, "state"))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"])), step
