"""SQuAD predictions from start/end logits, as the original BERT makes them.

For each question, over all windows (features) of its context: the n best start and n best end
positions of each window give candidate spans; a span must lie in the doc part, end after it
starts, be at most max_answer_length tokens, and start at a token that has its most context in
this window. Candidates rank by start logit + end logit. The chosen tokens map back to words of
the context, and then (get_final_text) to the exact characters of those words the tokens cover,
so the answer keeps the context's casing and punctuation ("Tesla's", not "tesla ' s").

SQuAD v2.0: "no answer" scores start_logit[0] + end_logit[0] (both at [CLS]), the lowest over
the question's windows; it is predicted when it beats the best span by more than a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

import numpy as np

from bert_jax.finetuning.data.squad import SquadExample  # pylint: disable=g-importing-member
from bert_jax.finetuning.data.squad import SquadFeatures  # pylint: disable=g-importing-member
from bert_jax.tokenizers import tokenization
from bert_jax.tokenizers import wordpiece


_SENTENCEPIECE_SPACE = "\u2581"


@dataclasses.dataclass(frozen=True)
class _Candidate:
  feature_index: int
  start_index: int  # Token positions in the feature; 0 and 0 = no answer.
  end_index: int
  start_logit: float
  end_logit: float


def _top_indices(logits: np.ndarray, n: int) -> list[int]:
  # Stable sort: equal logits keep position order, so results do not depend on the sort.
  return np.argsort(-logits, kind="stable")[:n].tolist()


def _detokenize(tokens: Sequence[str], sentencepiece: bool) -> str:
  """Tokens back to text, words separated by single spaces."""
  if sentencepiece:
    text = "".join(tokens).replace(_SENTENCEPIECE_SPACE, " ")
  else:
    text = " ".join(tokens).replace(" ##", "").replace("##", "")
  return " ".join(text.split())


def _strip_spaces(text: str) -> tuple[str, list[int]]:
  """text without spaces, and for each of its characters the index it had in text."""
  kept = [(index, char) for index, char in enumerate(text) if char != " "]
  return "".join(char for _, char in kept), [index for index, _ in kept]


def get_final_text(pred_text: str, orig_text: str, do_lower_case: bool,
                   tokenizer: tokenization.Tokenizer | None = None) -> str:
  """The characters of orig_text that the de-tokenized prediction covers.

  orig_text (the context's words spanned by the prediction) is tokenized the way the model's
  input was, without sub-word splitting for WordPiece (BasicTokenizer: lower-cased, punctuation
  split off), and de-tokenized; pred_text is found in it, and the two are aligned character by
  character ignoring spaces. Where they cannot be aligned (the prediction is not in it, or
  normalisation changed the number of characters, e.g. stripped accents), orig_text is returned.

  Args:
    pred_text: De-tokenized predicted tokens, e.g. "tesla ' s".
    orig_text: The original words they came from, e.g. "Tesla's".
    do_lower_case: WordPiece: whether the vocabulary is uncased.
    tokenizer: A SentencePieceTokenizer to tokenize orig_text with; None or a WordPiece
      tokenizer: the original's BasicTokenizer(do_lower_case).

  Returns:
    The answer as it appears in the context.
  """
  if isinstance(tokenizer, tokenization.SentencePieceTokenizer):
    tok_text = _detokenize(tokenizer.tokenize(orig_text), sentencepiece=True)
  else:
    tok_text = " ".join(wordpiece.BasicTokenizer(do_lower_case).tokenize(orig_text))
  start = tok_text.find(pred_text)
  if not pred_text or start < 0:
    return orig_text
  end = start + len(pred_text) - 1

  orig_chars, orig_char_positions = _strip_spaces(orig_text)
  tok_chars, tok_char_positions = _strip_spaces(tok_text)
  if len(orig_chars) != len(tok_chars):
    return orig_text  # Normalisation added or removed characters: no 1:1 alignment.
  # A non-space character of tok_text has the same rank among non-spaces in orig_text.
  tok_position_to_rank = {position: rank for rank, position in enumerate(tok_char_positions)}
  if start not in tok_position_to_rank or end not in tok_position_to_rank:
    return orig_text
  orig_start = orig_char_positions[tok_position_to_rank[start]]
  orig_end = orig_char_positions[tok_position_to_rank[end]]
  return orig_text[orig_start:orig_end + 1]


def _softmax(scores: Sequence[float]) -> list[float]:
  scores = np.asarray(scores, dtype=np.float64)
  exp = np.exp(scores - scores.max())
  return (exp / exp.sum()).tolist()


def postprocess(examples: Sequence[SquadExample],
                features: SquadFeatures,
                start_logits: Any,
                end_logits: Any,
                n_best_size: int = 20,
                max_answer_length: int = 30,
                version_2_with_negative: bool = False,
                null_score_diff_threshold: float = 0.0,
                do_lower_case: bool = True,
                tokenizer: tokenization.Tokenizer | None = None,
               ) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]], dict[str, float]]:
  """Predicted answer texts from the model's logits.

  Args:
    examples: The examples the features were built from (same list, same order).
    features: From squad_windows.convert_examples_to_features.
    start_logits: [N, max_seq_length], row i for feature i (numpy or jax).
    end_logits: [N, max_seq_length].
    n_best_size: Start and end positions considered per window, and n-best entries kept.
    max_answer_length: Longest answer, in tokens.
    version_2_with_negative: SQuAD v2.0: predict "" when "no answer" wins.
    null_score_diff_threshold: v2.0: "" when null score - best span score > this.
    do_lower_case: WordPiece: whether the vocabulary is uncased (for get_final_text).
    tokenizer: The tokenizer of the features. Needed for SentencePiece (de-tokenizing pieces);
      None means WordPiece.

  Returns:
    (predictions, nbest, null_score_diffs):
      predictions: qas_id -> answer text ("" = no answer, or no valid span at all).
      nbest: qas_id -> up to n_best_size (+1 for v2.0's "") dicts of text, probability (softmax
        over the n-best scores), start_logit, end_logit; best first.
      null_score_diffs: qas_id -> null score - best span score (inf when there is no span);
        higher = more likely no answer: the official v2.0 script's na_probs.
  """
  start_logits = np.asarray(start_logits, dtype=np.float32)  # [N, max_seq_length]
  end_logits = np.asarray(end_logits, dtype=np.float32)  # [N, max_seq_length]
  if start_logits.shape != features.input_ids.shape or end_logits.shape != start_logits.shape:
    raise ValueError(f"logits of shapes {start_logits.shape}, {end_logits.shape} do not match "
                     f"the features' {features.input_ids.shape}")
  sentencepiece = isinstance(tokenizer, tokenization.SentencePieceTokenizer)
  features_of_example: dict[int, list[int]] = {}
  for feature_index, example_index in enumerate(features.example_index.tolist()):
    features_of_example.setdefault(example_index, []).append(feature_index)

  predictions, all_nbest, null_score_diffs = {}, {}, {}
  for example_index, example in enumerate(examples):
    candidates: list[_Candidate] = []
    null: _Candidate | None = None  # The window where "no answer" scores lowest.
    for feature_index in features_of_example.get(example_index, []):
      feature_start = start_logits[feature_index]  # [max_seq_length]
      feature_end = end_logits[feature_index]  # [max_seq_length]
      null_score = float(feature_start[0] + feature_end[0])
      if null is None or null_score < null.start_logit + null.end_logit:
        null = _Candidate(feature_index, 0, 0, float(feature_start[0]), float(feature_end[0]))
      token_to_orig = features.token_to_orig_map[feature_index]
      max_context = features.token_is_max_context[feature_index]
      # Padding is no candidate: its logits (zeros from packed rows) take no n-best place.
      num_tokens = len(features.tokens[feature_index])
      feature_start, feature_end = feature_start[:num_tokens], feature_end[:num_tokens]
      for start in _top_indices(feature_start, n_best_size):
        # Only doc tokens map to words: [CLS], the query and [SEP]s do not.
        if start not in token_to_orig or not max_context.get(start, False):
          continue
        for end in _top_indices(feature_end, n_best_size):
          if end not in token_to_orig or end < start or end - start + 1 > max_answer_length:
            continue
          candidates.append(_Candidate(feature_index, start, end, float(feature_start[start]),
                                       float(feature_end[end])))
    if version_2_with_negative and null is not None:
      candidates.append(null)
    candidates.sort(key=lambda c: c.start_logit + c.end_logit, reverse=True)

    nbest: list[dict[str, Any]] = []
    seen_texts = set()
    for candidate in candidates:
      if len(nbest) >= n_best_size:
        break
      if candidate.start_index > 0:
        text = _span_text(example, features, candidate, do_lower_case, tokenizer, sentencepiece)
      else:
        text = ""
      if text in seen_texts:
        continue  # Different windows (or spans) giving the same text: keep the best.
      seen_texts.add(text)
      nbest.append({"text": text, "start_logit": candidate.start_logit,
                    "end_logit": candidate.end_logit})
    if version_2_with_negative and null is not None and "" not in seen_texts:
      # "No answer" always competes, even when n_best_size spans outscore it.
      nbest.append({"text": "", "start_logit": null.start_logit, "end_logit": null.end_logit})
    if not nbest:
      # No valid span anywhere (the original predicts the word "empty" here).
      nbest.append({"text": "", "start_logit": 0.0, "end_logit": 0.0})
    probabilities = _softmax([entry["start_logit"] + entry["end_logit"] for entry in nbest])
    all_nbest[example.qas_id] = [
        {"text": entry["text"], "probability": probability,
         "start_logit": entry["start_logit"], "end_logit": entry["end_logit"]}
        for entry, probability in zip(nbest, probabilities)]

    best_span = next((entry for entry in nbest if entry["text"]), None)
    if best_span is None or null is None:
      null_score_diffs[example.qas_id] = float("inf")
    else:
      null_score_diffs[example.qas_id] = (null.start_logit + null.end_logit -
                                          best_span["start_logit"] - best_span["end_logit"])
    if not version_2_with_negative:
      predictions[example.qas_id] = nbest[0]["text"]
    elif best_span is None or null_score_diffs[example.qas_id] > null_score_diff_threshold:
      predictions[example.qas_id] = ""
    else:
      predictions[example.qas_id] = best_span["text"]
  return predictions, all_nbest, null_score_diffs


def _span_text(example: SquadExample, features: SquadFeatures, candidate: _Candidate,
               do_lower_case: bool, tokenizer: tokenization.Tokenizer | None,
               sentencepiece: bool) -> str:
  """The context text of a candidate span: its words, trimmed to what its tokens cover."""
  tokens = features.tokens[candidate.feature_index][candidate.start_index:candidate.end_index + 1]
  token_to_orig = features.token_to_orig_map[candidate.feature_index]
  first_word = token_to_orig[candidate.start_index]
  last_word = token_to_orig[candidate.end_index]
  orig_text = " ".join(example.doc_tokens[first_word:last_word + 1])
  return get_final_text(_detokenize(tokens, sentencepiece), orig_text, do_lower_case, tokenizer)
