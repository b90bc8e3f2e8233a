"""Model-ready features of fine-tuning examples: [CLS] text_a [SEP] (text_b [SEP]) with its ids,
mask and segment ids, or one label per word for token tasks (on its first sub-token), and the
way back from token predictions to word tags."""

from collections.abc import Sequence

import numpy as np

from bert_jax import errors
from bert_jax.finetuning.data import tasks
from bert_jax.tokenizers import tokenization


def _check_max_seq_length(max_seq_length: int, num_special: int) -> None:
  if max_seq_length <= num_special:
    raise errors.UserError(f"data.max_seq_length={max_seq_length} leaves no room for text "
                           f"beside the {num_special} [CLS]/[SEP] tokens")


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_length: int) -> None:
  """Cuts the longer of the two (its end) one token at a time until both fit in max_length.

  The original BERT's _truncate_seq_pair: a short text keeps all of itself, and the tokens
  lost come from the end, where they matter least. Works in place.
  """
  while len(tokens_a) + len(tokens_b) > max_length:
    longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    longer.pop()


def encode_text_examples(examples: Sequence[tasks.TextExample], tokenizer: tokenization.Tokenizer,
                         max_seq_length: int, scores: bool = False) -> dict[str, np.ndarray]:
  """Examples -> the original BERT's classifier features: [CLS] a [SEP] (b [SEP]), padded.

  Args:
    examples: The examples (text_b None for single-text tasks).
    tokenizer: WordPiece or SentencePiece tokenizer.
    max_seq_length: Tokens per example, special tokens included; longer pairs are truncated
      longest-first (truncate_seq_pair), single texts at their end.
    scores: Whether labels are numbers (regression: float32 label_ids), not class ids.

  Returns:
    input_ids, input_mask, segment_ids: int32 [N, max_seq_length] (segment 0 for [CLS] a
    [SEP], 1 for b [SEP], padding [PAD] with mask 0 and segment 0); label_ids [N]: int32 class
    ids, float32 scores (0 for an unlabelled example).
  """
  _check_max_seq_length(max_seq_length, 3 if any(e.text_b is not None for e in examples) else 2)
  ids_a = _encode_all(tokenizer, [example.text_a for example in examples])
  pair_indices = [i for i, example in enumerate(examples) if example.text_b is not None]
  ids_b = dict(zip(pair_indices,
                   _encode_all(tokenizer, [examples[i].text_b for i in pair_indices])))
  num_examples = len(examples)
  input_ids = np.full((num_examples, max_seq_length), tokenizer.pad_id, dtype=np.int32)
  input_mask = np.zeros((num_examples, max_seq_length), dtype=np.int32)
  segment_ids = np.zeros((num_examples, max_seq_length), dtype=np.int32)
  label_dtype = np.float32 if scores else np.int32
  label_ids = np.zeros((num_examples,), dtype=label_dtype)
  for i, example in enumerate(examples):
    tokens_a = list(ids_a[i])
    if i in ids_b:
      tokens_b = list(ids_b[i])
      truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)
      tokens = [tokenizer.cls_id, *tokens_a, tokenizer.sep_id, *tokens_b, tokenizer.sep_id]
      segment_ids[i, len(tokens_a) + 2:len(tokens)] = 1
    else:
      tokens = [tokenizer.cls_id, *tokens_a[:max_seq_length - 2], tokenizer.sep_id]
    input_ids[i, :len(tokens)] = tokens
    input_mask[i, :len(tokens)] = 1
    if example.label is not None:
      label_ids[i] = example.label
  return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids,
          "label_ids": label_ids}


def _encode_all(tokenizer: tokenization.Tokenizer, texts: list[str]) -> list[list[int]]:
  return tokenizer.encode_batch(texts) if texts else []


def encode_token_examples(examples: Sequence[tasks.TokenExample], tokenizer: tokenization.Tokenizer,
                          max_seq_length: int) -> dict[str, np.ndarray]:
  """Sentences -> token-tagging features: [CLS] pieces of every word [SEP], a tag per word.

  Each word is tokenized on its own and its tag goes on its FIRST sub-token; the other
  sub-tokens, [CLS], [SEP] and padding get label 0 and weight 0. A word that tokenizes to
  nothing (only control or whitespace characters) becomes one [UNK], so that every word keeps
  exactly one labelled position and words stay aligned with their tags. Sentences longer than
  max_seq_length - 2 pieces are cut at the end: a word keeps its tag if its first sub-token
  fits; the words after are not in the features (decode_token_predictions predicts them 'O').

  Args:
    examples: The sentences (labels None: label_ids stay 0).
    tokenizer: WordPiece or SentencePiece tokenizer.
    max_seq_length: Tokens per example, [CLS] and [SEP] included.

  Returns:
    input_ids, input_mask, segment_ids, label_ids: int32 [N, max_seq_length];
    label_weights: float32 [N, max_seq_length], 1.0 on the first sub-token of each word that
    fits; num_words: int32 [N], words in each sentence (truncated ones included), for
    decode_token_predictions.
  """
  _check_max_seq_length(max_seq_length, 2)
  # One batch for all the words of all the sentences: the tokenizer's fast path.
  word_ids = _encode_all(tokenizer, [word for example in examples for word in example.words])
  num_examples = len(examples)
  input_ids = np.full((num_examples, max_seq_length), tokenizer.pad_id, dtype=np.int32)
  input_mask = np.zeros((num_examples, max_seq_length), dtype=np.int32)
  label_ids = np.zeros((num_examples, max_seq_length), dtype=np.int32)
  label_weights = np.zeros((num_examples, max_seq_length), dtype=np.float32)
  num_words = np.array([len(example.words) for example in examples], dtype=np.int32)
  max_pieces = max_seq_length - 2
  next_word = 0
  for i, example in enumerate(examples):
    pieces = []
    for j in range(len(example.words)):
      ids = word_ids[next_word + j] or [tokenizer.unk_id]
      if len(pieces) >= max_pieces:
        break
      position = 1 + len(pieces)  # After [CLS].
      label_weights[i, position] = 1.0
      if example.labels is not None:
        label_ids[i, position] = example.labels[j]
      pieces.extend(ids)
    next_word += len(example.words)
    tokens = [tokenizer.cls_id, *pieces[:max_pieces], tokenizer.sep_id]
    input_ids[i, :len(tokens)] = tokens
    input_mask[i, :len(tokens)] = 1
  return {"input_ids": input_ids, "input_mask": input_mask,
          "segment_ids": np.zeros_like(input_ids), "label_ids": label_ids,
          "label_weights": label_weights, "num_words": num_words}


def decode_token_predictions(features: dict[str, np.ndarray],
                             predictions: np.ndarray) -> list[list[int]]:
  """Per-token predictions -> one tag id per word, in the words of each sentence.

  Args:
    features: What encode_token_examples returned (label_weights and num_words are used).
    predictions: Tag ids [N, max_seq_length] (argmax of the token head's logits).

  Returns:
    For each sentence, a list of num_words tag ids; words cut off by truncation are predicted
    tasks.OUTSIDE_ID (0: 'O', which tasks.load_examples keeps first in every token task's label
    names).
  """
  predictions = np.asarray(predictions)
  word_tags = []
  for i, num_words in enumerate(features["num_words"]):
    starts = np.flatnonzero(features["label_weights"][i] > 0)  # First sub-token of each word.
    tags = predictions[i, starts].tolist()
    word_tags.append([int(tag) for tag in tags] + [tasks.OUTSIDE_ID] * (int(num_words) - len(tags)))
  return word_tags
