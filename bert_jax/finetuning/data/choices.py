"""Multiple choice (SWAG): a context, the start of its continuation, and candidate endings.

HellaSwag, SWAG's successor, comes from TFDS (`tfds_examples`). SWAG's own CSV layout is
the default for files: `sent1` (the context), `sent2` (the start of the
ending), `ending0`..`ending3`, `label` (the right ending's index). Other files name their
columns in data.text_a_key (context), data.text_b_key (start; '-' for a file without one),
data.choice_keys (the endings, comma-separated) and data.label_key.

Each (context, start + ' ' + ending) pair is one BERT sequence, `[CLS] context [SEP] start
ending [SEP]`, truncated longest-first like any pair; the model scores each pair's [CLS] and
a softmax runs over the choices (model/heads.py BertForMultipleChoice), as the BERT paper's
SWAG setup and HF's run_swag do.
"""

from collections.abc import Sequence
import dataclasses

import ml_collections
import numpy as np

from bert_jax import errors
from bert_jax.finetuning.data import featurize
from bert_jax.finetuning.data import task_files
from bert_jax.tokenizers import tokenization

SWAG_ENDINGS = ("ending0", "ending1", "ending2", "ending3")
NO_START = "-"  # data.text_b_key: the file has no start-of-ending column.


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
  """One multiple-choice question.

  Attributes:
    guid: '<split>-<index>', or the file and line for mode=predict.
    context: The text the endings continue (SWAG's sent1).
    start: The start of every ending (SWAG's sent2); '' when there is none.
    endings: The candidate endings, in choice order.
    label: Index of the right ending; None when unlabelled.
  """
  guid: str
  context: str
  start: str
  endings: tuple[str, ...]
  label: int | None


def columns(data: ml_collections.ConfigDict) -> tuple[str, str, tuple[str, ...]]:
  """(context, start, endings) columns: the config's, else SWAG's."""
  endings = tuple(k.strip() for k in data.choice_keys.split(",") if k.strip()) or SWAG_ENDINGS
  if len(endings) < 2:
    raise errors.UserError(f"data.choice_keys={data.choice_keys!r}: name two or more columns, "
                           "one per ending")
  start = data.text_b_key or "sent2"
  return data.text_a_key or "sent1", "" if start == NO_START else start, endings


def read(patterns: str, field: str, split: str, data: ml_collections.ConfigDict,
         labelled: bool = True) -> list[ChoiceExample]:
  """Examples from CSV, TSV or JSON-lines files with the columns of `columns(data)`.

  Raises:
    errors.UserError: A missing file or column, or a label that is not an ending's index.
  """
  context_key, start_key, ending_keys = columns(data)
  keys = (context_key, *((start_key,) if start_key else ()), *ending_keys)
  label_key = (data.label_key or "label") if labelled else ""
  examples = []
  for index, (where, texts, label) in enumerate(task_files.read_text_columns(
      patterns, field, keys, label_key, data.max_examples if labelled else 0)):
    if label is not None and not 0 <= label < len(ending_keys):
      raise errors.UserError(f"{where}: column {label_key!r} is {label}, not the index of one "
                             f"of the {len(ending_keys)} endings (0 to {len(ending_keys) - 1})")
    start = texts[1] if start_key else ""
    guid = f"{split}-{index}" if labelled else where
    examples.append(ChoiceExample(guid, texts[0], start, tuple(texts[-len(ending_keys):]), label))
  return examples


def tfds_examples(name: str, split: str, data: ml_collections.ConfigDict) -> list[ChoiceExample]:
  """HellaSwag from TFDS ('hellaswag': `context`, its `endings`, `label`); TFDS has no SWAG.

  A record whose endings are not the same number as the first record's is an error: the
  model scores a fixed number of choices.
  """
  # Imported here: importing TFDS takes seconds, and only this reader needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from bert_jax import tfds_datasets  # pylint: disable=g-import-not-at-top
  dataset = tfds_datasets.prepared_builder(name, data.tfds_data_dir or None).as_dataset(
      split=split)
  if data.max_examples:
    dataset = dataset.take(data.max_examples)
  examples = []
  for index, record in enumerate(tfds.as_numpy(dataset)):
    endings = tuple(e.decode("utf-8") for e in record["endings"])
    if examples and len(endings) != len(examples[0].endings):
      raise errors.UserError(f"TFDS {name} {split}: record {index} has {len(endings)} endings, "
                             f"the first had {len(examples[0].endings)}")
    label = int(record["label"])
    examples.append(ChoiceExample(f"{split}-{index}", record["context"].decode("utf-8"), "",
                                  endings, label if 0 <= label < len(endings) else None))
  return examples


def encode(examples: Sequence[ChoiceExample], tokenizer: tokenization.Tokenizer,
           max_seq_length: int) -> dict[str, np.ndarray]:
  """Examples -> input_ids, input_mask, segment_ids int32 [N, choices, max_seq_length] (one
  pair per choice, as featurize.encode_text_examples encodes a pair) and label_ids int32 [N]
  (0 for an unlabelled example)."""
  pairs = [task_files.TextExample(f"{e.guid}-{i}", e.context,
                                 f"{e.start} {ending}".strip(), None)
           for e in examples for i, ending in enumerate(e.endings)]
  features = featurize.encode_text_examples(pairs, tokenizer, max_seq_length)
  choices = len(examples[0].endings) if examples else 0
  out = {k: features[k].reshape(len(examples), choices, max_seq_length)
         for k in ("input_ids", "input_mask", "segment_ids")}
  out["label_ids"] = np.array([e.label or 0 for e in examples], np.int32)
  return out
