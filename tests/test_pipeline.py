"""Tests of bert_jax/pretraining/data/pipeline.py: MLM masking rules, determinism, resume, host sharding."""

import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from bert_jax import errors
from bert_jax.pretraining.data import damaged_records
from bert_jax.pretraining.data import inputs
from bert_jax.pretraining.data import masking
from bert_jax.pretraining.data import pipeline
from bert_jax.tokenizers import special_tokens

MAX_SEQ_LENGTH = 48
MAX_PREDICTIONS = 6
VOCAB_SIZE = 1000
NUM_RECORDS = 400


def _make_records(num_records: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  """[CLS] A [SEP] B [SEP] records of 5 to 48 tokens; A's first token is the record's number."""
  rng = np.random.default_rng(seed)
  records = []
  for number in range(num_records):
    length = int(rng.integers(5, MAX_SEQ_LENGTH + 1))
    length_a = int(rng.integers(1, length - 3))
    length_b = length - 3 - length_a
    tokens_a = [special_tokens.NUM_SPECIAL_TOKENS + number] + list(
        rng.integers(special_tokens.NUM_SPECIAL_TOKENS, VOCAB_SIZE, length_a - 1))
    tokens_b = list(rng.integers(special_tokens.NUM_SPECIAL_TOKENS, VOCAB_SIZE, length_b))
    tokens = ([special_tokens.CLS_ID] + tokens_a + [special_tokens.SEP_ID] + tokens_b +
              [special_tokens.SEP_ID])
    padding = [0] * (MAX_SEQ_LENGTH - length)
    records.append({
        "input_ids": np.array(tokens + padding),
        "input_mask": np.array([1] * length + padding),
        "segment_ids": np.array([0] * (length_a + 2) + [1] * (length_b + 1) + padding),
        "next_sentence_labels": np.array([number % 2]),
    })
  return records


def _write(path, records) -> None:
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          name: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
          for name, values in record.items()})).SerializeToString())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """(file pattern, records in file order): the records split over two files."""
  directory = tmp_path_factory.mktemp("records")
  records = _make_records(NUM_RECORDS)
  _write(directory / "train-00000-of-00002.tfrecord", records[:250])
  _write(directory / "train-00001-of-00002.tfrecord", records[250:])
  return str(directory / "train-*.tfrecord"), records


def masking_config(**overrides) -> masking.MaskingConfig:
  kwargs = dict(vocab_size=VOCAB_SIZE, cls_id=special_tokens.CLS_ID, sep_id=special_tokens.SEP_ID,
                mask_id=special_tokens.MASK_ID, special_ids=tuple(range(5)),
                max_predictions_per_seq=MAX_PREDICTIONS, masked_lm_prob=0.15)
  kwargs.update(overrides)
  return masking.MaskingConfig(**kwargs)


def _dataset(pattern, masked_lm_prob=0.15, masking_overrides=None,
             **overrides) -> tf.data.Dataset:
  kwargs = dict(batch_size=8, max_seq_length=MAX_SEQ_LENGTH, seed=0, is_training=False,
                shuffle_buffer_size=64,
                masking_config=masking_config(masked_lm_prob=masked_lm_prob,
                                              **(masking_overrides or {})))
  kwargs.update(overrides)
  return pipeline.pretraining_dataset(pattern, **kwargs)


def _take(dataset: tf.data.Dataset, num_batches: int | None = None) -> dict[str, np.ndarray]:
  """The first num_batches batches (all if None), concatenated into one batch."""
  if num_batches is not None:
    dataset = dataset.take(num_batches)
  batches = list(dataset.as_numpy_iterator())
  return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


def _unmasked_ids(batch) -> np.ndarray:
  """input_ids with the original token put back at every masked position."""
  ids = batch["input_ids"].copy()
  for row in range(len(ids)):
    real = batch["masked_lm_weights"][row] > 0
    ids[row, batch["masked_lm_positions"][row][real]] = batch["masked_lm_ids"][row][real]
  return ids


def _record_numbers(batch) -> list[int]:
  return list(_unmasked_ids(batch)[:, 1] - special_tokens.NUM_SPECIAL_TOKENS)


