"""Fine-tuning: heads on the pre-training encoder, the batch order, and each task family end
to end (TFDS tasks through tfds.testing.mock_data, local files, a pre-trained checkpoint)."""

import csv
import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bert_jax import errors
from bert_jax.finetuning import finetune
from bert_jax.finetuning import finetune_program
from bert_jax.finetuning.data import choices
from bert_jax.finetuning.data import example_task
from bert_jax.finetuning.data import squad
from bert_jax.model import heads
from bert_jax.model import modeling
from bert_jax.pretraining import train
from bert_jax.pretraining.data import corpus
from configs import finetune as finetune_config
from test_train import REPO, small_config, write_corpus

# TFDS datasets here come from tfds.testing.mock_data (conftest.tfds_mock_hosts).
pytestmark = pytest.mark.usefixtures("tfds_mock_hosts")

# float32, not what 'auto' picks here: predictions are compared with HF's to 1e-5.
MODEL = dict(vocab_size=256, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=64, max_position_embeddings=64, dtype="float32")


def _config(task: str, vocab_file: str, **data):
  config = finetune_config.get_config()
  config.task = task
  config.model.update(MODEL)
  config.data.update(vocab_file=vocab_file, max_seq_length=32, max_examples=24)
  config.data.update(data)
  config.train.update(batch_size=8, eval_batch_size=8, num_train_steps=3, log_every_steps=1,
                      learning_rate=1e-3)
  return config


def test_heads_keep_the_pretraining_encoder_layout():
  config = modeling.BertConfig(**MODEL)
  ids = jnp.zeros((2, 16), jnp.int32)
  pretraining = jax.eval_shape(lambda: modeling.BertForPreTraining(config).init(
      jax.random.key(0), ids, ids, ids, ids[:, :3]))["params"]
  for model, head, shape in [
      (heads.BertForSequenceClassification(config, 3), "classifier", (32, 3)),
      (heads.BertForTokenClassification(config, 9), "classifier", (32, 9)),
      (heads.BertForQuestionAnswering(config), "qa_outputs", (32, 2))]:
    params = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), ids, ids, ids))["params"]
    assert set(params) == {"bert", head}
    assert jax.tree.structure(params["bert"]) == jax.tree.structure(pretraining["bert"])
    assert nn.meta.unbox(params[head]["kernel"]).shape == shape


def test_batches_cover_each_epoch_once_and_are_reproducible():
  rows = np.concatenate([finetune_program.batch_indices(10, 4, step, seed=1) for step in range(5)])
  assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:20]) == list(range(10))
  assert not np.array_equal(rows[:10], rows[10:20])  # A fresh shuffle every epoch.
  np.testing.assert_array_equal(finetune_program.batch_indices(10, 4, 3, seed=1), rows[12:16])


