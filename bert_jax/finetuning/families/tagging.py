"""Token tagging (NER): a tag per word, on the word's first sub-token.

CoNLL-2003 from TFDS, and the user's own JSON-lines or CoNLL text files (task_files.py).
"""

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bert_jax.finetuning import encode
from bert_jax.finetuning import task_metrics
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import packing
from bert_jax.finetuning.data import task_files
from bert_jax.finetuning.data import tasks
from bert_jax.finetuning.families import record
from bert_jax.model import families

_TABLES = (".csv", ".tsv", ".jsonl", ".json")


def _read_files(task, patterns, field, split, text_keys, label_key, label_names, max_examples):
  del task
  examples, names = task_files.read_token_examples(patterns, field, split, text_keys[0],
                                                   label_key, label_names, max_examples)
  tasks.check_outside_label(names, f"the tags of {field}")
  return examples, names


def _read_tfds(task, split, dataset, label_feature, text_keys, label_key):
  label_names = tuple(label_feature.feature.names)  # Sequence(ClassLabel): one tag per word.
  tasks.check_outside_label(label_names, f"the tags of {task.tfds_name}")
  examples = []
  for i, row in enumerate(tfds.as_numpy(dataset)):
    words, tags = [tasks.text(word) for word in row[text_keys[0]]], row[label_key].tolist()
    # TFDS's CoNLL builder writes one tag per word; tfds.testing.mock_data draws the two
    # lengths independently. Pairing up to the shorter keeps mocked data usable in tests.
    length = min(len(words), len(tags))
    examples.append(tasks.TokenExample(f"{split}-{i}", words[:length], tags[:length]))
  return examples, label_names


READER = tasks.Reader(_read_files, _read_tfds, pairs=False)


def _load(task: tasks.TaskSpec, config: ml_collections.ConfigDict,
          tokenizer) -> finetune_data.TaskData:
  data = config.data
  train, evals, label_names = record.read_splits(
      task, data, READER,
      lambda examples: featurize.encode_token_examples(examples, tokenizer, data.max_seq_length))
  # Entity-level scores, named 'f1', 'precision', 'recall' by task_metrics.entity_f1.
  return finetune_data.TaskData(
      name=task.name, family=task.family, num_labels=len(label_names), label_names=label_names,
      metrics=("f1", "precision", "recall"), train=train, evals=evals)


def _score(task, eval_set, logits, config, tokenizer):
  del config, tokenizer
  predicted_ids = featurize.decode_token_predictions(eval_set.features, np.argmax(logits, axis=-1))
  names = task.label_names
  predicted = [[names[i] for i in sentence] for sentence in predicted_ids]
  gold = [[names[i] for i in e.labels] for e in eval_set.examples]
  rows = [{"guid": e.guid, "words": e.words, "prediction": p, "label": g}
          for e, p, g in zip(eval_set.examples, predicted, gold)]
  return task_metrics.entity_f1(gold, predicted), rows


def _predict(config, path, tokenizer, head, max_seq_length) -> record.Prepared:
  if path.lower().endswith(_TABLES):
    sentences = [words for _, words in task_files.read_word_lists(
        path, "predict.input_file", config.data.text_a_key or "tokens")]
  else:
    sentences = [line.split() for line in encode.read_lines(path, "predict.input_file")]
  examples = [tasks.TokenExample(f"line-{i + 1}", words, None) for i, words in enumerate(sentences)]
  features = featurize.encode_token_examples(examples, tokenizer, max_seq_length)

  def decode(logits):
    predicted = featurize.decode_token_predictions(features, np.argmax(logits, axis=-1))
    return [{"words": e.words, "tags": [head.label_names[i] for i in ids]}
            for e, ids in zip(examples, predicted)]

  return record.Prepared(features, decode)


TOKEN = record.TaskFamily(model=families.get("token"), load=_load, score=_score,
                          predict=_predict, packing=packing.TAGS, reader=READER)
