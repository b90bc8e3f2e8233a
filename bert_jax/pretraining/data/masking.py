"""Masked-LM masking of one example, in TF ops on the host, as a pure function of its seed.

The original BERT's rules: about masked_lm_prob of the real tokens ([CLS] and [SEP] counted),
at least 1 and at most max_predictions_per_seq positions; never [CLS], [SEP] or padding; of the
chosen positions 80% become [MASK], 10% a random ordinary token, 10% keep their token. With
whole-word masking, whole words are chosen (all their pieces), each piece still getting its own
80/10/10 draw, as the original's `--do_whole_word_mask`.
"""

import dataclasses

import numpy as np
import tensorflow as tf

# Fractions of the chosen positions replaced by [MASK] and by a random token; the rest keep
# their token (the original's 80/10/10).
MASK_TOKEN_PROB = 0.8
RANDOM_TOKEN_PROB = 0.1


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """What masking needs to know about the vocabulary and the recipe.

  Attributes:
    vocab_size: Size of the tokenizer's vocabulary.
    cls_id, sep_id, mask_id: The special ids ([PAD] is recognised by input_mask == 0).
    special_ids: All special ids; random replacements are drawn from the other ids.
    max_predictions_per_seq: P, the most positions masked per example.
    masked_lm_prob: Fraction of the real tokens to mask (0.15; MosaicBERT uses 0.30).
    whole_word_masking: Choose whole words instead of single pieces.
    word_starts: [vocab_size] bool, True where a token begins a word (needed for whole words).
  """
  vocab_size: int
  cls_id: int
  sep_id: int
  mask_id: int
  special_ids: tuple[int, ...]
  max_predictions_per_seq: int
  masked_lm_prob: float = 0.15
  whole_word_masking: bool = False
  word_starts: np.ndarray | None = None

  def __post_init__(self):
    if self.whole_word_masking and self.word_starts is None:
      raise ValueError("whole_word_masking needs word_starts from the tokenizer")
    if len(set(self.special_ids)) >= self.vocab_size:
      raise ValueError(f"vocab_size {self.vocab_size} leaves no ordinary token")


def _choose_words(is_candidate: tf.Tensor, is_word_start: tf.Tensor, scores: tf.Tensor,
                  num_to_predict: tf.Tensor) -> tf.Tensor:
  """Whole-word choice, as the original: words in random order, each taken if it still fits.

  Words are grouped as the original's cand_indexes: a piece that does not start a word joins
  the last word before it, skipping [CLS]/[SEP] (a '##' piece right after [SEP] joins segment
  A's last word); only the first candidate always starts one. Going through the words in
  their random order, a word is taken when its pieces fit in what is left of num_to_predict
  and skipped otherwise (the scan goes on to shorter words), so the quota is met whenever
  the remaining words allow.

  Returns:
    [L] float scores: high for tokens of chosen words, -1 elsewhere, for top_k.
  """
  length = tf.shape(is_candidate)[0]
  is_first_candidate = is_candidate & (tf.cumsum(tf.cast(is_candidate, tf.int32)) == 1)
  starts = is_candidate & (is_word_start | is_first_candidate)  # [L]
  word_index = tf.cumsum(tf.cast(starts, tf.int32)) - 1  # [L], the word of each token
  word_index = tf.where(is_candidate, word_index, length)  # Non-candidates: a dummy word.
  word_length = tf.math.unsorted_segment_sum(
      tf.cast(is_candidate, tf.int32), word_index, length + 1)  # [L + 1]
  is_word = (word_length > 0) & (word_length <= num_to_predict)  # [L + 1] (scores has L+1)
  order = tf.argsort(tf.where(is_word, scores, -1.0), direction="DESCENDING")  # [L + 1]
  # Words that can never fit count as one longer than the whole budget.
  ordered_length = tf.where(tf.gather(is_word, order), tf.gather(word_length, order),
                            num_to_predict + 1)  # [L + 1]
  # The greedy scan takes every word up to the first that does not fit (lengths are positive,
  # so that is a prefix); after it, less than that word's length is left, so the loop below
  # runs at most that many times.
  taken = tf.cumsum(ordered_length) <= num_to_predict  # [L + 1]
  remaining = num_to_predict - tf.reduce_sum(tf.where(taken, ordered_length, 0))
  position = tf.range(length + 1)

  def take_next(taken, remaining, start):
    fits = (position >= start) & (ordered_length <= remaining)  # [L + 1]
    found = tf.reduce_any(fits)
    k = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)  # The first that fits.
    taken = taken | (found & tf.equal(position, k))
    remaining = tf.where(found, remaining - ordered_length[k], 0)
    return taken, remaining, tf.where(found, k + 1, length + 1)

  taken, _, _ = tf.while_loop(
      lambda taken, remaining, start: (remaining > 0) & (start <= length), take_next,
      (taken, remaining, tf.reduce_sum(tf.cast(taken, tf.int32))))
  chosen_word = tf.scatter_nd(order[:, None], taken, [length + 1])  # [L + 1] bool
  chosen = tf.gather(chosen_word, word_index)  # [L]
  word_score = tf.gather(scores, word_index)  # [L]
  return tf.where(chosen, 1.0 + word_score, -1.0)


