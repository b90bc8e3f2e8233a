"""Recipes of the host pipeline: whole-word and static masks, truncation for length phases,
the original's pre-masked records, file-level host sharding, and cheap resume."""

import numpy as np
import pytest
import tensorflow as tf

from bert_jax import errors
from bert_jax.pretraining.data import masking
from bert_jax.pretraining.data import pipeline
from bert_jax.tokenizers import special_tokens
from test_pipeline import (MAX_PREDICTIONS, NUM_RECORDS, VOCAB_SIZE, _dataset,
                           _make_records, _record_numbers, _take, _unmasked_ids, _write,
                           masking_config)


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
  """The same 400 records over 8 files."""
  directory = tmp_path_factory.mktemp("eight")
  records = _make_records(NUM_RECORDS)
  for shard in range(8):
    _write(directory / f"train-{shard:05d}-of-00008.tfrecord", records[shard::8])
  return str(directory / "train-*.tfrecord"), records


def _original_words(ids, candidate, word_starts):
  """Candidate positions grouped into words as the original's cand_indexes: a piece that does
  not start a word joins the last word before it, across [SEP]."""
  words = []
  for position in np.flatnonzero(candidate):
    if words and not word_starts[ids[position]]:
      words[-1].append(int(position))
    else:
      words.append([int(position)])
  return words


def test_whole_word_masking_masks_whole_words_and_fills_the_quota(many_files):
  pattern, _ = many_files
  # Ids divisible by 3 continue a word ('##' pieces); the rest start one.
  word_starts = np.arange(VOCAB_SIZE) % 3 != 0
  masked_lm_prob = 0.3
  batch = _take(_dataset(pattern, is_training=True, masked_lm_prob=masked_lm_prob, batch_size=50,
                         masking_overrides=dict(whole_word_masking=True,
                                                word_starts=word_starts)), 8)
  originals = _unmasked_ids(batch)
  words_checked = short_of_quota = joined_across_sep = 0
  for row in range(len(originals)):
    real = batch["masked_lm_weights"][row] > 0
    masked = set(batch["masked_lm_positions"][row][real].tolist())
    ids = originals[row]
    candidate = ((batch["input_mask"][row] == 1) & (ids != special_tokens.CLS_ID)
                 & (ids != special_tokens.SEP_ID))
    quota = min(MAX_PREDICTIONS, max(1, round(batch["input_mask"][row].sum() * masked_lm_prob)),
                int(candidate.sum()))
    words = _original_words(ids, candidate, word_starts)
    for word in words:
      chosen = [p in masked for p in word]
      assert all(chosen) or not any(chosen), (row, word, masked)
      words_checked += any(chosen) and len(word) > 1
      joined_across_sep += any(chosen) and any(ids[p] == special_tokens.SEP_ID
                                               for p in range(word[0], word[-1]))
      # The original's scan skips a word that does not fit and goes on: at the end, no word
      # left unmasked would still have fitted in the quota.
      assert any(chosen) or len(word) > quota - len(masked), (row, word, quota, masked)
    assert len(masked) <= quota
    short_of_quota += len(masked) < quota
  assert words_checked > 20  # Multi-piece words really were masked whole.
  assert joined_across_sep > 0  # A '##' piece after [SEP] was masked with A's last word.
  assert short_of_quota < len(originals) // 20


def test_static_masks_repeat_every_epoch_dynamic_ones_do_not(many_files):
  pattern, _ = many_files
  def masks_by_record(static):
    stream = _take(_dataset(pattern, is_training=True, batch_size=100, static_masks=static), 8)
    numbers = _record_numbers(stream)
    by_record = {}
    for row, number in enumerate(numbers):
      by_record.setdefault(number, []).append(tuple(stream["masked_lm_positions"][row]))
    return by_record
  static = masks_by_record(True)
  assert all(len(m) == 2 and m[0] == m[1] for m in static.values())
  dynamic = masks_by_record(False)
  assert np.mean([m[0] == m[1] for m in dynamic.values()]) < 0.5


def test_truncation_to_a_shorter_phase_keeps_a_valid_pair(many_files):
  pattern, records = many_files
  short = 20
  batch = _take(_dataset(pattern, max_seq_length=short))
  assert batch["input_ids"].shape == (NUM_RECORDS, short)
  ids = _unmasked_ids(batch)
  for row in range(NUM_RECORDS):
    mask, segments = batch["input_mask"][row], batch["segment_ids"][row]
    n = int(mask.sum())
    assert list(mask) == [1] * n + [0] * (short - n)
    seps = np.nonzero(ids[row][:n] == special_tokens.SEP_ID)[0]
    assert ids[row][0] == special_tokens.CLS_ID and len(seps) == 2 and seps[1] == n - 1
    assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # Neither segment is emptied.
    assert (segments[:seps[0] + 1] == 0).all() and (segments[seps[0] + 1:n] == 1).all()
    assert not ids[row][n:].any() and not segments[n:].any()
  # Pairs that fit are untouched; every longer one is cut to exactly `short` tokens.
  original_lengths = np.sort([int(r["input_mask"].sum()) for r in records])
  expected = np.sort(np.minimum(original_lengths, short))
  np.testing.assert_array_equal(np.sort(batch["input_mask"].sum(1)), expected)
  fitting = [r for r in records if r["input_mask"].sum() <= short]
  kept = {tuple(r["input_ids"][:short]) for r in fitting}
  assert kept <= {tuple(row) for row in ids}


