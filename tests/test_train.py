"""Training: a few steps reduce the loss; the real main job pre-trains, checkpoints and resumes."""

import functools
import os
import random
import subprocess
import sys

import jax
import numpy as np

from bert_jax.model import modeling
from bert_jax.pretraining import train
from bert_jax.pretraining import train_program
from bert_jax.runtime import optim
from bert_jax.runtime import train_state
from configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORDS = ("alpha beta gamma delta river stone light water green small house tree cloud "
          "north south river bird quick slow open close read write data model token").split()


def write_corpus(directory, num_documents=40, seed=0) -> str:
  """A small corpus in the original format: a sentence per line, blank line between documents."""
  rng = random.Random(seed)
  lines = []
  for _ in range(num_documents):
    topic = rng.sample(_WORDS, 4)
    for _ in range(rng.randint(4, 9)):
      words = [rng.choice(topic if rng.random() < 0.6 else _WORDS) for _ in range(rng.randint(5, 14))]
      lines.append(" ".join(words).capitalize() + ".")
    lines.append("")
  path = os.path.join(directory, "corpus.txt")
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def small_config(corpus_file: str, **train_overrides):
  config = tiny.get_config()
  # float32, not what 'auto' picks here: these runs are compared with HF and with each other.
  config.model.update(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                      dtype="float32")
  # The original's objective (tiny.py's laptop recipe drops NSP and masks 45%).
  config.data.update(source="text", input_files=corpus_file, max_seq_length=32,
                     max_predictions_per_seq=5, num_eval_documents=6, dupe_factor=2,
                     shuffle_buffer_size=100, masked_lm_prob=0.15,
                     next_sentence_prediction=True)
  config.train.update(batch_size=8, eval_batch_size=8, num_train_steps=6, num_warmup_steps=2,
                      log_every_steps=2, eval_every_steps=0, checkpoint_every_steps=3,
                      max_eval_steps=2)
  config.train.update(train_overrides)
  return config


def test_a_few_steps_reduce_the_loss():
  config = small_config("")
  config.train.update(num_train_steps=40, learning_rate=3e-3, num_warmup_steps=1)
  model = modeling.BertForPreTraining(modeling.BertConfig.from_dict(config.model.to_dict()))
  tx = optim.create_optimizer(config.train)
  rng = np.random.default_rng(0)
  batch = train_program.dummy_batch(8, 32, 5)
  batch = {k: np.array(v) for k, v in batch.items()}
  batch["input_ids"] = rng.integers(5, 128, (8, 32)).astype(np.int32)
  batch["input_mask"][:] = 1
  batch["masked_lm_positions"] = rng.integers(1, 31, (8, 5)).astype(np.int32)
  batch["masked_lm_ids"] = np.take_along_axis(batch["input_ids"], batch["masked_lm_positions"], 1)
  batch["masked_lm_weights"][:] = 1
  batch["next_sentence_labels"] = rng.integers(0, 2, 8).astype(np.int32)
  state, losses = train_on_one_batch(model, tx, batch, 40)
  assert int(state.step) == 40
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses


def train_on_one_batch(model, tx, batch, num_steps):
  """The state after `num_steps` train steps on the same batch, and each step's loss."""
  state = train_state.create_train_state(jax.random.key(0), model, tx, batch)
  step = jax.jit(functools.partial(train_program.train_step, model=model, tx=tx))
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  return state, losses


def test_pretrain_resume_and_finish(tmp_path, capsys):
  corpus = write_corpus(str(tmp_path))
  workdir = str(tmp_path / "work")
  first = train.train_and_evaluate(small_config(corpus), workdir)
  out = capsys.readouterr().out
  assert "train step=2 " in out and "train step=6 " in out
  assert "eval step=6 " in out and "most-frequent-token baseline" in out
  assert 0.0 <= first["mlm_accuracy"] <= 1.0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert os.listdir(os.path.join(workdir, "tensorboard"))

  # Same workdir, more steps: resumes at 6 (no restart from 0) and goes on to 9.
  second = train.train_and_evaluate(small_config(corpus, num_train_steps=9), workdir)
  out = capsys.readouterr().out
  assert "Resumed from the checkpoint at step 6" in out
  assert "train step=2 " not in out and "train step=8 " in out
  assert "9" in os.listdir(os.path.join(workdir, "checkpoints"))

  # Same command again: training is complete, nothing runs.
  again = train.train_and_evaluate(small_config(corpus, num_train_steps=9), workdir)
  out = capsys.readouterr().out
  assert "already complete" in out and "train step" not in out
  assert again == second  # The final eval, kept in the checkpoint's metadata.