def test_padding_rows_do_not_change_the_loss():
  logits = jnp.asarray([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
  labels = jnp.asarray([0, 1, 1])
  full = heads.classification_loss(logits[:2], labels[:2], jnp.ones(2))
  padded = heads.classification_loss(logits, labels, jnp.asarray([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(full, padded, rtol=1e-6)


@pytest.mark.parametrize("task, metric", [
    ("sst2", "accuracy"), ("stsb", "pearson"), ("mnli", "accuracy"), ("conll2003", "f1")])
def test_tfds_task_families_end_to_end(tmp_path, sentencepiece_model, task, metric):
  config = _config(task, sentencepiece_model)
  with tfds.testing.mock_data(num_examples=24):
    results = finetune.finetune(config, str(tmp_path))
  assert all(np.isfinite(m[metric]) for m in results.values())
  if task == "mnli":
    assert set(results) == {"validation_matched", "validation_mismatched"}
  assert json.load(open(tmp_path / "best.json"))["step"] == 3
  assert os.listdir(tmp_path / "predictions" / "step_3")


def _squad_rows(version_2: bool) -> tuple[list[dict], dict]:
  """Mock SQuAD records whose answers really are at their offsets (random mock text is not)."""
  words = "alpha beta gamma delta river stone light water green small".split()
  rng = np.random.default_rng(0)
  rows = []
  for i in range(24):
    context = " ".join(rng.choice(words, 12))
    answer = context.split()[int(rng.integers(12))]
    impossible = version_2 and i % 3 == 0
    row = {"id": f"q{i}", "title": "t", "context": context, "question": f"where is {answer}",
           "answers": {"text": [] if impossible else [answer],
                       "answer_start": [] if impossible else [context.index(answer)]}}
    if version_2:
      row["is_impossible"] = impossible
    rows.append(row)
  signature = {"id": tf.TensorSpec([], tf.string), "title": tf.TensorSpec([], tf.string),
               "context": tf.TensorSpec([], tf.string), "question": tf.TensorSpec([], tf.string),
               "answers": {"text": tf.TensorSpec([None], tf.string),
                           "answer_start": tf.TensorSpec([None], tf.int32)}}
  if version_2:
    signature["is_impossible"] = tf.TensorSpec([], tf.bool)
  return rows, signature


@pytest.mark.parametrize("version_2", [False, True])
def test_squad_end_to_end(tmp_path, sentencepiece_model, version_2):
  rows, signature = _squad_rows(version_2)

  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=signature)

  config = _config("squad_v2.0" if version_2 else "squad_v1.1", sentencepiece_model,
                   version_2_with_negative=version_2, max_query_length=8, doc_stride=8)
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    results = finetune.finetune(config, str(tmp_path))
  metrics = results["validation"]
  assert 0.0 <= metrics["exact_match"] <= metrics["f1"] <= 100.0
  files = os.listdir(tmp_path / "predictions" / "step_3")
  assert "validation_predictions.json" in files
  if version_2:
    assert "best_f1_thresh" in metrics and "NoAns_f1" in metrics
    assert "validation_null_odds.json" in files


def write_reviews(directory, num_train: int, num_dev: int) -> None:
  """directory/train.csv and dev.csv: 'review,stars' rows, 'good' exactly when 'alpha' is in
  the review (a rule a few steps can learn)."""
  rng = np.random.default_rng(0)
  words = "alpha beta gamma delta river stone light water green small".split()
  for name, count in (("train.csv", num_train), ("dev.csv", num_dev)):
    with open(directory / name, "w") as f:
      f.write("review,stars\n")
      for _ in range(count):
        sentence = list(rng.choice(words, 6))
        label = "good" if "alpha" in sentence else "bad"
        f.write(f"{' '.join(sentence)},{label}\n")


def test_pretrain_then_finetune_a_local_csv_and_resume(tmp_path, capsys):
  """The README's path: pre-train, then classify a small labelled file from that checkpoint."""
  pretrain_dir = str(tmp_path / "pretrain")
  corpus = write_corpus(str(tmp_path))
  train.train_and_evaluate(small_config(corpus, num_train_steps=2), pretrain_dir)
  write_reviews(tmp_path, 48, 16)
  config = _config("classification", "", train_file=str(tmp_path / "train.csv"),
                   eval_file=str(tmp_path / "dev.csv"), text_a_key="review", label_key="stars",
                   max_examples=0)
  config.init_checkpoint = pretrain_dir
  config.train.update(num_train_steps=0, num_train_epochs=1.0, eval_every_steps=3)
  workdir = str(tmp_path / "sst")
  results = finetune.finetune(config, workdir)
  out = capsys.readouterr().out
  assert f"Fine-tuning from {pretrain_dir}" in out
  assert "48 training examples, 6 steps" in out
  assert "eval validation step=3 " in out and "eval validation step=6 " in out
  # The progress line of pre-training: throughput, MFU, input wait, ETA.
  assert re.search(r"^train step=6 loss=\S+ learning_rate=\S+ sequences_per_second=\S+ "
                   r"mfu=0\.\d+ input_wait_fraction=\S+ eta=0s$", out, re.MULTILINE), out
  assert 0.0 <= results["validation"]["accuracy"] <= 1.0
  rows = [json.loads(line) for line in open(os.path.join(
      workdir, "predictions", "step_6", "validation.jsonl"))]
  assert len(rows) == 16 and {r["prediction"] for r in rows} <= {"bad", "good"}
  finetune.finetune(config, workdir)
  assert "Fine-tuning is already complete: step 6 of 6" in capsys.readouterr().out


def test_example_task_is_labelled_by_package(tmp_path):
  sizes = example_task.write_task(str(tmp_path))
  assert sizes["train.csv"] > 1000 and sizes["dev.csv"] > 200
  with open(tmp_path / "dev.csv") as f:
    rows = list(csv.DictReader(f))
  assert {r["label"] for r in rows} == set(example_task.PACKAGES)
  assert len(rows) == sizes["dev.csv"] and all(len(r["sentence"].split()) >= 5 for r in rows)


def test_example_squad_task_reads_as_squad(tmp_path):
  sizes = example_task.write_squad_task(str(tmp_path))
  assert sizes["train.json"] > 1000 and sizes["dev.json"] > 200
  examples = squad.read_squad_json(str(tmp_path / "train.json"), is_training=True)
  assert len(examples) == sizes["train.json"]  # Every answer is found at its offset.
  for example in examples[:50]:
    answer = " ".join(example.doc_tokens[example.start_position:example.end_position + 1])
    assert answer == example.orig_answer_text
    assert " what " in f" {example.question_text} " and answer not in example.question_text


def test_example_swag_task_reads_as_swag(tmp_path):
  sizes = example_task.write_swag_task(str(tmp_path))
  assert sizes["train.csv"] > 1000 and sizes["dev.csv"] > 200
  data = finetune_config.get_config().data
  examples = choices.read(str(tmp_path / "dev.csv"), "data.eval_file", "validation", data)
  assert len(examples) == sizes["dev.csv"]
  assert {e.label for e in examples} == {0, 1, 2, 3}  # The right ending is anywhere.
  sentences = {s for d in corpus.stdlib_documents() for s in d}
  for e in examples[:50]:
    assert len(set(e.endings)) == 4 and e.context in sentences
    assert f"{e.start} {e.endings[e.label]}" in sentences  # The sentence after the context.


def test_cli_bad_task_is_one_line_before_anything_loads(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "bert_jax.main", "--config=configs/glue.py", "--config.task=sst3",
       f"--workdir={tmp_path / 'work'}", "--config.init_checkpoint=/nonexistent"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("bert_jax: error: config.task: unknown task 'sst3'"), result.stderr
  assert not (tmp_path / "work").exists()


def test_a_workdir_of_another_task_is_an_error(tmp_path, sentencepiece_model):
  with tfds.testing.mock_data(num_examples=24):
    finetune.finetune(_config("sst2", sentencepiece_model), str(tmp_path))
    with pytest.raises(errors.UserError, match=r"holds a fine-tuning run of 'sst2' \(2 labels\)"):
      finetune.finetune(_config("mnli", sentencepiece_model), str(tmp_path))


def test_reinit_top_layers_takes_the_top_layers_and_the_pooler_from_the_fresh_init():
  def tree(value):
    return {"embeddings": {"word_embeddings": {"embedding": np.full((5, 2), value)}},
            "encoder": {"layer": {"output": {"kernel": np.full((3, 2, 2), value)}}},
            "pooler": {"kernel": np.full((2, 2), value)}}

  pretrained, fresh = tree(1.0), tree(2.0)
  assert heads.reinit_top_layers(pretrained, fresh, 0) is pretrained
  mixed = heads.reinit_top_layers(pretrained, fresh, 2)
  kernel = mixed["encoder"]["layer"]["output"]["kernel"]  # [layers, in, out]
  assert kernel[0].tolist() == [[1.0, 1.0]] * 2 and (kernel[1:] == 2.0).all()
  assert (mixed["pooler"]["kernel"] == 2.0).all()
  assert (mixed["embeddings"]["word_embeddings"]["embedding"] == 1.0).all()
  with pytest.raises(errors.UserError, match="train.reinit_top_layers=4 is more than"):
    heads.reinit_top_layers(pretrained, fresh, 4)


def test_a_damaged_fine_tuning_checkpoint_is_set_aside_and_the_run_resumes_before_it(
    tmp_path, sentencepiece_model, capsys):
  """The loop's guarantee in every mode: fine-tuning falls back past an unreadable step."""
  (tmp_path / "train.csv").write_text("sentence,label\n" + "".join(
      f"word{i % 5} and more words,{'yes' if i % 2 else 'no'}\n" for i in range(32)))
  config = _config("classification", sentencepiece_model, train_file=str(tmp_path / "train.csv"),
                   eval_file=str(tmp_path / "train.csv"), text_a_key="sentence",
                   label_key="label", max_examples=0)
  config.train.update(num_train_steps=4, checkpoint_every_steps=2, max_checkpoints_to_keep=5)
  workdir = tmp_path / "work"
  finetune.finetune(config, str(workdir))
  checkpoints = workdir / "checkpoints"
  state_files = [p for p in (checkpoints / "4" / "state").rglob("*") if p.is_file()]
  largest = max(state_files, key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.truncate(largest.stat().st_size // 2)
  capsys.readouterr()

  config.train.num_train_steps = 6
  finetune.finetune(config, str(workdir))
  out, err = capsys.readouterr()
  assert f"Warning: the checkpoint at step 4 in {checkpoints} cannot be read (" in err, err
  assert f"Resumed from the checkpoint at step 2 in {checkpoints}" in out
  assert "train step=3 " in out and "train step=6 " in out
  assert (checkpoints / "4.unreadable").is_dir() and (checkpoints / "6").is_dir()
