"""The pre-training input on each host: its share of the records -> shuffle -> MLM masking -> batch.

Records are the unmasked instances bert_jax/data/prepare.py writes. Masking happens here, on
the host, and is a pure function of (seed, index of the example in this process's stream): the
stream repeats forever and every pass over the data gets new masks, yet a run resumed at
example k (`start_index=k`) sees exactly the masks and batches it would have seen.

Masking follows the original BERT: up to max_predictions_per_seq positions, about
masked_lm_prob of the real tokens, never [CLS], [SEP] or padding; of the chosen positions 80%
become [MASK], 10% a random ordinary token, 10% stay as they are.
"""

from collections.abc import Sequence
import json
import os
from typing import Any

import tensorflow as tf

from bert_jax import errors
from bert_jax import tokenization
from bert_jax.data import prepare

# The fraction of chosen positions replaced by [MASK], and by a random token; the rest keep
# their token (the original's 80/10/10).
MASK_TOKEN_PROB = 0.8
RANDOM_TOKEN_PROB = 0.1


def read_metadata(data_dir: str) -> dict[str, Any]:
  """Reads the metadata.json of a prepared data directory.

  Args:
    data_dir: A directory prepare_pretraining_data wrote (local or gs://).

  Returns:
    The metadata, with 'train_files' and 'eval_files' as full paths.

  Raises:
    errors.UserError: If metadata.json is missing: prepare never ran there, or was interrupted.
  """
  path = os.path.join(data_dir, prepare.METADATA_FILENAME)
  if not tf.io.gfile.exists(path):
    raise errors.UserError(
        f"{path} not found: {data_dir!r} is not a complete prepared data directory (prepare "
        f"did not run there, or was interrupted; run it again)")
  with tf.io.gfile.GFile(path, "r") as f:
    return prepare.with_full_paths(json.load(f), data_dir)


def _list_files(file_patterns: Sequence[str] | str) -> list[str]:
  if isinstance(file_patterns, str):
    file_patterns = file_patterns.split(",")
  files = []
  for pattern in file_patterns:
    matches = sorted(tf.io.gfile.glob(pattern.strip()))
    if not matches:
      raise errors.UserError(f"no TFRecord file matches {pattern!r}")
    files.extend(matches)
  return files


def _parse(record: tf.Tensor, max_seq_length: int) -> dict[str, tf.Tensor]:
  """One serialized instance -> its features as int32 (TF stores them as int64)."""
  sequence_feature = tf.io.FixedLenFeature([max_seq_length], tf.int64)
  features = tf.io.parse_single_example(record, {
      "input_ids": sequence_feature,
      "input_mask": sequence_feature,
      "segment_ids": sequence_feature,
      "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
  })
  features = {name: tf.cast(value, tf.int32) for name, value in features.items()}
  features["next_sentence_labels"] = features["next_sentence_labels"][0]  # []
  return features


def mask_example(features: dict[str, tf.Tensor], index: tf.Tensor, *, seed: int,
                 max_predictions_per_seq: int, masked_lm_prob: float,
                 vocab_size: int) -> dict[str, tf.Tensor]:
  """Chooses and masks MLM positions in one example; a pure function of (seed, index).

  Args:
    features: One parsed example: input_ids, input_mask, segment_ids [L] int32,
      next_sentence_labels [] int32.
    index: Scalar int64, the example's index in this process's stream; with seed, it alone
      decides the masks.
    seed: The run's seed.
    max_predictions_per_seq: P, the most positions masked.
    masked_lm_prob: Fraction of the real tokens ([CLS] and [SEP]s counted, as the original)
      to mask.
    vocab_size: Random replacements are drawn from the ordinary ids [5, vocab_size).

  Returns:
    The features with input_ids masked, plus masked_lm_positions and masked_lm_ids [P] int32
    (ascending positions, then padding 0) and masked_lm_weights [P] float32 (1.0 real, 0.0
    padding).
  """
  input_ids = features["input_ids"]  # [L]
  input_mask = features["input_mask"]  # [L]
  length = input_ids.shape[0]
  # top_k cannot pick more positions than there are; the rest is padding either way.
  num_slots = min(max_predictions_per_seq, length)

  is_candidate = ((input_mask == 1) & (input_ids != tokenization.CLS_ID) &
                  (input_ids != tokenization.SEP_ID))  # [L]
  num_tokens = tf.reduce_sum(input_mask)
  # float64 and round-half-to-even, as Python's round() in the original.
  num_to_predict = tf.cast(
      tf.round(tf.cast(num_tokens, tf.float64) * masked_lm_prob), tf.int32)
  num_to_predict = tf.minimum(
      tf.minimum(max_predictions_per_seq, tf.maximum(1, num_to_predict)),
      tf.reduce_sum(tf.cast(is_candidate, tf.int32)))

  # One draw for everything: choice scores [L], then per slot the action and the random id.
  # philox, not 'auto_select', so masks do not depend on the device that runs tf.data.
  uniform = tf.random.stateless_uniform(
      [length + 2 * num_slots], seed=tf.stack([tf.constant(seed, tf.int64), index]),
      dtype=tf.float64, alg="philox")
  scores = tf.where(is_candidate, uniform[:length], -1.0)  # [L]; non-candidates never win
  _, chosen = tf.math.top_k(scores, k=num_slots)  # [num_slots], a uniform random subset
  # Slots past num_to_predict point at `length`, one past the end: a padding sentinel that
  # sorts last and is dropped below.
  slot = tf.range(num_slots)
  positions = tf.sort(tf.where(slot < num_to_predict, chosen, length))  # [num_slots]
  is_real = positions < length

  ids_with_sentinel = tf.concat([input_ids, [0]], axis=0)  # [L + 1]
  original_ids = tf.gather(ids_with_sentinel, positions)  # [num_slots]
  action = uniform[length:length + num_slots]
  num_ordinary = vocab_size - tokenization.NUM_SPECIAL_TOKENS
  random_ids = tokenization.NUM_SPECIAL_TOKENS + tf.minimum(
      tf.cast(uniform[length + num_slots:] * num_ordinary, tf.int32), num_ordinary - 1)
  new_ids = tf.where(
      action < MASK_TOKEN_PROB, tokenization.MASK_ID,
      tf.where(action < MASK_TOKEN_PROB + RANDOM_TOKEN_PROB, random_ids, original_ids))
  # Padding slots all write to the sentinel, which is cut off.
  masked_input_ids = tf.tensor_scatter_nd_update(
      ids_with_sentinel, positions[:, None], new_ids)[:length]  # [L]

  padding = [[0, max_predictions_per_seq - num_slots]]
  features = dict(features)
  features["input_ids"] = masked_input_ids
  features["masked_lm_positions"] = tf.pad(tf.where(is_real, positions, 0), padding)
  features["masked_lm_ids"] = tf.pad(tf.where(is_real, original_ids, 0), padding)
  features["masked_lm_weights"] = tf.pad(tf.cast(is_real, tf.float32), padding)
  return features


