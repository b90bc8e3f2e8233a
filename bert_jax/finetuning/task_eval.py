"""From a fine-tuned model's outputs on an eval set to predictions and the official metrics.

`score` is host-side and pure: outputs (numpy, one row per feature) in, (metrics, predictions)
out. `write_predictions` puts the predictions in the workdir as JSON, in the form each task's
official tooling reads (SQuAD: qas_id -> answer text, plus the no-answer scores for v2).
"""

import json
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf

from bert_jax.finetuning import squad_metrics
from bert_jax.finetuning import task_metrics
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import squad_postprocess


def softmax(logits: np.ndarray) -> np.ndarray:
  """In float64: the probabilities a user compares with other tools' scores."""
  shifted = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
  return np.exp(shifted) / np.sum(np.exp(shifted), axis=-1, keepdims=True)


def _classification(task: finetune_data.TaskData, eval_set: finetune_data.EvalSet,
                    logits: np.ndarray) -> tuple[dict[str, float], Any]:
  labels = eval_set.features["label_ids"]
  if task.family == "regression":
    predictions = logits[:, 0]
    rows = [{"guid": e.guid, "prediction": float(p), "label": e.label}
            for e, p in zip(eval_set.examples, predictions)]
  else:
    predictions = np.argmax(logits, axis=-1)
    probabilities = softmax(logits)
    rows = [{"guid": e.guid, "prediction": task.label_names[p],
             "probabilities": dict(zip(task.label_names, map(float, q))),
             "label": None if e.label is None else task.label_names[e.label]}
            for e, p, q in zip(eval_set.examples, predictions, probabilities)]
  return task_metrics.glue_metrics(task.metrics, predictions, labels), rows


def _choice(eval_set: finetune_data.EvalSet, logits: np.ndarray
            ) -> tuple[dict[str, float], Any]:
  """Accuracy of the best-scoring ending; a row per question with every ending's probability."""
  probabilities = softmax(logits)
  predictions = np.argmax(logits, axis=-1)
  rows = [{"guid": e.guid, "prediction": int(p), "probabilities": [float(x) for x in q],
           "label": e.label} for e, p, q in zip(eval_set.examples, predictions, probabilities)]
  return task_metrics.glue_metrics(("accuracy",), predictions,
                                   eval_set.features["label_ids"]), rows


def _token(task: finetune_data.TaskData, eval_set: finetune_data.EvalSet,
           logits: np.ndarray) -> tuple[dict[str, float], Any]:
  predicted_ids = featurize.decode_token_predictions(eval_set.features, np.argmax(logits, axis=-1))
  names = task.label_names
  predicted = [[names[i] for i in sentence] for sentence in predicted_ids]
  gold = [[names[i] for i in e.labels] for e in eval_set.examples]
  rows = [{"guid": e.guid, "words": e.words, "prediction": p, "label": g}
          for e, p, g in zip(eval_set.examples, predicted, gold)]
  return task_metrics.entity_f1(gold, predicted), rows


def _span(task: finetune_data.TaskData, eval_set: finetune_data.EvalSet,
          outputs: tuple[np.ndarray, np.ndarray], config: ml_collections.ConfigDict,
          tokenizer) -> tuple[dict[str, float], Any]:
  data = config.data
  start_logits, end_logits = outputs
  predictions, nbest, null_score_diffs = squad_postprocess.postprocess(
      eval_set.examples, eval_set.squad_features, start_logits, end_logits,
      n_best_size=data.n_best_size, max_answer_length=data.max_answer_length,
      version_2_with_negative=task.version_2_with_negative,
      null_score_diff_threshold=data.null_score_diff_threshold,
      do_lower_case=data.do_lower_case, tokenizer=tokenizer)
  gold = {e.qas_id: list(e.answers) for e in eval_set.examples}
  metrics = squad_metrics.squad_evaluate(
      gold, predictions, null_score_diffs if task.version_2_with_negative else None)
  files = {"predictions": predictions, "nbest_predictions": nbest}
  if task.version_2_with_negative:
    files["null_odds"] = null_score_diffs
  return metrics, files


def score(task: finetune_data.TaskData, eval_set: finetune_data.EvalSet, outputs: Any,
          config: ml_collections.ConfigDict, tokenizer) -> tuple[dict[str, float], Any]:
  """(metrics, predictions) of one eval set; `outputs` has one row per feature, no padding."""
  if task.family == "span":
    return _span(task, eval_set, outputs, config, tokenizer)
  if task.family == "token":
    return _token(task, eval_set, outputs)
  if task.family == "multiple_choice":
    return _choice(eval_set, outputs)
  return _classification(task, eval_set, outputs)


def write_predictions(directory: str, split: str, predictions: Any) -> None:
  """`directory/<split>.jsonl` (one row per example), or for SQuAD `<split>_<name>.json`."""
  tf.io.gfile.makedirs(directory)
  if isinstance(predictions, dict):
    for name, value in predictions.items():
      with tf.io.gfile.GFile(os.path.join(directory, f"{split}_{name}.json"), "w") as f:
        json.dump(value, f, indent=1)
    return
  with tf.io.gfile.GFile(os.path.join(directory, f"{split}.jsonl"), "w") as f:
    for row in predictions:
      f.write(json.dumps(row) + "\n")
