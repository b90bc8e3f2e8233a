"""Fine-tuning examples from the user's own files: CSV, TSV, JSON lines and CoNLL text.

Text tasks (classification, regression), one example per row; the format goes by extension:

  .csv          comma-separated, a header row naming the columns, standard CSV quoting.
  .tsv          tab-separated, a header row, NO quoting (as GLUE's own .tsv files and the
                original BERT's reader): a quote is an ordinary character, so a field cannot
                hold a tab or a newline.
  .jsonl .json  JSON lines: one object per line, its keys are the column names.

Token tasks (NER), one example per sentence:

  .jsonl .json  JSON lines: a list of words and a list of tags of the same length, e.g.
                {"tokens": ["EU", "rejects"], "ner": ["B-ORG", "O"]}.
  anything else CoNLL text: one word per line, its columns split on whitespace, the word first
                and the tag last ('EU NNP B-NP B-ORG' or 'EU<TAB>B-ORG'); a blank line ends a
                sentence; '-DOCSTART-' lines are skipped (CoNLL-2003's own files read as is).

Labels are strings mapped to ids by their place in the label names; where no label name is an
integer, an integer label (0, "1") is taken as the id itself (GLUE's .tsv files store ids).
Regression labels are numbers. A bad row stops the reading with a UserError naming the file, the
line and the column.
"""

from collections.abc import Iterator, Sequence
import csv
import dataclasses
import io
import json
import math
import os

import tensorflow as tf

from bert_jax import errors
from bert_jax import files as files_lib

_JSON_EXTENSIONS = (".jsonl", ".json")
_TEXT_EXTENSIONS = (".csv", ".tsv") + _JSON_EXTENSIONS
DOCSTART = "-DOCSTART-"
# The IOB tag of a word outside every entity.
OUTSIDE_LABEL = "O"


@dataclasses.dataclass(frozen=True)
class TextExample:
  """One text (or text pair) and its label.

  Attributes:
    guid: Unique id within its split, '<split>-<index>'.
    text_a: The first text.
    text_b: The second text of a pair task; None for a single-text task.
    label: Class id (classification), score (regression), or None when unlabelled.
  """
  guid: str
  text_a: str
  text_b: str | None
  label: int | float | None


@dataclasses.dataclass(frozen=True)
class TokenExample:
  """One sentence of words and a tag id per word.

  Attributes:
    guid: Unique id within its split, '<split>-<index>'.
    words: The words, as split in the data (not yet sub-word tokenized).
    labels: One tag id per word, or None when unlabelled.
  """
  guid: str
  words: list[str]
  labels: list[int] | None


def parse_label_names(text: str) -> tuple[str, ...] | None:
  """'a, b,c' -> ('a', 'b', 'c'); '' -> None (the names are then found in the data)."""
  names = tuple(name.strip() for name in text.split(",") if name.strip())
  if len(set(names)) != len(names):
    raise errors.UserError(f"data.label_names {text!r} lists a label twice")
  return names or None


def read_text_examples(patterns: str, field: str, split: str, text_a_key: str,
                       text_b_key: str | None, label_key: str, scores: bool,
                       label_names: Sequence[str] | None,
                       max_examples: int) -> tuple[list[TextExample], tuple[str, ...] | None]:
  """Reads classification or regression examples from CSV, TSV or JSON-lines files.

  Args:
    patterns: A path or comma-separated globs (local or gs://).
    field: The config field patterns came from, for errors (e.g. 'data.train_file').
    split: Split name, for the guids.
    text_a_key: Column of the first text.
    text_b_key: Column of the second text; None for a single-text task.
    label_key: Column of the label.
    scores: Whether labels are numbers (regression) rather than names (classification).
    label_names: Classification: the labels in id order; None = the sorted distinct labels
      of these files. Ignored for regression.
    max_examples: Stop after this many rows (0 = all).

  Returns:
    (examples, label names); the label names are None for regression.

  Raises:
    errors.UserError: If a file is missing or unreadable, or a row lacks a column or has a
      label outside label_names (or a non-numeric regression label).
  """
  rows = []  # (where, text_a, text_b, raw label)
  for path in files_lib.match_files(patterns, field):
    for line, row in _table_rows(path):
      where = f"{path}:{line}"
      text_a = _text_value(row, text_a_key, where)
      text_b = None if text_b_key is None else _text_value(row, text_b_key, where)
      rows.append((where, text_a, text_b, _value(row, label_key, where)))
      if max_examples and len(rows) >= max_examples:
        break
    if max_examples and len(rows) >= max_examples:
      break
  if scores:
    labels = [_score(label, where, label_key) for where, _, _, label in rows]
    label_names = None
  else:
    if label_names is None:
      for where, _, _, label in rows:
        if not _label_string(label):
          raise errors.UserError(f"{where}: column {label_key!r} is empty: every example needs "
                                 "a label")
      label_names = tuple(sorted({_label_string(label) for _, _, _, label in rows}))
    label_index = _label_index(label_names)
    labels = [_label_id(label, label_index, where, label_key) for where, _, _, label in rows]
  examples = [TextExample(f"{split}-{i}", text_a, text_b, label)
              for i, ((_, text_a, text_b, _), label) in enumerate(zip(rows, labels))]
  return examples, None if label_names is None else tuple(label_names)