def test_shapes_and_dtypes(data):
  pattern, _ = data
  spec = _dataset(pattern, is_training=True).element_spec
  assert {name: (tuple(s.shape), s.dtype) for name, s in spec.items()} == {
      "input_ids": ((8, MAX_SEQ_LENGTH), tf.int32),
      "input_mask": ((8, MAX_SEQ_LENGTH), tf.int32),
      "segment_ids": ((8, MAX_SEQ_LENGTH), tf.int32),
      "masked_lm_positions": ((8, MAX_PREDICTIONS), tf.int32),
      "masked_lm_ids": ((8, MAX_PREDICTIONS), tf.int32),
      "masked_lm_weights": ((8, MAX_PREDICTIONS), tf.float32),
      "next_sentence_labels": ((8,), tf.int32),
  }


@pytest.mark.parametrize("masked_lm_prob", [0.15, 0.9])
def test_masking_rules(data, masked_lm_prob):
  pattern, records = data
  batch = _take(_dataset(pattern, masked_lm_prob=masked_lm_prob))
  assert len(batch["input_ids"]) == NUM_RECORDS  # Eval: file order, one pass, 400 = 50 * 8.
  for row, record in enumerate(records):
    for name in ("input_mask", "segment_ids"):
      np.testing.assert_array_equal(batch[name][row], record[name])
    assert batch["next_sentence_labels"][row] == record["next_sentence_labels"][0]
    original = record["input_ids"]
    weights = batch["masked_lm_weights"][row]
    num_masked = int(weights.sum())
    positions = batch["masked_lm_positions"][row][:num_masked]
    # Real predictions first, then padding: positions and ids 0, weights 0.
    assert list(weights) == [1.0] * num_masked + [0.0] * (MAX_PREDICTIONS - num_masked)
    assert not batch["masked_lm_positions"][row][num_masked:].any()
    assert not batch["masked_lm_ids"][row][num_masked:].any()
    num_tokens = int(record["input_mask"].sum())
    num_candidates = num_tokens - 3  # All but [CLS] and the two [SEP]s.
    assert num_masked == min(MAX_PREDICTIONS, max(1, round(num_tokens * masked_lm_prob)),
                             num_candidates)
    assert list(positions) == sorted(set(positions))  # Ascending, distinct.
    # Never [CLS], [SEP] or padding.
    assert np.all(positions < num_tokens)
    assert not np.isin(original[positions], [special_tokens.CLS_ID, special_tokens.SEP_ID,
                                             special_tokens.PAD_ID]).any()
    np.testing.assert_array_equal(batch["masked_lm_ids"][row][:num_masked], original[positions])
    # Outside the masked positions nothing changed.
    unchanged = np.ones(MAX_SEQ_LENGTH, bool)
    unchanged[positions] = False
    np.testing.assert_array_equal(batch["input_ids"][row][unchanged], original[unchanged])


def test_80_10_10(data):
  pattern, records = data
  # 30 passes over 400 records, each with new masks: ~14k masked positions.
  batch = _take(_dataset(pattern, is_training=True, masked_lm_prob=0.9, batch_size=100), 120)
  originals = _unmasked_ids(batch)
  real = batch["masked_lm_weights"] > 0
  rows = np.nonzero(real)[0]
  new_ids = batch["input_ids"][rows, batch["masked_lm_positions"][real]]
  original_ids = originals[rows, batch["masked_lm_positions"][real]]
  assert len(new_ids) > 10_000
  is_mask = new_ids == special_tokens.MASK_ID
  is_kept = new_ids == original_ids
  is_random = ~is_mask & ~is_kept
  assert abs(is_mask.mean() - 0.8) < 0.02
  assert abs(is_kept.mean() - 0.1) < 0.015
  assert abs(is_random.mean() - 0.1) < 0.015
  random_ids = new_ids[is_random]
  assert random_ids.min() >= special_tokens.NUM_SPECIAL_TOKENS and random_ids.max() < VOCAB_SIZE
  # Spread over the whole range of ordinary ids.
  assert random_ids.min() < 50 and random_ids.max() > VOCAB_SIZE - 50


def test_eval_is_identical_every_time(data):
  pattern, _ = data
  first, second = _take(_dataset(pattern)), _take(_dataset(pattern))
  for name in first:
    np.testing.assert_array_equal(first[name], second[name])


