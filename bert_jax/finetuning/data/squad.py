"""SQuAD v1.1 / v2.0 for span fine-tuning, prepared the way the original BERT prepares it.

    SQuAD JSON or TFDS 'squad/v1.1' | 'squad/v2.0'
      -> SquadExample: the context split on whitespace into words, the answer as a word span
      -> SquadFeatures: windows of [CLS] query [SEP] doc-window [SEP], the doc tokens of a long
         context covered by overlapping windows (doc_stride apart), the answer as a token span
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
from bert_jax.tokenizers import special_tokens
from bert_jax.tokenizers import tokenization

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
  dataset = tfds.load(name, split=split, data_dir=data_dir)
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


# ---------------------------------------------------------------------------------------------
# Features.


def is_sentencepiece(tokenizer: tokenization.Tokenizer | None) -> bool:
  """Whether tokens are SentencePiece pieces ('▁' marks spaces), not WordPiece ('##' joins)."""
  return isinstance(tokenizer, tokenization.SentencePieceTokenizer)


def _comparable(tokens: Sequence[str], sentencepiece: bool) -> str:
  """What must equal for a doc span to be the answer: the tokens for WordPiece (as the
  original); for SentencePiece their characters without the '▁' marks, because the pieces of a
  word's middle differ from those of the same text on its own ("(read,write)" has 'w' 'rite',
  "write" alone is '▁write')."""
  if sentencepiece:
    return "".join(tokens).replace(SENTENCEPIECE_SPACE, "")
  return " ".join(tokens)


def _improve_answer_span(doc_tokens: list[str], start: int, end: int,
                         answer_tokens: list[str], sentencepiece: bool) -> tuple[int, int]:
  """Narrows a token span to the tokens of the answer text, when they occur inside it.

  The word span of "1895" in "(1895-1943)." covers all of "( 1895 - 1943 ) ."; the tokens of
  the answer alone match "1895" exactly. The first match wins, the widest one (start ascending,
  end descending), as in the original; no match keeps the word span.
  """
  target = _comparable(answer_tokens, sentencepiece)
  for new_start in range(start, end + 1):
    for new_end in range(end, new_start - 1, -1):
      if _comparable(doc_tokens[new_start:new_end + 1], sentencepiece) == target:
        return new_start, new_end
  return start, end


def _doc_windows(num_doc_tokens: int, max_tokens_for_doc: int,
                 doc_stride: int) -> list[tuple[int, int]]:
  """(start, length) of each window over the doc tokens: doc_stride apart, the last one ending
  at the last token. An empty doc still gets one (empty) window, so every example has a feature."""
  windows = []
  start = 0
  while True:
    length = min(num_doc_tokens - start, max_tokens_for_doc)
    windows.append((start, length))
    if start + length >= num_doc_tokens:
      return windows
    start += min(length, doc_stride)


def _max_context_windows(windows: list[tuple[int, int]], num_doc_tokens: int) -> np.ndarray:
  """For each doc token, the window where it has the most context: [num_doc_tokens] int.

  A token's score in a window: the smaller of the tokens to its left and to its right in it,
  plus 0.01 of the window's length (so a longer window wins a tie); the first window wins an
  exact tie. Each token is predicted only from its best window.
  """
  best_score = np.full(num_doc_tokens, -1.0)
  best_window = np.zeros(num_doc_tokens, dtype=np.int64)
  for index, (start, length) in enumerate(windows):
    positions = np.arange(start, start + length)  # [length]
    score = np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length
    better = score > best_score[start:start + length]  # Strictly: earlier windows win ties.
    best_score[start:start + length][better] = score[better]
    best_window[start:start + length][better] = index
  return best_window


def convert_examples_to_features(examples: Sequence[SquadExample],
                                 tokenizer: tokenization.Tokenizer,
                                 max_seq_length: int = 384,
                                 doc_stride: int = 128,
                                 max_query_length: int = 64,
                                 *,
                                 is_training: bool) -> SquadFeatures:
  """Turns examples into fixed-length model inputs, one or more windows per example.

  Args:
    examples: From read_squad_json or tfds_examples.
    tokenizer: WordPiece or SentencePiece; its [CLS] [SEP] [PAD] ids are used.
    max_seq_length: Tokens per feature, [CLS] and both [SEP] included.
    doc_stride: Doc tokens between the starts of consecutive windows.
    max_query_length: The question is cut to this many tokens.
    is_training: Fill start_positions / end_positions from the examples' answers.

  Returns:
    The features, in example order.

  Raises:
    errors.UserError: If the lengths leave no room for the doc, or doc_stride is not positive.
  """
  if max_seq_length - max_query_length - 3 <= 0:
    raise errors.UserError(f"max_seq_length={max_seq_length} leaves no room for the context "
                           f"after max_query_length={max_query_length} and 3 special tokens")
  if doc_stride <= 0:
    raise errors.UserError(f"doc_stride={doc_stride} must be positive")
  sentencepiece = is_sentencepiece(tokenizer)
  # Contexts repeat across questions and words across contexts: tokenize each word once.
  word_tokens: dict[str, list[str]] = {}

  def tokenize_word(word: str) -> list[str]:
    if word not in word_tokens:
      word_tokens[word] = tokenizer.tokenize(word)
    return word_tokens[word]

  rows = {name: [] for name in ("example_index", "input_ids", "input_mask", "segment_ids",
                                "start_positions", "end_positions")}
  all_tokens, all_token_to_orig, all_max_context = [], [], []
  for example_index, example in enumerate(examples):
    query_tokens = tokenizer.tokenize(example.question_text)[:max_query_length]
    # Doc tokens, each with its word; and the first token of each word.
    token_to_word: list[int] = []
    word_to_first_token: list[int] = []
    doc_tokens: list[str] = []
    for word_index, word in enumerate(example.doc_tokens):
      word_to_first_token.append(len(doc_tokens))
      for token in tokenize_word(word):
        token_to_word.append(word_index)
        doc_tokens.append(token)

    answer_start, answer_end = -1, -1
    if is_training and not example.is_impossible and example.start_position >= 0:
      answer_start = word_to_first_token[example.start_position]
      if example.end_position + 1 < len(example.doc_tokens):
        answer_end = word_to_first_token[example.end_position + 1] - 1
      else:
        answer_end = len(doc_tokens) - 1
      answer_tokens = [token for word in example.orig_answer_text.split()
                       for token in tokenize_word(word)]
      answer_start, answer_end = _improve_answer_span(doc_tokens, answer_start, answer_end,
                                                      answer_tokens, sentencepiece)

    windows = _doc_windows(len(doc_tokens), max_seq_length - len(query_tokens) - 3, doc_stride)
    best_window = _max_context_windows(windows, len(doc_tokens)).tolist()
    doc_offset = len(query_tokens) + 2  # Position of the first doc token: after [CLS] q [SEP].
    for window_index, (window_start, window_length) in enumerate(windows):
      window_end = window_start + window_length - 1
      tokens = ([special_tokens.CLS_TOKEN] + query_tokens + [special_tokens.SEP_TOKEN] +
                doc_tokens[window_start:window_end + 1] + [special_tokens.SEP_TOKEN])
      token_to_orig = {doc_offset + i: token_to_word[window_start + i]
                       for i in range(window_length)}
      max_context = {doc_offset + i: best_window[window_start + i] == window_index
                     for i in range(window_length)}
      # Ids, not tokens, for the specials: a vocabulary's own names for them may differ.
      input_ids = ([tokenizer.cls_id] + tokenizer.convert_tokens_to_ids(query_tokens) +
                   [tokenizer.sep_id] +
                   tokenizer.convert_tokens_to_ids(doc_tokens[window_start:window_end + 1]) +
                   [tokenizer.sep_id])
      num_padding = max_seq_length - len(input_ids)
      rows["input_ids"].append(input_ids + [tokenizer.pad_id] * num_padding)
      rows["input_mask"].append([1] * len(input_ids) + [0] * num_padding)
      rows["segment_ids"].append([0] * doc_offset + [1] * (window_length + 1) +
                                 [0] * num_padding)
      # Only a window holding the whole answer points at it; the others point at [CLS], which
      # is also the "no answer" of v2.0.
      if answer_start >= window_start and 0 <= answer_end <= window_end and (
          answer_start <= answer_end):
        start_position = answer_start - window_start + doc_offset
        end_position = answer_end - window_start + doc_offset
      else:
        start_position, end_position = 0, 0
      rows["start_positions"].append(start_position)
      rows["end_positions"].append(end_position)
      rows["example_index"].append(example_index)
      all_tokens.append(tokens)
      all_token_to_orig.append(token_to_orig)
      all_max_context.append(max_context)

  num_features = len(all_tokens)
  as_int32 = {name: np.asarray(values, dtype=np.int32) for name, values in rows.items()}
  for name in ("input_ids", "input_mask", "segment_ids"):
    as_int32[name] = as_int32[name].reshape(num_features, max_seq_length)
  return SquadFeatures(
      unique_ids=np.arange(FIRST_UNIQUE_ID, FIRST_UNIQUE_ID + num_features, dtype=np.int64),
      tokens=all_tokens, token_to_orig_map=all_token_to_orig,
      token_is_max_context=all_max_context, **as_int32)
