"""Classification and regression: [CLS] text_a [SEP] (text_b [SEP]) -> one label, or one score.

GLUE's tasks, and the user's own CSV / TSV / JSON-lines files (task_files.py).
"""

import functools

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bert_jax import errors
from bert_jax.finetuning import encode
from bert_jax.finetuning import task_eval
from bert_jax.finetuning import task_metrics
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import packing
from bert_jax.finetuning.data import task_files
from bert_jax.finetuning.data import tasks
from bert_jax.finetuning.families import record
from bert_jax.model import families

_TABLES = (".csv", ".tsv", ".jsonl", ".json")
# Rows read from TFDS at a time: one numpy batch is far cheaper than 1024 examples.
_TFDS_BATCH_SIZE = 1024


def _read_files(task, patterns, field, split, text_keys, label_key, label_names, max_examples,
                *, scores):
  del task
  return task_files.read_text_examples(patterns, field, split, text_keys[0],
                                       text_keys[1] if len(text_keys) > 1 else None, label_key,
                                       scores, label_names, max_examples)


def _read_tfds(task, split, dataset, label_feature, text_keys, label_key, *, scores):
  label_names = None if scores else tuple(label_feature.names)
  examples = []
  for batch in tfds.as_numpy(dataset.batch(_TFDS_BATCH_SIZE)):
    texts_b = batch[text_keys[1]] if len(text_keys) > 1 else [None] * len(batch[label_key])
    for text_a, text_b, label in zip(batch[text_keys[0]], texts_b, batch[label_key]):
      # GLUE's test splits carry label -1 (no labels are published).
      if label == -1:
        raise errors.UserError(f"split {split!r} of {task.tfds_name} has no labels (GLUE's "
                               f"test splits are unlabelled): use {task.train_split!r} or "
                               f"{', '.join(task.eval_splits)}")
      examples.append(tasks.TextExample(
          f"{split}-{len(examples)}", tasks.text(text_a),
          None if text_b is None else tasks.text(text_b), float(label) if scores else int(label)))
  return examples, label_names


LABELS = tasks.Reader(functools.partial(_read_files, scores=False),
                      functools.partial(_read_tfds, scores=False))
SCORES = tasks.Reader(functools.partial(_read_files, scores=True),
                      functools.partial(_read_tfds, scores=True), named_labels=False)


def _load(task: tasks.TaskSpec, config: ml_collections.ConfigDict, tokenizer, *,
          scores: bool) -> finetune_data.TaskData:
  data = config.data
  train, evals, label_names = record.read_splits(
      task, data, SCORES if scores else LABELS,
      lambda examples: featurize.encode_text_examples(examples, tokenizer, data.max_seq_length,
                                                      scores))
  return finetune_data.TaskData(
      name=task.name, family=task.family, num_labels=1 if scores else len(label_names),
      label_names=label_names, metrics=task.metrics, train=train, evals=evals)


def _score_labels(task, eval_set, logits, config, tokenizer):
  del config, tokenizer
  predictions = np.argmax(logits, axis=-1)
  rows = [{"guid": e.guid, "prediction": task.label_names[p],
           "probabilities": dict(zip(task.label_names, map(float, q))),
           "label": None if e.label is None else task.label_names[e.label]}
          for e, p, q in zip(eval_set.examples, predictions, task_eval.softmax(logits))]
  return task_metrics.glue_metrics(task.metrics, predictions,
                                   eval_set.features["label_ids"]), rows


def _score_scores(task, eval_set, logits, config, tokenizer):
  del config, tokenizer
  predictions = logits[:, 0]
  rows = [{"guid": e.guid, "prediction": float(p), "label": e.label}
          for e, p in zip(eval_set.examples, predictions)]
  return task_metrics.glue_metrics(task.metrics, predictions,
                                   eval_set.features["label_ids"]), rows


def _inputs(config: ml_collections.ConfigDict, path: str) -> list[tasks.TextExample]:
  """Texts (or pairs) from a .txt file (a line each, a tab splits a pair) or a table with the
  task's text columns (data.text_a_key, data.text_b_key, or the task's own)."""
  if not path.lower().endswith(_TABLES):
    return encode.text_examples(encode.read_lines(path, "predict.input_file"))
  task = tasks.get_task(config.task) if "task" in config else tasks.get_task("classification")
  keys, _ = tasks.text_keys(task, config.data)
  found = task_files.read_text_columns(path, "predict.input_file", keys)
  return [tasks.TextExample(where, texts[0], texts[1] if len(texts) > 1 else None, None)
          for where, texts, _ in found]


def _predict(config, path, tokenizer, head, max_seq_length, *, scores) -> record.Prepared:
  examples = _inputs(config, path)
  features = featurize.encode_text_examples(examples, tokenizer, max_seq_length, scores)

  def decode(logits):
    out = []
    for example, row, probabilities in zip(examples, logits, task_eval.softmax(logits)):
      line = {"text": example.text_a, **({"text_b": example.text_b} if example.text_b else {})}
      if scores:
        out.append({**line, "score": float(row[0])})
      else:
        out.append({**line, "label": head.labels[int(np.argmax(row))],
                    "probabilities": dict(zip(head.labels, map(float, probabilities)))})
    return out

  return record.Prepared(features, decode)


CLASSIFICATION = record.TaskFamily(
    model=families.get("classification"), load=functools.partial(_load, scores=False),
    score=_score_labels, predict=functools.partial(_predict, scores=False),
    packing=packing.TEXT, reader=LABELS)
REGRESSION = record.TaskFamily(
    model=families.get("regression"), load=functools.partial(_load, scores=True),
    score=_score_scores, predict=functools.partial(_predict, scores=True),
    packing=packing.TEXT, reader=SCORES)
