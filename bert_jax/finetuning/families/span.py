"""Span extraction (SQuAD v1.1 and v2.0), as the original's run_squad.py: windows of a long
context, the best start/end span per question mapped back to the context's text.
"""

import ml_collections

from bert_jax import errors
from bert_jax.finetuning import squad_metrics
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import packing
from bert_jax.finetuning.data import squad
from bert_jax.finetuning.data import squad_postprocess
from bert_jax.finetuning.data import squad_windows
from bert_jax.finetuning.data import tasks
from bert_jax.finetuning.families import record
from bert_jax.model import families


def _check(config: ml_collections.ConfigDict) -> None:
  data = config.data
  if data.max_seq_length <= data.max_query_length + 3:
    raise errors.UserError(f"data.max_seq_length={data.max_seq_length} leaves no room for the "
                           f"context after data.max_query_length={data.max_query_length}")


def _resolve(task: tasks.TaskSpec, config: ml_collections.ConfigDict) -> tasks.TaskSpec:
  """data.version_2_with_negative=true runs SQuAD v2.0 whichever version config.task names."""
  if config.data.version_2_with_negative:
    return tasks.get_task("squad_v2.0")
  return task


def _span_arrays(features, with_positions: bool) -> dict:
  arrays = {"input_ids": features.input_ids, "input_mask": features.input_mask,
            "segment_ids": features.segment_ids}
  if with_positions:
    arrays.update(start_positions=features.start_positions, end_positions=features.end_positions)
  return arrays


def _load(task: tasks.TaskSpec, config: ml_collections.ConfigDict,
          tokenizer) -> finetune_data.TaskData:
  data = config.data
  # The TFDS name is what a workdir records as its task (resumes check it).
  name = task.tfds_name

  def read(split: str, local_file: str, is_training: bool):
    if local_file:
      examples = squad.read_squad_json(local_file, is_training=is_training)
    else:
      examples = squad.tfds_examples(name, split, data.tfds_data_dir or None,
                                     is_training=is_training)
    if data.max_examples > 0:
      examples = examples[:data.max_examples]
    features = squad_windows.convert_examples_to_features(
        examples, tokenizer, max_seq_length=data.max_seq_length, doc_stride=data.doc_stride,
        max_query_length=data.max_query_length, is_training=is_training)
    return examples, features

  train_examples, train_features = read(task.train_split, data.train_file, True)
  eval_examples, eval_features = read(task.eval_splits[0], data.eval_file, False)
  record.check_read(train_examples, task.train_split, data.train_file, "data.train_file")
  record.check_read(eval_examples, task.eval_splits[0], data.eval_file, "data.eval_file")
  return finetune_data.TaskData(
      name=name, family=task.family, num_labels=2, label_names=None, metrics=task.metrics,
      train=_span_arrays(train_features, with_positions=True),
      evals=[finetune_data.EvalSet(task.eval_splits[0],
                                   _span_arrays(eval_features, with_positions=False),
                                   eval_examples, eval_features)],
      version_2_with_negative=name.endswith("v2.0"))


def _score(task, eval_set, outputs, config, tokenizer):
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


def _predict(config, path, tokenizer, head, max_seq_length) -> record.Prepared:
  del head
  data = config.data
  if not path.lower().endswith(".json"):
    raise errors.UserError(f"predict.input_file={path}: a question-answering model reads SQuAD "
                           "JSON (.json)")
  examples = squad.read_squad_json(path, is_training=False)
  windows = squad_windows.convert_examples_to_features(
      examples, tokenizer, max_seq_length, data.get("doc_stride", 128),
      data.get("max_query_length", 64), is_training=False)

  def decode(outputs):
    start_logits, end_logits = outputs
    predictions, nbest, _ = squad_postprocess.postprocess(
        examples, windows, start_logits, end_logits, n_best_size=data.get("n_best_size", 20),
        max_answer_length=data.get("max_answer_length", 30),
        version_2_with_negative=data.get("version_2_with_negative", False),
        null_score_diff_threshold=data.get("null_score_diff_threshold", 0.0),
        # The casing the model was trained with (a WordPiece tokenizer carries it).
        do_lower_case=getattr(tokenizer, "do_lower_case", data.do_lower_case),
        tokenizer=tokenizer)
    return [{"id": e.qas_id, "question": e.question_text, "answer": predictions[e.qas_id],
             "probability": next((n["probability"] for n in nbest[e.qas_id]
                                  if n["text"] == predictions[e.qas_id]), 0.0)}
            for e in examples]

  return record.Prepared(windows.arrays(), decode)


SPAN = record.TaskFamily(model=families.get("span"), load=_load, score=_score,
                         predict=_predict, packing=packing.SPANS, check=_check,
                         resolve=_resolve,
                         # A window per max_seq_length of context, doc_stride apart.
                         steps_note="counted in examples: a context longer than one window "
                                    "adds windows")