def test_masks_are_a_function_of_seed_and_index(data):
  _, records = data
  features = {name: tf.constant(value, tf.int32) for name, value in records[7].items()}
  features["next_sentence_labels"] = features["next_sentence_labels"][0]
  def mask(seed, index):
    masked = masking.mask_example(features, tf.constant([seed, index], tf.int64),
                                  masking_config())
    return {name: value.numpy() for name, value in masked.items()}
  reference = mask(0, 123)
  for name, value in mask(0, 123).items():
    np.testing.assert_array_equal(value, reference[name])
  assert not np.array_equal(mask(1, 123)["masked_lm_positions"],
                            reference["masked_lm_positions"])
  # Every index draws its own masks.
  position_sets = {tuple(mask(0, index)["masked_lm_positions"]) for index in range(40)}
  assert len(position_sets) > 35


def test_training_stream_is_deterministic_and_seeded(data):
  pattern, _ = data
  first = _take(_dataset(pattern, is_training=True), 10)
  second = _take(_dataset(pattern, is_training=True), 10)
  for name in first:
    np.testing.assert_array_equal(first[name], second[name])
  other_seed = _take(_dataset(pattern, is_training=True, seed=1), 10)
  assert _record_numbers(other_seed) != _record_numbers(first)


def test_epochs_are_reshuffled_and_remasked(data):
  pattern, _ = data
  stream = _take(_dataset(pattern, is_training=True, batch_size=100), 8)  # 2 epochs
  numbers = _record_numbers(stream)
  first_epoch, second_epoch = numbers[:NUM_RECORDS], numbers[NUM_RECORDS:]
  assert sorted(first_epoch) == sorted(second_epoch) == list(range(NUM_RECORDS))
  assert first_epoch != second_epoch
  assert first_epoch != list(range(NUM_RECORDS))  # Shuffled at all.
  # The same record gets other masks in the second epoch.
  row_in_second = {number: NUM_RECORDS + i for i, number in enumerate(second_epoch)}
  same = [np.array_equal(stream["masked_lm_positions"][row],
                         stream["masked_lm_positions"][row_in_second[number]])
          for row, number in enumerate(first_epoch)]
  assert np.mean(same) < 0.5


@pytest.mark.parametrize("start_index", [16, 5, 430])
def test_start_index_resumes_the_stream(data, start_index):
  pattern, _ = data
  full = _take(_dataset(pattern, is_training=True), 60)  # 480 examples, past one epoch
  resumed = _take(_dataset(pattern, is_training=True, start_index=start_index), 5)
  for name in full:
    np.testing.assert_array_equal(resumed[name], full[name][start_index:start_index + 40])


@pytest.mark.parametrize("is_training", [False, True])
def test_processes_read_disjoint_shares(data, is_training):
  pattern, _ = data
  shares = []
  for process_index in range(3):
    dataset = _dataset(pattern, is_training=is_training, batch_size=4,
                       process_index=process_index, process_count=3)
    shares.append(_record_numbers(_take(dataset, 33)))  # One epoch: 133 or 134 records.
  assert all(len(set(share)) == len(share) == 132 for share in shares)
  assert not set(shares[0]) & set(shares[1])
  assert not set(shares[0]) & set(shares[2])
  assert not set(shares[1]) & set(shares[2])
  if not is_training:
    assert shares[1][:3] == [1, 4, 7]


def test_list_of_patterns_and_missing_files(data, tmp_path):
  pattern, records = data
  first_file = pattern.replace("*", "00000-of-00002")
  second_file = pattern.replace("*", "00001-of-00002")
  batch = _take(_dataset([second_file, first_file]))
  # Sorted within a pattern, but patterns in the order given.
  assert _record_numbers(batch)[:2] == [250, 251]
  with pytest.raises(errors.UserError, match="nothing-here"):
    _dataset(f"{first_file},{tmp_path}/nothing-here*")


def test_read_metadata(tmp_path):
  with pytest.raises(errors.UserError, match="metadata.json"):
    pipeline.read_metadata(str(tmp_path))
  with open(tmp_path / "metadata.json", "w") as f:
    json.dump({"train_files": ["train-00000-of-00001.tfrecord"],
               "eval_files": ["eval.tfrecord"], "vocab_size": 7}, f)
  metadata = pipeline.read_metadata(str(tmp_path))
  assert metadata["train_files"] == [str(tmp_path / "train-00000-of-00001.tfrecord")]
  assert metadata["vocab_size"] == 7