def read_text_columns(patterns: str, field: str, keys: Sequence[str], label_key: str = "",
                      max_examples: int = 0) -> list[tuple[str, tuple[str, ...], int | None]]:
  """(where, the texts of `keys`, the label as an integer id or None) of every row of CSV, TSV
  or JSON-lines files; no label is read without `label_key` (mode=predict's inputs).

  Raises:
    errors.UserError: If a file is missing or unreadable, or a row lacks one of the columns or
      has a label that is not an integer.
  """
  rows = []
  for path in files_lib.match_files(patterns, field):
    for line, row in _table_rows(path):
      where = f"{path}:{line}"
      label = None
      if label_key:
        label = _as_int(_value(row, label_key, where))
        if label is None:
          raise errors.UserError(f"{where}: column {label_key!r} must be an integer label, not "
                                 f"{row[label_key]!r}")
      rows.append((where, tuple(_text_value(row, key, where) for key in keys), label))
      if max_examples and len(rows) >= max_examples:
        return rows
  return rows


def read_word_lists(patterns: str, field: str, words_key: str) -> list[tuple[str, list[str]]]:
  """(where, words) of every row of JSON-lines files whose `words_key` is a list of words."""
  sentences = []
  for path in files_lib.match_files(patterns, field):
    for line_number, line in enumerate(_read_text(path).splitlines(), start=1):
      if line.strip():
        where = f"{path}:{line_number}"
        sentences.append((where, _words(_json_object(line, path, line_number), words_key, where)))
  return sentences


def read_token_examples(patterns: str, field: str, split: str, words_key: str, tags_key: str,
                        label_names: Sequence[str] | None,
                        max_examples: int) -> tuple[list[TokenExample], tuple[str, ...]]:
  """Reads NER sentences from JSON-lines or CoNLL text files.

  Args:
    patterns: A path or comma-separated globs (local or gs://).
    field: The config field patterns came from, for errors.
    split: Split name, for the guids.
    words_key: JSON lines: key of the list of words (CoNLL text: unused).
    tags_key: JSON lines: key of the list of tags (CoNLL text: unused, the last column).
    label_names: The tags in id order; None = 'O', then the other distinct tags of these
      files, sorted.
    max_examples: Stop after this many sentences (0 = all).

  Returns:
    (examples, label names).

  Raises:
    errors.UserError: If a file is missing or unreadable, a sentence is malformed, or a tag is
      not in label_names.
  """
  sentences = []  # (where, column of the tags, words, raw tags)
  for path in files_lib.match_files(patterns, field):
    if _is_json(path):
      reader, tags_column = _json_sentences(path, words_key, tags_key), tags_key
    else:
      reader, tags_column = _conll_sentences(path), "tag (last)"
    for where, words, tags in reader:
      sentences.append((where, tags_column, words, tags))
      if max_examples and len(sentences) >= max_examples:
        break
    if max_examples and len(sentences) >= max_examples:
      break
  if label_names is None:
    tags_found = {_label_string(tag) for *_, tags in sentences for tag in tags}
    # 'O' first: id 0 is then "no entity", which padding and cut-off words are labelled too.
    label_names = tuple(sorted(tags_found, key=lambda tag: (tag != OUTSIDE_LABEL, tag)))
  label_index = _label_index(label_names)
  examples = [TokenExample(f"{split}-{i}", words,
                           [_label_id(tag, label_index, where, tags_column) for tag in tags])
              for i, (where, tags_column, words, tags) in enumerate(sentences)]
  return examples, tuple(label_names)


def _is_json(path: str) -> bool:
  return path.lower().endswith(_JSON_EXTENSIONS)