def test_resume_with_a_different_model_is_an_error(tmp_path):
  corpus = write_corpus(str(tmp_path))
  workdir = str(tmp_path / "work")
  train.train_and_evaluate(small_config(corpus, num_train_steps=3), workdir)
  config = small_config(corpus, num_train_steps=6)
  config.model.intermediate_size = 96
  try:
    train.train_and_evaluate(config, workdir)
  except ValueError as e:
    assert "model.intermediate_size=96" in str(e)
  else:
    raise AssertionError("a changed model shape resumed silently")


def test_main_cli_runs_and_reports_bad_config_in_one_line(tmp_path):
  corpus = write_corpus(str(tmp_path))
  base = [sys.executable, "-m", "bert_jax.main", "--config=configs/tiny.py",
          f"--workdir={tmp_path / 'cli'}", "--config.data.source=text",
          f"--config.data.input_files={corpus}", "--config.model.vocab_size=128",
          "--config.model.hidden_size=32", "--config.model.num_hidden_layers=1",
          "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64",
          "--config.data.max_seq_length=32", "--config.data.max_predictions_per_seq=5",
          "--config.data.num_eval_documents=6", "--config.train.batch_size=4",
          "--config.train.eval_batch_size=4", "--config.train.num_train_steps=2",
          "--config.train.log_every_steps=1", "--config.train.max_eval_steps=1"]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  run = subprocess.run(base, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "train step=2 " in run.stdout

  bad = subprocess.run(base + ["--config.model.num_attention_heads=5"], cwd=REPO,
                       capture_output=True, text=True, env=env, timeout=300)
  assert bad.returncode != 0
  last = bad.stderr.strip().splitlines()[-1]
  assert last.startswith("bert_jax: error: model.hidden_size=32 is not divisible by "
                         "model.num_attention_heads=5"), bad.stderr[-2000:]
  assert "Traceback" not in bad.stderr


def test_sequence_length_phases_share_one_prepared_data_set(tmp_path, capsys):
  """Prepare once at 32, train a 16 phase, then resume the same workdir at 32."""
  corpus = write_corpus(str(tmp_path))
  workdir = str(tmp_path / "work")
  config = small_config(corpus, num_train_steps=3)
  config.data.update(max_seq_length=16, prepare_seq_length=32, max_predictions_per_seq=3)
  train.train_and_evaluate(config, workdir)
  assert "train step=2 " in capsys.readouterr().out
  config = small_config(corpus, num_train_steps=5, batch_size=4)
  config.data.update(max_seq_length=32, prepare_seq_length=32)
  train.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert "Resumed from the checkpoint at step 3" in out and "train step=5 " in out
  assert "Preparing" not in out  # The data set was not made again.
  # Phase 1's 3 steps of 8 and phase 2's 2 steps of 4 examples.
  from bert_jax.runtime import checkpoint  # pylint: disable=g-import-not-at-top
  meta = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).restore_meta(5)
  assert meta["examples_consumed"] == 3 * 8 + 2 * 4
  # Longer than prepared is an error that names the fields.
  config.data.update(max_seq_length=48, prepare_seq_length=0)
  config.train.num_train_steps = 6
  try:
    train.train_and_evaluate(config, workdir)
  except ValueError as e:
    assert "data.max_seq_length=48" in str(e) and "prepared at 32" in str(e)
  else:
    raise AssertionError("a phase longer than the prepared data ran")


