"""A new task family is one module plus one registry entry: this file is that module.

Multi-label classification (a set of topics per text, a sigmoid per label), which bert_jax
does not ship, is defined and registered here; it then fine-tunes, predicts, and exports to
transformers (BertForSequenceClassification, problem_type multi_label_classification) without
any other file knowing it.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bert_jax import errors
from bert_jax.finetuning import encode
from bert_jax.finetuning import finetune
from bert_jax.finetuning import predict
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import tasks
from bert_jax.finetuning.families import record
from bert_jax.finetuning.families import registry
from bert_jax.interop import convert
from bert_jax.interop import export
from bert_jax.interop import hf_heads
from bert_jax.model import families
from bert_jax.model import heads
from test_finetune import _config

TOPICS = ("animals", "food", "places")
WORDS = {"animals": "cat dog bird", "food": "bread apple soup", "places": "paris river town"}


# ---- The family: model side ----


def _loss(logits, batch):
  """Mean sigmoid cross-entropy over the labels of the real examples."""
  per_label = optax.sigmoid_binary_cross_entropy(logits, batch["label_ids"])  # [batch, labels]
  weights = batch.get("weights", jnp.ones(logits.shape[:1]))
  return jnp.sum(per_label.mean(axis=-1) * weights) / jnp.maximum(jnp.sum(weights), 1e-5)


MODEL_SIDE = families.Family(
    name="multi_label",
    build=heads.BertForSequenceClassification,  # [CLS] -> pooler -> a logit per label.
    loss=_loss,
    head_flops=lambda config, sequences, seq_length, num_labels: (
        2 * sequences * config.hidden_size * num_labels),
    dummy_batch=lambda batch_size, seq_length, num_labels: {
        "input_ids": np.zeros((batch_size, seq_length), np.int32),
        "input_mask": np.zeros((batch_size, seq_length), np.int32),
        "segment_ids": np.zeros((batch_size, seq_length), np.int32),
        "weights": np.ones(batch_size, np.float32),
        "label_ids": np.zeros((batch_size, num_labels), np.float32)},
    param_group="classifier",
    hf=families.HuggingFace("BertForSequenceClassification", "multi_label_classification",
                            labels=True, pipeline="text-classification",
                            example='"a sentence"', truncate=True))


# ---- The family: data side ----


def _read(path: str) -> list[tuple[str, list[str]]]:
  with open(path, encoding="utf-8") as f:
    return [(row["text"], row["topics"]) for row in map(json.loads, f)]


def _features(rows, tokenizer, max_seq_length):
  examples = [tasks.TextExample(str(i), text, None, None) for i, (text, _) in enumerate(rows)]
  features = featurize.encode_text_examples(examples, tokenizer, max_seq_length)
  features["label_ids"] = np.array([[name in topics for name in TOPICS] for _, topics in rows],
                                   np.float32)  # [examples, labels]: multi-hot.
  return features


def _load(task, config, tokenizer):
  data = config.data
  train, dev = _read(data.train_file), _read(data.eval_file)
  return finetune_data.TaskData(
      name=task.name, family=task.family, num_labels=len(TOPICS), label_names=TOPICS,
      metrics=task.metrics, train=_features(train, tokenizer, data.max_seq_length),
      evals=[finetune_data.EvalSet("validation", _features(dev, tokenizer,
                                                           data.max_seq_length), dev)])


def _score(task, eval_set, logits, config, tokenizer):
  del task, config, tokenizer
  predicted, gold = logits > 0, eval_set.features["label_ids"] > 0
  true_positives = np.sum(predicted & gold)
  f1 = 2 * true_positives / max(np.sum(predicted) + np.sum(gold), 1)
  rows = [{"text": text, "prediction": [n for n, p in zip(TOPICS, row) if p]}
          for (text, _), row in zip(eval_set.examples, predicted)]
  return {"f1": float(f1), "accuracy": float(np.mean(np.all(predicted == gold, axis=1)))}, rows


def _predict(config, path, tokenizer, head, max_seq_length):
  del config
  lines = encode.read_lines(path, "predict.input_file")
  features = featurize.encode_text_examples(encode.text_examples(lines), tokenizer,
                                            max_seq_length)

  def decode(logits):
    return [{"text": line, "topics": [n for n, x in zip(head.labels, row) if x > 0],
             "probabilities": dict(zip(head.labels, map(float, 1 / (1 + np.exp(-row)))))}
            for line, row in zip(lines, np.asarray(logits))]

  return record.Prepared(features, decode)


DATA_SIDE = record.TaskFamily(model=MODEL_SIDE, load=_load, score=_score, predict=_predict)
TASK = tasks.TaskSpec(name="topics", family="multi_label", tfds_name="", text_keys=("text",),
                      label_key="topics", num_labels=0, label_names=TOPICS, train_split="train",
                      eval_splits=("validation",), metrics=("f1", "accuracy"))


@pytest.fixture(name="registered")
def fixture_registered(monkeypatch):
  """The family and its task registered, for this test only."""
  monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))
  monkeypatch.setattr(registry, "FAMILIES", dict(registry.FAMILIES))
  monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
  registry.register(DATA_SIDE)
  tasks.register(TASK)


def _write_topics(path, count: int, seed: int) -> str:
  rng = np.random.default_rng(seed)
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(count):
      topics = [t for t in TOPICS if rng.random() < 0.5] or [TOPICS[0]]
      words = " ".join(rng.choice(WORDS[t].split()) for t in topics for _ in range(2))
      f.write(json.dumps({"text": f"the {words} .", "topics": topics}) + "\n")
  return str(path)


def test_a_family_defined_here_fine_tunes_predicts_and_exports(
    registered, tmp_path, sentencepiece_model):
  del registered
  config = _config("topics", sentencepiece_model, max_examples=0,
                   train_file=_write_topics(tmp_path / "train.jsonl", 32, 0),
                   eval_file=_write_topics(tmp_path / "dev.jsonl", 12, 1))
  config.train.num_train_steps = 6
  workdir = str(tmp_path / "work")
  results = finetune.finetune(config, workdir)
  assert set(results["validation"]) == {"f1", "accuracy"}
  assert 0 <= results["validation"]["f1"] <= 1
  best = json.load(open(os.path.join(workdir, "best.json")))
  assert best["metric"] == "f1" and best["step"] > 0
  written = open(os.path.join(workdir, "predictions", "step_6", "validation.jsonl")).readlines()
  assert len(written) == 12

  # mode=predict reads the family from the workdir's checkpoint and uses its `predict`.
  (tmp_path / "new.txt").write_text("the cat dog .\nthe bread soup .\n")
  config.mode = "predict"
  config.predict.input_file = str(tmp_path / "new.txt")
  lines = [json.loads(line) for line in open(predict.predict_file(config, workdir))]
  assert [line["text"] for line in lines] == ["the cat dog .", "the bread soup ."]
  assert set(lines[0]["probabilities"]) == set(TOPICS)
  assert all(set(line["topics"]) <= set(TOPICS) for line in lines)

  # Export: transformers' architecture and problem_type from the record; loading the export
  # back finds the family by them, with the same weights.
  out = str(tmp_path / "hf")
  export.export_hf(workdir, out)
  hf_config = json.load(open(os.path.join(out, "config.json")))
  assert hf_config["architectures"] == ["BertForSequenceClassification"]
  assert hf_config["problem_type"] == "multi_label_classification"
  assert hf_config["id2label"] == {"0": "animals", "1": "food", "2": "places"}
  _, exported, loaded = convert.load_params(out, return_report=True)
  assert (loaded.head.family, loaded.head.num_labels) == ("multi_label", 3)
  _, ours, _ = convert.load_params(workdir, return_report=True)
  jax.tree.map(np.testing.assert_array_equal, exported["classifier"], ours["classifier"])
  assert "text-classification" in open(os.path.join(out, "README.md")).read()

  # The same family without a transformers architecture: the export stops with one line and
  # writes nothing.
  families.FAMILIES["multi_label"] = dataclasses.replace(MODEL_SIDE, hf=None)
  with pytest.raises(errors.UserError, match="no transformers architecture"):
    export.export_hf(workdir, str(tmp_path / "hf2"))
  assert not (tmp_path / "hf2").exists()
  # bert_jax's own params dir keeps it, and loads back with its head.
  export.export_orbax(workdir, str(tmp_path / "orbax"))
  _, _, loaded = convert.load_params(str(tmp_path / "orbax"), return_report=True)
  assert loaded.head == hf_heads.Head("multi_label", 3, TOPICS)


def test_a_name_is_registered_once(registered):
  del registered
  with pytest.raises(ValueError, match="already registered"):
    registry.register(DATA_SIDE)
  with pytest.raises(ValueError, match="already registered"):
    tasks.register(TASK)

