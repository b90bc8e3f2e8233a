"""mode=predict (every head, and fill-mask) and multiple choice (SWAG) end to end."""

import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import errors
from bert_jax.finetuning import finetune
from bert_jax.finetuning import predict
from bert_jax.pretraining import train
from configs import finetune as finetune_configs
from configs import tiny
from test_finetune import _config as finetune_config
from test_train import REPO, small_config


def _rows(path):
  return [json.loads(line) for line in open(path)]


def test_predict_in_its_own_process_gives_what_eval_scored(review_classifier, tmp_path):
  data_dir, _, workdir = review_classifier
  evaluated = _rows(os.path.join(workdir, "predictions", "step_3", "validation.jsonl"))
  reviews = [row["review"] for row in csv.DictReader(open(data_dir / "dev.csv"))]
  (tmp_path / "new.txt").write_text("\n".join(reviews) + "\n")
  for name in ("dev.csv", "new.txt"):  # The task's columns, or plain lines.
    source = data_dir / name if name == "dev.csv" else tmp_path / name
    output = tmp_path / f"{name}.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "bert_jax.main", "--config=configs/finetune.py",
         f"--workdir={workdir}", "--config.mode=predict", "--config.data.text_a_key=review",
         "--config.model.dtype=float32",  # As eval scored them (compared to 1e-6).
         f"--config.predict.input_file={source}", f"--config.predict.output_file={output}"],
        capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    assert f"Predicted 12 inputs of {source} with BertForSequenceClassification" in result.stdout
    predicted = _rows(output)
    assert [p["text"] for p in predicted] == reviews
    for p, e in zip(predicted, evaluated):
      assert p["label"] == e["prediction"]
      np.testing.assert_allclose([p["probabilities"][k] for k in ("bad", "good")],
                                 [e["probabilities"][k] for k in ("bad", "good")], atol=1e-6)


def test_fill_mask_finds_the_word_on_easy_cases(tmp_path):
  phrases = ["one two three four five six.", "red green blue yellow black white.",
             "monday tuesday wednesday thursday friday."]
  rng = random.Random(0)
  lines = []
  for _ in range(60):
    lines += [rng.choice(phrases) for _ in range(6)] + [""]
  (tmp_path / "corpus.txt").write_text("\n".join(lines))
  # A word per token: what a [MASK] stands for is then one id.
  words = sorted({w for p in phrases for w in p[:-1].split()})
  (tmp_path / "vocab.txt").write_text("\n".join(
      ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + words) + "\n")
  config = small_config(str(tmp_path / "corpus.txt"), num_train_steps=300, learning_rate=5e-3,
                        num_warmup_steps=10, checkpoint_every_steps=1000, log_every_steps=100)
  config.data.update(vocab_file=str(tmp_path / "vocab.txt"), next_sentence_prediction=False,
                     masked_lm_prob=0.3)
  workdir = str(tmp_path / "pretrain")
  train.train_and_evaluate(config, workdir)
  cases = {"one two [MASK] four five six.": "three",
           "red green blue [MASK] black white.": "yellow",
           "monday tuesday [MASK] thursday [MASK].": "wednesday friday"}
  (tmp_path / "masks.txt").write_text("\n".join(cases) + "\n")
  config = tiny.get_config()
  config.mode = "predict"
  config.predict.update(input_file=str(tmp_path / "masks.txt"), top_k=3)
  output = predict.predict_file(config, workdir)
  for row in _rows(output):
    expected = cases[row["text"]].split()
    assert len(row["masks"]) == len(expected)
    for mask, word in zip(row["masks"], expected):
      assert word in [t["token"] for t in mask], (row["text"], mask)
      assert all(a["probability"] >= b["probability"] for a, b in zip(mask, mask[1:]))