def mask_example(features: dict[str, tf.Tensor], seed: tf.Tensor,
                 config: MaskingConfig) -> dict[str, tf.Tensor]:
  """Chooses and masks MLM positions in one example; a pure function of `seed`.

  Args:
    features: input_ids, input_mask, segment_ids [L] int32, next_sentence_labels [] int32.
    seed: [2] int64 stateless seed; the caller derives it from (run seed, example index) for
      dynamic masks, or from (run seed, record) for static ones.
    config: The vocabulary's special ids and the masking recipe.

  Returns:
    The features with input_ids masked, plus masked_lm_positions and masked_lm_ids [P] int32
    (ascending positions, then padding 0) and masked_lm_weights [P] float32 (1 real, 0 pad).
  """
  input_ids = features["input_ids"]  # [L]
  input_mask = features["input_mask"]  # [L]
  length = input_ids.shape[0]
  max_predictions = config.max_predictions_per_seq
  # top_k cannot pick more positions than there are; the rest is padding either way.
  num_slots = min(max_predictions, length)

  is_candidate = ((input_mask == 1) & (input_ids != config.cls_id) &
                  (input_ids != config.sep_id))  # [L]
  num_tokens = tf.reduce_sum(input_mask)
  # float64 and round-half-to-even, as Python's round() in the original.
  num_to_predict = tf.cast(
      tf.round(tf.cast(num_tokens, tf.float64) * config.masked_lm_prob), tf.int32)
  num_to_predict = tf.minimum(
      tf.minimum(max_predictions, tf.maximum(1, num_to_predict)),
      tf.reduce_sum(tf.cast(is_candidate, tf.int32)))

  # One draw for everything: choice scores [L + 1], then per slot the action and the random id.
  # philox, not 'auto_select', so masks do not depend on the device that runs tf.data.
  uniform = tf.random.stateless_uniform(
      [length + 1 + 2 * num_slots], seed=seed, dtype=tf.float64, alg="philox")
  scores = uniform[:length + 1]
  if config.whole_word_masking:
    is_word_start = tf.gather(tf.constant(config.word_starts, tf.bool), input_ids)  # [L]
    token_scores = _choose_words(is_candidate, is_word_start, scores, num_to_predict)
    num_to_predict = tf.reduce_sum(tf.cast(token_scores >= 0, tf.int32))
  else:
    token_scores = tf.where(is_candidate, scores[:length], -1.0)  # [L]; non-candidates lose
  _, chosen = tf.math.top_k(token_scores, k=num_slots)  # [num_slots]
  # Slots past num_to_predict point at `length`, one past the end: a padding sentinel that
  # sorts last and is dropped below.
  slot = tf.range(num_slots)
  positions = tf.sort(tf.where(slot < num_to_predict, chosen, length))  # [num_slots]
  is_real = positions < length

  ids_with_sentinel = tf.concat([input_ids, [0]], axis=0)  # [L + 1]
  original_ids = tf.gather(ids_with_sentinel, positions)  # [num_slots]
  action = uniform[length + 1:length + 1 + num_slots]
  ordinary = np.setdiff1d(np.arange(config.vocab_size), np.asarray(config.special_ids))
  draw = tf.cast(uniform[length + 1 + num_slots:] * len(ordinary), tf.int32)
  random_ids = tf.gather(tf.constant(ordinary, tf.int32), tf.minimum(draw, len(ordinary) - 1))
  new_ids = tf.where(
      action < MASK_TOKEN_PROB, config.mask_id,
      tf.where(action < MASK_TOKEN_PROB + RANDOM_TOKEN_PROB, random_ids, original_ids))
  # Padding slots all write to the sentinel, which is cut off.
  masked_input_ids = tf.tensor_scatter_nd_update(
      ids_with_sentinel, positions[:, None], new_ids)[:length]  # [L]

  padding = [[0, max_predictions - num_slots]]
  features = dict(features)
  features["input_ids"] = masked_input_ids
  features["masked_lm_positions"] = tf.pad(tf.where(is_real, positions, 0), padding)
  features["masked_lm_ids"] = tf.pad(tf.where(is_real, original_ids, 0), padding)
  features["masked_lm_weights"] = tf.pad(tf.cast(is_real, tf.float32), padding)
  return features