def pretraining_dataset(file_patterns: Sequence[str] | str,
                        *,
                        batch_size: int,
                        max_seq_length: int,
                        max_predictions_per_seq: int,
                        masked_lm_prob: float,
                        vocab_size: int,
                        seed: int,
                        is_training: bool,
                        start_index: int = 0,
                        process_index: int = 0,
                        process_count: int = 1,
                        shuffle_buffer_size: int = 10_000) -> tf.data.Dataset:
  """This process's batches of masked pre-training examples.

  Training: this process's share of the records (every process_count-th, from process_index),
  shuffled (seeded, new order each pass), repeated forever, masked, batched. Eval: one pass in
  file order with fixed masks, so every evaluation sees the same examples and masks; a last
  partial batch is dropped.

  Every process reads all files and keeps its share of the records: the shares are exactly
  equal (to one record) whatever the number of files, at the cost of each host reading bytes
  it then skips.

  Args:
    file_patterns: Globs of TFRecord files (a list, or one comma-separated string); matched
      files are read in sorted order.
    batch_size: Examples per batch on this process (the global batch / process_count).
    max_seq_length: L, the length the records were prepared with.
    max_predictions_per_seq: P, the most masked positions per example.
    masked_lm_prob: Fraction of the real tokens to mask.
    vocab_size: Size of the tokenizer's vocabulary (random replacements stay below it).
    seed: Seed of the shuffle and of the masks.
    is_training: Training stream (shuffled, endless) or eval stream (one fixed pass).
    start_index: Training only: examples of this process's stream already consumed; the
      dataset starts at that example (a resumed run passes step * batch_size).
    process_index: This process, jax.process_index().
    process_count: Number of processes, jax.process_count().
    shuffle_buffer_size: Records in the shuffle buffer.

  Returns:
    A dataset of dicts: input_ids, input_mask, segment_ids [B, L] int32; masked_lm_positions,
    masked_lm_ids [B, P] int32; masked_lm_weights [B, P] float32; next_sentence_labels [B] int32.

  Raises:
    errors.UserError: If a pattern matches no file.
    ValueError: If an argument is out of range.
  """
  if vocab_size <= tokenization.NUM_SPECIAL_TOKENS:
    raise ValueError(f"vocab_size must exceed the {tokenization.NUM_SPECIAL_TOKENS} special "
                     f"tokens, not {vocab_size}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if start_index < 0 or batch_size < 1 or max_predictions_per_seq < 1:
    raise ValueError(f"need start_index >= 0, batch_size >= 1, max_predictions_per_seq >= 1; "
                     f"got {start_index}, {batch_size}, {max_predictions_per_seq}")
  files = _list_files(file_patterns)

  dataset = tf.data.TFRecordDataset(files)
  dataset = dataset.shard(process_count, process_index)
  if is_training:
    dataset = dataset.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat()
  # (index, record): the index, not any stateful RNG, seeds the example's masks.
  dataset = dataset.enumerate()
  if is_training and start_index:
    # Skipping raw records costs a read, not a parse or a mask.
    dataset = dataset.skip(start_index)

  def parse_and_mask(index: tf.Tensor, record: tf.Tensor) -> dict[str, tf.Tensor]:
    return mask_example(_parse(record, max_seq_length), index, seed=seed,
                        max_predictions_per_seq=max_predictions_per_seq,
                        masked_lm_prob=masked_lm_prob, vocab_size=vocab_size)

  dataset = dataset.map(parse_and_mask, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # Static shapes: jit compiles train_step once.
  dataset = dataset.batch(batch_size, drop_remainder=True)
  return dataset.prefetch(tf.data.AUTOTUNE)
