"""Multiple choice (SWAG, HellaSwag): each (context, ending) pair scored, a softmax over the
endings (data/choices.py reads and encodes them)."""

import ml_collections
import numpy as np

from bert_jax import errors
from bert_jax.finetuning import task_eval
from bert_jax.finetuning import task_metrics
from bert_jax.finetuning.data import choices
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import tasks
from bert_jax.finetuning.families import record
from bert_jax.model import families


def _load(task: tasks.TaskSpec, config: ml_collections.ConfigDict,
          tokenizer) -> finetune_data.TaskData:
  data = config.data

  def read(split: str, field: str):
    if data[field]:
      return choices.read(data[field], f"data.{field}", split, data)
    if not task.tfds_name:
      raise errors.UserError(f"task {task.name!r} reads your own files (TFDS has no SWAG): set "
                             f"data.{field} (SWAG's CSV: sent1, sent2, ending0..ending3, label)")
    return choices.tfds_examples(task.tfds_name, split, data)

  train = read(task.train_split, "train_file")
  evals = read(task.eval_splits[0], "eval_file")
  record.check_read(train, task.train_split, data.train_file, "data.train_file")
  record.check_read(evals, task.eval_splits[0], data.eval_file, "data.eval_file")
  return finetune_data.TaskData(
      name=task.name, family=task.family, num_labels=1, label_names=None, metrics=task.metrics,
      train=choices.encode(train, tokenizer, data.max_seq_length),
      evals=[finetune_data.EvalSet(task.eval_splits[0],
                                   choices.encode(evals, tokenizer, data.max_seq_length), evals)])


def _score(task, eval_set, logits, config, tokenizer):
  """Accuracy of the best-scoring ending; a row per question with every ending's probability."""
  del task, config, tokenizer
  probabilities = task_eval.softmax(logits)
  predictions = np.argmax(logits, axis=-1)
  rows = [{"guid": e.guid, "prediction": int(p), "probabilities": [float(x) for x in q],
           "label": e.label} for e, p, q in zip(eval_set.examples, predictions, probabilities)]
  return task_metrics.glue_metrics(("accuracy",), predictions,
                                   eval_set.features["label_ids"]), rows


def _predict(config, path, tokenizer, head, max_seq_length) -> record.Prepared:
  del head
  examples = choices.read(path, "predict.input_file", "", config.data, labelled=False)
  features = choices.encode(examples, tokenizer, max_seq_length)

  def decode(logits):
    out = []
    for example, probabilities in zip(examples, task_eval.softmax(np.asarray(logits))):
      best = int(np.argmax(probabilities))
      out.append({"context": example.context, "start": example.start, "label": best,
                  "ending": example.endings[best], "probabilities": probabilities.tolist()})
    return out

  return record.Prepared(features, decode)


# Its rows do not pack: each example is several sequences already ([batch, choices, length]).
MULTIPLE_CHOICE = record.TaskFamily(model=families.get("multiple_choice"), load=_load,
                                    score=_score, predict=_predict)