def _read_text(path: str) -> str:
  """A whole file as text; 'utf-8-sig' drops the byte-order mark spreadsheets write."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read().decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise errors.UserError(f"{path}: not UTF-8 text: {e}") from None
  except tf.errors.OpError as e:
    raise errors.UserError(f"cannot read {path}: {e.message}") from None


# The value DictReader gives the columns a row is too short to have.
_SHORT_ROW = object()


def _table_rows(path: str) -> Iterator[tuple[int, dict]]:
  """(line number, row dict) of a CSV, TSV or JSON-lines file, 1-based lines."""
  extension = os.path.splitext(path)[1].lower()
  if extension not in _TEXT_EXTENSIONS:
    raise errors.UserError(f"{path}: unknown format {extension!r}: use .csv, .tsv, .jsonl or "
                           ".json (JSON lines)")
  text = _read_text(path)
  if extension in _JSON_EXTENSIONS:
    for line_number, line in enumerate(text.splitlines(), start=1):
      if line.strip():
        row = _json_object(line, path, line_number)
        yield line_number, row
    return
  if extension == ".tsv":
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t",
                            quoting=csv.QUOTE_NONE, restval=_SHORT_ROW)
  else:
    reader = csv.DictReader(io.StringIO(text, newline=""), restval=_SHORT_ROW)
  try:
    for row in reader:
      # A short row's missing columns hold _SHORT_ROW: _value reports the one a task reads.
      yield reader.line_num, row
  except csv.Error as e:
    raise errors.UserError(f"{path}:{reader.line_num}: bad {extension[1:].upper()}: {e}") from None


def _json_object(line: str, path: str, line_number: int) -> dict:
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise errors.UserError(f"{path}:{line_number}: not JSON: {e}") from None
  if not isinstance(row, dict):
    raise errors.UserError(f"{path}:{line_number}: a JSON-lines row must be an object, not "
                           f"{type(row).__name__}")
  return row


def _value(row: dict, key: str, where: str):
  value = row.get(key)
  if value is _SHORT_ROW:
    fields = sum(1 for v in row.values() if v is not _SHORT_ROW)
    raise errors.UserError(f"{where}: no value for column {key!r}: the row has {fields} of the "
                           f"header's {len(row)} fields (an unclosed quote, or a missing "
                           "separator?)")
  if value is None:
    columns = ", ".join(str(column) for column in row if column is not None)
    raise errors.UserError(f"{where}: no column {key!r} (columns: {columns}); set the task's "
                           f"key in data.text_a_key, data.text_b_key or data.label_key")
  return value


def _text_value(row: dict, key: str, where: str) -> str:
  value = _value(row, key, where)
  if not isinstance(value, str):
    raise errors.UserError(f"{where}: column {key!r} must be text, not {value!r}")
  return value


def _label_string(value) -> str:
  """A label as the text it was written as: a JSON 1 and a CSV "1" are the same label."""
  return value.strip() if isinstance(value, str) else json.dumps(value)


def _label_index(label_names: Sequence[str]) -> dict:
  """Label string -> id, plus integer ids themselves where no name is an integer."""
  index = {name: i for i, name in enumerate(label_names)}
  if not any(_as_int(name) is not None for name in label_names):
    # GLUE's .tsv files store ids (0/1) where TFDS has names: accept both.
    index.update({i: i for i in range(len(label_names))})
  return index


def _as_int(value) -> int | None:
  if isinstance(value, bool):
    return None
  if isinstance(value, int):
    return value
  if isinstance(value, str) and value.strip().lstrip("-").isdigit():
    return int(value.strip())
  return None


def _label_id(value, label_index: dict, where: str, column: str) -> int:
  key = _label_string(value)
  if key in label_index:
    return label_index[key]
  as_int = _as_int(value)
  if as_int is not None and as_int in label_index:
    return label_index[as_int]
  names = [name for name in label_index if isinstance(name, str)]
  raise errors.UserError(f"{where}: column {column!r}: label {value!r} is not one of {names} "
                         f"(data.label_names)")


def _score(value, where: str, column: str) -> float:
  try:
    if isinstance(value, bool):
      raise ValueError
    score = float(value)
  except (TypeError, ValueError):
    score = math.nan
  if not math.isfinite(score):
    raise errors.UserError(f"{where}: column {column!r}: regression label {value!r} is not a "
                           f"finite number")
  return score


def _words(row: dict, key: str, where: str) -> list[str]:
  words = _value(row, key, where)
  if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
    raise errors.UserError(f"{where}: column {key!r} must be a list of words")
  return words


def _json_sentences(path: str, words_key: str,
                    tags_key: str) -> Iterator[tuple[str, list[str], list]]:
  for line_number, line in enumerate(_read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    where = f"{path}:{line_number}"
    row = _json_object(line, path, line_number)
    words, tags = _words(row, words_key, where), _value(row, tags_key, where)
    if not isinstance(tags, list) or len(tags) != len(words):
      raise errors.UserError(f"{where}: column {tags_key!r} must be a list of {len(words)} "
                             f"tags, one per word")
    yield where, words, tags


def _conll_sentences(path: str) -> Iterator[tuple[str, list[str], list[str]]]:
  words, tags, start = [], [], 0
  for line_number, line in enumerate(_read_text(path).splitlines(), start=1):
    columns = line.split()
    if not columns or columns[0] == DOCSTART:
      if words:
        yield f"{path}:{start}", words, tags
      words, tags = [], []
      continue
    if len(columns) < 2:
      raise errors.UserError(f"{path}:{line_number}: expected 'word ... tag' (CoNLL text: the "
                             f"word first, the tag last), got {line.strip()!r}")
    if not words:
      start = line_number
    words.append(columns[0])
    tags.append(columns[-1])
  if words:
    yield f"{path}:{start}", words, tags