def test_roberta_recipe_without_nsp_and_with_whole_word_masking(tmp_path, capsys):
  corpus = write_corpus(str(tmp_path))
  config = small_config(corpus, num_train_steps=2)
  config.data.update(next_sentence_prediction=False, whole_word_masking=True,
                     masked_lm_prob=0.3, max_predictions_per_seq=10)
  config.rng_impl = "unsafe_rbg"  # And the cheaper dropout bits, init to checkpoint.
  result = train.train_and_evaluate(config, str(tmp_path / "work"))
  # Without NSP the loss is the MLM loss alone, and no NSP metric reads like a result.
  assert abs(result["loss"] - result["mlm_loss"]) < 1e-6
  assert not [name for name in result if name.startswith("nsp_")]
  out = capsys.readouterr().out
  assert "train step=2 " in out and "nsp_" not in out and "NSP" not in out


def test_records_prepared_beforehand_with_a_google_layout_wordpiece_vocab(tmp_path, capsys):
  """prepare's CLI with a vocab.txt whose special ids are Google's ([CLS]=101), then train."""
  from bert_jax.pretraining.data import inputs  # pylint: disable=g-import-not-at-top
  corpus = write_corpus(str(tmp_path))
  vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]",
                                                               "[MASK]"]
           + sorted(set(_WORDS)) + [".", "##s"])
  vocab_file = tmp_path / "vocab.txt"
  vocab_file.write_text("\n".join(vocab) + "\n")
  out = tmp_path / "records"
  prepare = subprocess.run(
      [sys.executable, "-m", "bert_jax.pretraining.prepare", f"--input_file={corpus}",
       f"--vocab_file={vocab_file}", f"--output_dir={out}", "--max_seq_length=32",
       "--num_eval_documents=6", "--dupe_factor=2", "--num_workers=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert prepare.returncode == 0, prepare.stderr[-3000:]

  config = small_config("", num_train_steps=2)
  config.model.vocab_size = len(vocab)
  config.data.update(source="tfrecord", input_files=f"{out}/train-*.tfrecord",
                     eval_input_files=f"{out}/eval.tfrecord", vocab_file=str(vocab_file))
  data = inputs.resolve(config, str(tmp_path / "work"))
  assert (data.masking_config.cls_id, data.masking_config.mask_id) == (101, 103)
  batch = next(inputs.train_dataset(config, data, 0).as_numpy_iterator())
  assert (batch["input_ids"][:, 0] == 101).all() and (batch["input_ids"] == 103).any()
  real = batch["masked_lm_weights"] > 0
  assert not np.isin(batch["masked_lm_ids"][real], [0, 100, 101, 102, 103]).any()
  train.train_and_evaluate(config, str(tmp_path / "work"))
  assert "train step=2 " in capsys.readouterr().out


def test_init_checkpoint_from_a_workdir_and_from_an_hf_export(tmp_path, capsys):
  """Continued pre-training starts from another run's params (ours, or exported to HF)."""
  from bert_jax.interop import convert  # pylint: disable=g-import-not-at-top
  corpus = write_corpus(str(tmp_path))
  first = str(tmp_path / "first")
  train.train_and_evaluate(small_config(corpus, num_train_steps=3), first)
  _, trained = convert.load_params(first)
  hf_dir = str(tmp_path / "hf")
  convert.save_hf(hf_dir, modeling.BertConfig.from_dict(small_config("").model.to_dict()),
                  trained)
  for source in (first, hf_dir):
    # Warmup starts at a learning rate of 0, so after step 1 the params are still the loaded ones.
    config = small_config(corpus, num_train_steps=1, num_warmup_steps=5)
    config.init_checkpoint = source
    workdir = str(tmp_path / f"from_{os.path.basename(source)}")
    train.train_and_evaluate(config, workdir)
    assert f"Initialised the params from {source}" in capsys.readouterr().out
    _, started = convert.load_params(workdir)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                           started, trained)
  # A checkpoint of another model shape is refused, naming the field.
  config = small_config(corpus, num_train_steps=1)
  config.model.intermediate_size = 96
  config.init_checkpoint = hf_dir
  try:
    train.train_and_evaluate(config, str(tmp_path / "other"))
  except ValueError as e:
    assert "model.intermediate_size=96" in str(e)
  else:
    raise AssertionError("a checkpoint of another shape was loaded")