def test_eval_reads_every_record_and_pads_the_last_batch(tmp_path):
  """23 eval records in batches of 8: 3 batches, the last with 7 rows of padding that weigh
  nothing; an eval set smaller than one batch is evaluated too."""
  records = _make_records(23)
  _write(tmp_path / "eval.tfrecord", records)
  data = inputs.Inputs(train_files=[], eval_files=[str(tmp_path / "eval.tfrecord")],
                       vocab_size=VOCAB_SIZE, masking_config=masking_config(),
                       next_sentence_prediction=True, file_counts=None)
  config = ml_collections.ConfigDict({
      "seed": 0, "train": {"eval_batch_size": 8, "max_eval_steps": 0},
      "data": {"max_seq_length": MAX_SEQ_LENGTH, "max_predictions_per_seq": MAX_PREDICTIONS}})
  batches = inputs.eval_batches(config, data)
  assert len(batches) == 3 and all(len(b["input_ids"]) == 8 for b in batches)
  weights = np.concatenate([b["example_weights"] for b in batches])
  assert weights.tolist() == [1.0] * 23 + [0.0]
  padding = {name: values[-1] for name, values in batches[-1].items()}
  assert padding["input_ids"][:3].tolist() == [special_tokens.CLS_ID, special_tokens.SEP_ID, 0]
  assert padding["input_mask"].sum() == 2 and padding["masked_lm_weights"].sum() == 0
  # Every record's predictions are there, each once.
  unmasked = np.concatenate([_unmasked_ids(b)[:, 1] for b in batches])[:23]
  assert sorted(unmasked - special_tokens.NUM_SPECIAL_TOKENS) == list(range(23))
  config.train.eval_batch_size = 64
  (single,) = inputs.eval_batches(config, data)
  assert single["example_weights"].sum() == 23



def _record_offsets(path: str) -> list[int]:
  """Where each record of an intact TFRecord file starts."""
  with open(path, "rb") as f:
    data = f.read()
  offsets, offset = [], 0
  while offset < len(data):
    offsets.append(offset)
    offset += 16 + int.from_bytes(data[offset:offset + 8], "little")
  return offsets


def test_damaged_records_are_gone_past_as_if_never_written(tmp_path):
  records = _make_records(120, seed=1)
  damaged_path, clean_path = str(tmp_path / "damaged.tfrecord"), str(tmp_path / "clean.tfrecord")
  _write(damaged_path, records)
  _write(clean_path, [r for number, r in enumerate(records) if number not in (10, 50)])
  offsets = _record_offsets(damaged_path)
  with open(damaged_path, "r+b") as f:
    f.seek(offsets[10] + 12 + 5)  # A byte of record 10's data: its length still reads.
    f.write(b"\xff")
    f.seek(offsets[50] + 2)  # Record 50's length: the scan finds record 51 by itself.
    f.write(b"\xff")

  # Off (the default): one line naming the file and the first damaged record's offset.
  with pytest.raises(errors.UserError, match=(
      f"data.input_files: a damaged record in {damaged_path} at byte {offsets[10]} \\(2 damaged "
      f"records in 1 files\\): set --config.data.skip_damaged_records=true")):
    list(pipeline.numpy_iterator(_dataset(damaged_path), [damaged_path], "data.input_files"))

  found = damaged_records.scan_files([damaged_path, clean_path])
  assert list(found) == [damaged_path]
  assert found[damaged_path].damaged == ((offsets[10], offsets[11]), (offsets[50], offsets[51]))
  assert found[damaged_path].good_records == 118
  # On: the stream is the one of a file without those two records, epoch after epoch (30 batches
  # of 8 are two epochs of 118), and a run resumed mid-way (records_per_epoch: the good ones)
  # goes on with exactly the batches the whole run saw.
  gone_past = _take(_dataset(damaged_path, is_training=True, damaged=found), 30)
  never_written = _take(_dataset(clean_path, is_training=True), 30)
  resumed = _take(_dataset(damaged_path, is_training=True, damaged=found, start_index=128,
                           records_per_epoch=118), 10)
  for name in gone_past:
    np.testing.assert_array_equal(gone_past[name], never_written[name])
    np.testing.assert_array_equal(resumed[name], gone_past[name][128:208])