def _swag_files(directory, sentencepiece_model):
  """SWAG-layout CSVs whose right ending repeats the context's last word (learnable), and the
  fine-tuning config of task=swag on them."""
  rng = np.random.default_rng(0)
  words = "alpha beta gamma delta river stone light water green small".split()
  for name, count in (("train.csv", 32), ("dev.csv", 12)):
    with open(directory / name, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label"])
      for _ in range(count):
        context = list(rng.choice(words, 5))
        label = int(rng.integers(4))
        endings = [" ".join(rng.choice(words, 3)) for _ in range(4)]
        endings[label] = f"{context[-1]} {endings[label]}"
        writer.writerow([" ".join(context), "and then", *endings, label])
  config = finetune_config("swag", sentencepiece_model, train_file=str(directory / "train.csv"),
                           eval_file=str(directory / "dev.csv"), max_examples=0)
  return config


def test_swag_fine_tunes_predicts_and_exports_as_bert_for_multiple_choice(
    sentencepiece_model, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from bert_jax.finetuning.data import choices  # pylint: disable=g-import-not-at-top
  from bert_jax.interop import export  # pylint: disable=g-import-not-at-top
  from bert_jax.tokenizers import tokenization  # pylint: disable=g-import-not-at-top
  config = _swag_files(tmp_path, sentencepiece_model)
  workdir = str(tmp_path / "swag")
  results = finetune.finetune(config, workdir)
  assert 0.0 <= results["validation"]["accuracy"] <= 1.0
  evaluated = _rows(os.path.join(workdir, "predictions", "step_3", "validation.jsonl"))
  assert len(evaluated) == 12 and len(evaluated[0]["probabilities"]) == 4

  # mode=predict on the questions without their labels: what eval scored.
  rows = list(csv.reader(open(tmp_path / "dev.csv")))
  with open(tmp_path / "new.csv", "w", newline="") as f:
    csv.writer(f).writerows([row[:6] for row in rows])
  config.mode = "predict"
  config.predict.input_file = str(tmp_path / "new.csv")
  predicted = _rows(predict.predict_file(config, workdir))
  for p, e, row in zip(predicted, evaluated, rows[1:]):
    assert p["label"] == e["prediction"] and p["ending"] == row[2 + p["label"]]
    np.testing.assert_allclose(p["probabilities"], e["probabilities"], atol=1e-6)

  # Exported: transformers' BertForMultipleChoice scores the same pairs the same.
  out = str(tmp_path / "hf")
  export.export_hf(workdir, out)
  model = transformers.AutoModelForMultipleChoice.from_pretrained(out).eval()
  assert type(model).__name__ == "BertForMultipleChoice"
  examples = choices.read(str(tmp_path / "dev.csv"), "data.eval_file", "validation", config.data)
  features = choices.encode(examples, tokenization.load_tokenizer(sentencepiece_model), 32)
  with torch.no_grad():
    logits = model(**{k: torch.from_numpy(features[n]).long() for k, n in (
        ("input_ids", "input_ids"), ("token_type_ids", "segment_ids"),
        ("attention_mask", "input_mask"))}).logits.numpy()
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  np.testing.assert_allclose(probabilities, [e["probabilities"] for e in evaluated], atol=1e-5)


def test_token_and_span_predictions_are_the_evals(sentencepiece_model, tmp_path):
  words = "alpha beta gamma delta river stone light water green small".split()
  rng = np.random.default_rng(0)
  with open(tmp_path / "ner.jsonl", "w") as f:
    for _ in range(16):
      sentence = list(rng.choice(words, 6))
      f.write(json.dumps({"tokens": sentence, "ner": [
          "B-LOC" if w == "river" else "O" for w in sentence]}) + "\n")
  config = finetune_config("ner", sentencepiece_model, train_file=str(tmp_path / "ner.jsonl"),
                           eval_file=str(tmp_path / "ner.jsonl"), max_examples=0)
  workdir = str(tmp_path / "ner")
  finetune.finetune(config, workdir)
  evaluated = _rows(os.path.join(workdir, "predictions", "step_3", "validation.jsonl"))
  config.mode = "predict"
  config.predict.input_file = str(tmp_path / "ner.jsonl")
  predicted = _rows(predict.predict_file(config, workdir))
  assert [p["tags"] for p in predicted] == [e["prediction"] for e in evaluated]
  assert [p["words"] for p in predicted] == [e["words"] for e in evaluated]

  contexts = [" ".join(rng.choice(words, 12)) for _ in range(8)]
  articles = [{"title": "t", "paragraphs": [{"context": context, "qas": [
      {"id": f"q{i}", "question": "where is the river",
       "answers": [{"text": context.split()[0], "answer_start": 0}]}]}
      for i, context in enumerate(contexts)]}]
  (tmp_path / "squad.json").write_text(json.dumps({"version": "1.1", "data": articles}))
  config = finetune_config("squad_v1.1", sentencepiece_model,
                           train_file=str(tmp_path / "squad.json"),
                           eval_file=str(tmp_path / "squad.json"), max_query_length=8,
                           doc_stride=8)
  workdir = str(tmp_path / "squad")
  finetune.finetune(config, workdir)
  evaluated = json.load(open(os.path.join(workdir, "predictions", "step_3",
                                          "validation_predictions.json")))
  config.mode = "predict"
  config.predict.input_file = str(tmp_path / "squad.json")
  predicted = _rows(predict.predict_file(config, workdir))
  assert {p["id"]: p["answer"] for p in predicted} == evaluated
  assert all(0.0 <= p["probability"] <= 1.0 for p in predicted)


def test_predict_mistakes_are_one_line(review_classifier, tmp_path):
  data_dir, pretrain_dir, workdir = review_classifier
  config = finetune_configs.get_config()
  config.mode = "predict"
  with pytest.raises(errors.UserError, match="predict.input_file is empty"):
    predict.predict_file(config, workdir)
  (tmp_path / "plain.txt").write_text("no mask here\n")
  config = tiny.get_config()
  config.mode = "predict"
  config.predict.input_file = str(tmp_path / "plain.txt")
  with pytest.raises(errors.UserError, match="plain.txt: line 1 has no \\[MASK\\]"):
    predict.predict_file(config, pretrain_dir)
  (tmp_path / "taken.jsonl").write_text("")
  config.predict.output_file = str(tmp_path / "taken.jsonl")
  with pytest.raises(errors.UserError, match="taken.jsonl exists: set "
                     "--config.predict.overwrite=true"):
    predict.predict_file(config, pretrain_dir)
  assert (tmp_path / "taken.jsonl").read_text() == ""
  config.predict.update(output_file="", top_k=0)
  with pytest.raises(errors.UserError, match="predict.top_k=0 must be at least 1"):
    predict.predict_file(config, pretrain_dir)


def test_multiple_choice_mistakes_are_one_line(sentencepiece_model, tmp_path):
  config = _swag_files(tmp_path, sentencepiece_model)
  config.data.eval_file = ""
  with pytest.raises(errors.UserError, match="set data.eval_file \\(SWAG's CSV"):
    finetune.finetune(config, str(tmp_path / "a"))
  rows = list(csv.reader(open(tmp_path / "dev.csv")))
  rows[3][6] = "4"
  with open(tmp_path / "bad.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  config.data.eval_file = str(tmp_path / "bad.csv")
  with pytest.raises(errors.UserError, match="bad.csv:4: column 'label' is 4, not the index"):
    finetune.finetune(config, str(tmp_path / "b"))
  config.data.update(eval_file=str(tmp_path / "dev.csv"), choice_keys="ending0")
  with pytest.raises(errors.UserError, match="data.choice_keys='ending0': name two or more"):
    finetune.finetune(config, str(tmp_path / "c"))
  assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "c")


def test_predict_from_an_exported_model_with_an_empty_workdir(review_classifier, tmp_path):
  from bert_jax.interop import export  # pylint: disable=g-import-not-at-top
  data_dir, _, workdir = review_classifier
  export.export_hf(workdir, str(tmp_path / "hf"))
  config = finetune_configs.get_config()
  config.mode = "predict"
  config.model.dtype = "float32"  # As eval scored them (compared to 1e-6).
  config.init_checkpoint = str(tmp_path / "hf")
  config.data.text_a_key = "review"
  config.predict.input_file = str(data_dir / "dev.csv")
  predicted = _rows(predict.predict_file(config, str(tmp_path / "empty")))
  evaluated = _rows(os.path.join(workdir, "predictions", "step_3", "validation.jsonl"))
  assert [p["label"] for p in predicted] == [e["prediction"] for e in evaluated]
  for p, e in zip(predicted, evaluated):
    assert abs(p["probabilities"]["good"] - e["probabilities"]["good"]) < 1e-6


def test_hellaswag_from_tfds(sentencepiece_model, tmp_path, tfds_mock_hosts):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  del tfds_mock_hosts
  words = "alpha beta gamma delta river stone light water".split()
  rng = np.random.default_rng(0)
  records = [{"context": " ".join(rng.choice(words, 6)), "activity_label": "a",
              "endings": [" ".join(rng.choice(words, 3)) for _ in range(4)],
              "label": int(rng.integers(4)), "split_type": "indomain", "source_id": "s"}
             for _ in range(16)]
  text = tf.TensorSpec([], tf.string)
  signature = {"context": text, "activity_label": text, "endings": tf.TensorSpec([None], tf.string),
               "label": tf.TensorSpec([], tf.int32), "split_type": text, "source_id": text}

  def as_dataset(self, split, **kwargs):
    del self, split, kwargs
    return tf.data.Dataset.from_generator(lambda: iter(records), output_signature=signature)

  config = finetune_config("hellaswag", sentencepiece_model, max_examples=0)
  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    results = finetune.finetune(config, str(tmp_path))
  assert 0.0 <= results["validation"]["accuracy"] <= 1.0
  evaluated = _rows(tmp_path / "predictions" / "step_3" / "validation.jsonl")
  assert [e["label"] for e in evaluated] == [r["label"] for r in records]
