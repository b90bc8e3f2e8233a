"""SQuAD v1.1 / v2.0 for span fine-tuning, prepared the way the original BERT prepares it.

    SQuAD JSON or TFDS 'squad/v1.1' | 'squad/v2.0'
      -> SquadExample: the context split on whitespace into words, the answer as a word span
      -> SquadFeatures (squad_windows.py): windows of [CLS] query [SEP] doc-window [SEP], the doc
         tokens of a long context covered by overlapping windows (doc_stride apart), the answer
         as a token span
      -> model start/end logits per feature
      -> squad_postprocess.postprocess: best span per question, mapped back to the context text

Words are whitespace-separated chunks of the context, exactly as the original splits them; each
word is tokenized on its own (WordPiece or SentencePiece), so every token knows its word and a
predicted token span maps back to a span of the original text.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json

from absl import logging
import numpy as np
import tensorflow as tf

from bert_jax import errors
from bert_jax import tfds_datasets

# The original numbers features from here, so unique ids never collide with example indices.
FIRST_UNIQUE_ID = 1_000_000_000
TFDS_NAMES = ("squad/v1.1", "squad/v2.0")
# SentencePiece's mark of a preceding space.
SENTENCEPIECE_SPACE = "\u2581"
# What the original counts as whitespace between words: not str.isspace(), so a no-break space
# (U+00A0) stays inside a word, while the narrow no-break space U+202F separates words.
_WHITESPACE = frozenset(" \t\r\n\u202f")

@dataclasses.dataclass
class SquadExample:
  """One question on one context.

  Attributes:
    qas_id: The question's id in the dataset (keys of the predictions).
    question_text: The question.
    doc_tokens: The context split on whitespace: the words answers are mapped back to.
    orig_answer_text: The (first) answer's text; "" when impossible or unknown.
    start_position: Word index of the answer's first word; -1 when impossible or unknown.
    end_position: Word index of the answer's last word (inclusive); -1 likewise.
    is_impossible: SQuAD v2.0: the context does not answer the question.
    answers: Every gold answer text (what evaluation compares with); [] when impossible.
  """

  qas_id: str
  question_text: str
  doc_tokens: list[str]
  orig_answer_text: str = ""
  start_position: int = -1
  end_position: int = -1
  is_impossible: bool = False
  answers: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SquadFeatures:
  """Model inputs of every window of every example, and what postprocessing needs to map back.

  Row i of every array and entry i of every list describe feature i. Token positions index the
  whole input, [CLS] at 0.

  Attributes:
    unique_ids: [N] int64, FIRST_UNIQUE_ID onwards.
    example_index: [N] int32, the feature's example in the list it was built from.
    input_ids: [N, max_seq_length] int32, padded with the tokenizer's pad id.
    input_mask: [N, max_seq_length] int32, 1 on real tokens.
    segment_ids: [N, max_seq_length] int32, 0 on [CLS] query [SEP], 1 on the doc and its [SEP].
    start_positions: [N] int32, the answer's first token; 0 ([CLS]) when the window does not
      hold the whole answer, the question is impossible, or features are not for training.
    end_positions: [N] int32, the answer's last token (inclusive); 0 likewise.
    tokens: The tokens of each feature, unpadded.
    token_to_orig_map: Per feature, doc token position -> word index in the example's doc_tokens.
    token_is_max_context: Per feature, doc token position -> whether this window gives the token
      its most context (a token in several windows is predicted only from its best one).
  """

  unique_ids: np.ndarray
  example_index: np.ndarray
  input_ids: np.ndarray
  input_mask: np.ndarray
  segment_ids: np.ndarray
  start_positions: np.ndarray
  end_positions: np.ndarray
  tokens: list[list[str]]
  token_to_orig_map: list[dict[int, int]]
  token_is_max_context: list[dict[int, bool]]

  def __len__(self) -> int:
    return len(self.unique_ids)

  def arrays(self) -> dict[str, np.ndarray]:
    """The numpy arrays by their feature names (the original's), for batching."""
    return {"unique_ids": self.unique_ids, "input_ids": self.input_ids,
            "input_mask": self.input_mask, "segment_ids": self.segment_ids,
            "start_positions": self.start_positions, "end_positions": self.end_positions}


# ---------------------------------------------------------------------------------------------
# Examples.


def split_into_words(context: str) -> tuple[list[str], list[int]]:
  """Splits a context on whitespace, keeping which word each character belongs to.

  Args:
    context: The paragraph.

  Returns:
    (words, char_to_word): char_to_word[c] is the index of the word holding character c; a
    whitespace character belongs to the word before it (-1 before the first word), which is
    how the original resolves an answer offset that points at a space.
  """
  words: list[str] = []
  char_to_word: list[int] = []
  after_space = True
  for char in context:
    if char in _WHITESPACE:
      after_space = True
    else:
      if after_space:
        words.append(char)
      else:
        words[-1] += char
      after_space = False
    char_to_word.append(len(words) - 1)
  return words, char_to_word


def _answer_word_span(words: list[str], char_to_word: list[int], answer_text: str,
                      answer_start: int) -> tuple[int, int] | None:
  """The answer's (first, last) word, or None when its text is not found at its offset."""
  answer_end = answer_start + len(answer_text) - 1
  if not answer_text or answer_start < 0 or answer_end >= len(char_to_word):
    return None
  start, end = char_to_word[answer_start], char_to_word[answer_end]
  if start < 0:
    return None
  # The words must hold the answer (whitespace-normalised); not equal to it: an answer may be
  # part of a word ("1895" of "(1895)"), the tokens narrow it later.
  if " ".join(answer_text.split()) not in " ".join(words[start:end + 1]):
    return None
  return start, end


def _make_example(qas_id: str, question: str, words: list[str], char_to_word: list[int],
                  answers: Sequence[tuple[str, int]], is_impossible: bool,
                  is_training: bool) -> SquadExample | None:
  """One SquadExample, or None when training needs an answer it cannot locate."""
  if is_impossible:
    return SquadExample(qas_id, question, words, is_impossible=True)
  answer_texts = [text for text, _ in answers]
  span = _answer_word_span(words, char_to_word, *answers[0]) if answers else None
  if span is None:
    if is_training:
      return None
    # Evaluation compares with the texts only: keep the question, positions unknown.
    return SquadExample(qas_id, question, words, answers=answer_texts)
  # Training uses the first answer (training sets have exactly one).
  return SquadExample(qas_id, question, words, answers[0][0], span[0], span[1],
                      answers=answer_texts)


def _log_skipped(num_skipped: int, num_kept: int, source: str) -> None:
  if num_skipped:
    logging.warning("SQuAD %s: skipped %d of %d training questions whose answer text is not "
                    "found at its offset", source, num_skipped, num_skipped + num_kept)


def read_squad_json(path: str, is_training: bool) -> list[SquadExample]:
  """Reads a file in the official SQuAD JSON format (v1.1 or v2.0).

  Args:
    path: The JSON file (local or gs://).
    is_training: True: each example carries its first answer as a word span; a question whose
      answer text is not found at its offset (or that has none) is skipped, with a warning.
      False: every question is kept; positions are -1 where the answer cannot be located.

  Returns:
    The examples in file order.

  Raises:
    errors.UserError: If the file does not exist or is not SQuAD JSON.
  """
  if not tf.io.gfile.exists(path):
    raise errors.UserError(f"SQuAD file {path!r} does not exist")
  try:
    with tf.io.gfile.GFile(path, "r") as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.UserError(f"SQuAD file {path!r} is not JSON: {e}") from None
  examples = []
  num_skipped = 0
  try:
    for article in data["data"]:
      for paragraph in article["paragraphs"]:
        words, char_to_word = split_into_words(paragraph["context"])
        for qa in paragraph["qas"]:
          answers = [(answer["text"], int(answer["answer_start"]))
                     for answer in qa.get("answers", [])]
          example = _make_example(str(qa["id"]), qa["question"], words, char_to_word, answers,
                                  bool(qa.get("is_impossible", False)), is_training)
          if example is None:
            num_skipped += 1
          else:
            examples.append(example)
  except (KeyError, TypeError) as e:
    raise errors.UserError(f"SQuAD file {path!r} is not in the SQuAD format: missing or bad "
                           f"field {e}") from None
  _log_skipped(num_skipped, len(examples), path)
  return examples


def tfds_examples(name: str, split: str, data_dir: str | None,
                  is_training: bool) -> list[SquadExample]:
  """Reads SQuAD from TensorFlow Datasets.

  Args:
    name: 'squad/v1.1' or 'squad/v2.0'.
    split: A TFDS split: 'train', 'validation', or a slice ('train[:1%]').
    data_dir: TFDS data directory; None = TFDS's default.
    is_training: As in read_squad_json.

  Returns:
    The examples in dataset order.

  Raises:
    errors.UserError: If name is not a SQuAD dataset of TFDS.
  """
  if name not in TFDS_NAMES:
    raise errors.UserError(f"SQuAD dataset name {name!r} is not one of {TFDS_NAMES}")
  # Imported here: importing TFDS takes seconds, and only this reader needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  dataset = tfds_datasets.prepared_builder(name, data_dir).as_dataset(split=split)
  # Each record is one question; paragraphs repeat, so each is split into words once.
  words_of_context: dict[str, tuple[list[str], list[int]]] = {}
  examples = []
  num_skipped = 0
  for record in tfds.as_numpy(dataset):
    context = record["context"].decode("utf-8")
    if context not in words_of_context:
      words_of_context[context] = split_into_words(context)
    words, char_to_word = words_of_context[context]
    answers = [(text.decode("utf-8"), int(start)) for text, start in
               zip(record["answers"]["text"], record["answers"]["answer_start"])]
    # v1.1 has no is_impossible feature; v2.0's plausible_answers are not gold answers.
    is_impossible = bool(record.get("is_impossible", False))
    example = _make_example(record["id"].decode("utf-8"), record["question"].decode("utf-8"),
                            words, char_to_word, answers, is_impossible, is_training)
    if example is None:
      num_skipped += 1
    else:
      examples.append(example)
  _log_skipped(num_skipped, len(examples), f"{name} {split}")
  return examples