def test_truncation_takes_tokens_from_both_ends():
  tokens_a = list(range(10, 30))  # 20 tokens
  tokens_b = list(range(50, 54))  # 4 tokens
  ids = [special_tokens.CLS_ID] + tokens_a + [special_tokens.SEP_ID] + tokens_b + [special_tokens.SEP_ID]
  features = {
      "input_ids": tf.constant(ids, tf.int32), "input_mask": tf.ones(len(ids), tf.int32),
      "segment_ids": tf.constant([0] * 22 + [1] * 5, tf.int32)}
  fronts = []
  for key in range(50):
    out = pipeline.truncate_instance(features, 13, tf.constant([0, key], tf.int64),
                                     special_tokens.CLS_ID, special_tokens.SEP_ID)
    out_ids = out["input_ids"].numpy().tolist()
    # 10 = 13 - 3 tokens left: the original takes the 16 extra from A (the longer) only.
    a = out_ids[1:7]
    assert out_ids[7] == special_tokens.SEP_ID and out_ids[8:12] == tokens_b
    assert out_ids[12] == special_tokens.SEP_ID
    assert a == list(range(a[0], a[0] + 6))  # A contiguous run of A.
    fronts.append(a[0] - 10)
  assert min(fronts) < 5 < max(fronts)  # Cut from the front as well as the back.


def test_premasked_records_of_the_original_are_used_as_they_are(tmp_path):
  records = _make_records(32)
  for number, record in enumerate(records):
    record["masked_lm_positions"] = np.array([1, 2, 0, 0, 0, 0])
    record["masked_lm_ids"] = np.array([number + 5, 7, 0, 0, 0, 0])
  path = tmp_path / "original.tfrecord"
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                 for name, values in record.items()}
      feature["masked_lm_weights"] = tf.train.Feature(
          float_list=tf.train.FloatList(value=[1.0, 1.0, 0, 0, 0, 0]))
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                   .SerializeToString())
  batch = _take(_dataset(str(path)))
  np.testing.assert_array_equal(batch["input_ids"], np.stack([r["input_ids"] for r in records]))
  np.testing.assert_array_equal(batch["masked_lm_ids"][:, 0], np.arange(32) + 5)
  assert batch["masked_lm_weights"].dtype == np.float32
  np.testing.assert_array_equal(batch["masked_lm_weights"][:, :2], 1.0)
  with pytest.raises(errors.UserError, match="max_predictions_per_seq=9"):
    _dataset(str(path), masking_overrides=dict(max_predictions_per_seq=9))
  with pytest.raises(errors.UserError, match="cannot be truncated"):
    _dataset(str(path), max_seq_length=20)


def test_hosts_read_only_their_own_files(many_files):
  pattern, _ = many_files
  files = pipeline.list_files(pattern)
  shares = []
  for process_index in range(2):
    dataset = _dataset(pattern, is_training=True, batch_size=4, process_index=process_index,
                       process_count=2)
    shares.append(set(_record_numbers(_take(dataset, 50))))
  # Files 0, 2, 4, 6 hold records with number % 8 in {0, 2, 4, 6}: host 0's alone.
  assert {n % 8 for n in shares[0]} == {0, 2, 4, 6}
  assert {n % 8 for n in shares[1]} == {1, 3, 5, 7}
  counts = {f: NUM_RECORDS // 8 for f in files}
  assert pipeline.host_records_per_epoch(files, counts, 0, 2) == 200
  assert pipeline.host_records_per_epoch(files, counts, 1, 16) == 25  # Record-level split.


@pytest.mark.parametrize("start_index", [7, 400, 1234])
def test_resume_with_known_epoch_size_skips_whole_epochs(many_files, start_index):
  pattern, _ = many_files
  full = _take(_dataset(pattern, is_training=True, batch_size=20), 70)  # 1400 examples
  resumed = _take(_dataset(pattern, is_training=True, batch_size=20, start_index=start_index,
                           records_per_epoch=NUM_RECORDS), 3)
  for name in full:
    np.testing.assert_array_equal(resumed[name], full[name][start_index:start_index + 60])


def test_masking_config_needs_word_starts_for_whole_words():
  with pytest.raises(ValueError, match="word_starts"):
    masking_config(whole_word_masking=True)
  assert isinstance(masking_config(), masking.MaskingConfig)
