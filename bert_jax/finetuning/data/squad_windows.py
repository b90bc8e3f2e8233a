"""SQuAD features: each question with windows of its context, [CLS] query [SEP] window [SEP], the
windows doc_stride apart, each token knowing its word and whether this window is its best
context, and the answer as a token span (tightened to the answer text, as the original does)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bert_jax import errors
from bert_jax.finetuning.data import squad
from bert_jax.tokenizers import special_tokens
from bert_jax.tokenizers import tokenization


def is_sentencepiece(tokenizer: tokenization.Tokenizer | None) -> bool:
  """Whether tokens are SentencePiece pieces ('▁' marks spaces), not WordPiece ('##' joins)."""
  return isinstance(tokenizer, tokenization.SentencePieceTokenizer)


def _comparable(tokens: Sequence[str], sentencepiece: bool) -> str:
  """What must equal for a doc span to be the answer: the tokens for WordPiece (as the
  original); for SentencePiece their characters without the '▁' marks, because the pieces of a
  word's middle differ from those of the same text on its own ("(read,write)" has 'w' 'rite',
  "write" alone is '▁write')."""
  if sentencepiece:
    return "".join(tokens).replace(squad.SENTENCEPIECE_SPACE, "")
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


def convert_examples_to_features(examples: Sequence[squad.SquadExample],
                                 tokenizer: tokenization.Tokenizer,
                                 max_seq_length: int = 384,
                                 doc_stride: int = 128,
                                 max_query_length: int = 64,
                                 *,
                                 is_training: bool) -> squad.SquadFeatures:
  """Turns examples into fixed-length model inputs, one or more windows per example.

  Args:
    examples: From squad.read_squad_json or squad.tfds_examples.
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
  return squad.SquadFeatures(
      unique_ids=np.arange(squad.FIRST_UNIQUE_ID, squad.FIRST_UNIQUE_ID + num_features,
                           dtype=np.int64),
      tokens=all_tokens, token_to_orig_map=all_token_to_orig,
      token_is_max_context=all_max_context, **as_int32)
