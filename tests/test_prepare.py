"""Tests of bert_jax/data/prepare.py: instance layout, NSP pairing, held-out eval, files."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bert_jax import errors
from bert_jax import tokenization
from bert_jax.data import prepare
from conftest import synthetic_documents

FEATURES = ("input_ids", "input_mask", "segment_ids", "next_sentence_labels")
# Token ids of the fake tokenizer: document * _STRIDE + position in the document + _OFFSET.
_STRIDE = 10_000
_OFFSET = 100


class PositionTokenizer:
  """Maps word "tD_P" to an id that says which document (D) and position (P) it came from."""
  vocab_size = 1_000_000
  model_file = "position-tokenizer"

  def encode_batch(self, texts):
    return [[_OFFSET + int(word[1:].split("_")[0]) * _STRIDE + int(word.split("_")[1])
             for word in text.split()] for text in texts]


def position_documents(num_documents: int, seed: int = 0) -> list[list[str]]:
  """Documents whose every word encodes (document, position); sentence lengths 1 to 30."""
  rng = random.Random(seed)
  documents = []
  for d in range(num_documents):
    document, position = [], 0
    for _ in range(rng.randint(1, 10)):
      length = rng.randint(1, 30)
      document.append(" ".join(f"t{d}_{position + k}" for k in range(length)))
      position += length
    documents.append(document)
  return documents


def read_records(path: str) -> list[dict[str, np.ndarray]]:
  records = []
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    example = tf.train.Example.FromString(record)
    records.append({name: np.array(feature.int64_list.value)
                    for name, feature in example.features.feature.items()})
  return records


def _prepare(output_dir, documents=None, tokenizer=None, **overrides):
  kwargs = dict(max_seq_length=64, short_seq_prob=0.1, dupe_factor=2, num_eval_documents=5,
                seed=1, num_shards=3)
  kwargs.update(overrides)
  return prepare.prepare_pretraining_data(
      position_documents(40) if documents is None else documents,
      tokenizer or PositionTokenizer(), str(output_dir), **kwargs)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp("prepared")
  metadata = _prepare(output_dir)
  train = [r for path in metadata["train_files"] for r in read_records(path)]
  eval_ = [r for path in metadata["eval_files"] for r in read_records(path)]
  return output_dir, metadata, train, eval_


def _split(record):
  """-> (tokens A, tokens B) of one record, checking the [CLS] A [SEP] B [SEP] layout."""
  length = int(record["input_mask"].sum())
  tokens = record["input_ids"][:length]
  assert tokens[0] == tokenization.CLS_ID
  separators = np.flatnonzero(tokens == tokenization.SEP_ID)
  assert len(separators) == 2 and separators[1] == length - 1
  return tokens[1:separators[0]], tokens[separators[0] + 1:length - 1]


def test_extra_metadata_replaces_entries(tmp_path):
  metadata = _prepare(tmp_path, extra_metadata={"config": {"source": "text"}, "vocab_file": "v"})
  with open(tmp_path / "metadata.json") as f:
    on_disk = json.load(f)
  assert on_disk["config"] == metadata["config"] == {"source": "text"}
  assert on_disk["vocab_file"] == "v" and on_disk["num_train_documents"] == 35


def test_files_and_metadata(prepared):
  output_dir, metadata, train, eval_ = prepared
  assert sorted(os.listdir(output_dir)) == [
      "eval.tfrecord", "metadata.json", "train-00000-of-00003.tfrecord",
      "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
  assert metadata["train_files"] == [
      os.path.join(output_dir, f"train-0000{i}-of-00003.tfrecord") for i in range(3)]
  assert metadata["eval_files"] == [os.path.join(output_dir, "eval.tfrecord")]
  with open(output_dir / "metadata.json") as f:
    on_disk = json.load(f)
  assert on_disk["train_files"] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
  assert prepare.with_full_paths(on_disk, str(output_dir)) == metadata
  assert metadata["num_train_instances"] == len(train) > 100
  assert metadata["num_eval_instances"] == len(eval_) > 0
  assert (metadata["num_train_documents"], metadata["num_eval_documents"]) == (35, 5)
  assert metadata["max_seq_length"] == 64
  assert metadata["vocab_size"] == PositionTokenizer.vocab_size
  assert metadata["config"]["dupe_factor"] == 2 and metadata["config"]["seed"] == 1


def test_features_shapes_and_layout(prepared):
  _, _, train, eval_ = prepared
  for record in train + eval_:
    assert sorted(record) == sorted(FEATURES)
    assert [len(record[name]) for name in FEATURES] == [64, 64, 64, 1]
    length = int(record["input_mask"].sum())
    assert 5 <= length <= 64
    assert list(record["input_mask"]) == [1] * length + [0] * (64 - length)
    assert not record["input_ids"][length:].any()  # [PAD] = 0
    tokens_a, tokens_b = _split(record)
    assert len(tokens_a) >= 1 and len(tokens_b) >= 1
    assert list(record["segment_ids"]) == ([0] * (len(tokens_a) + 2) +
                                           [1] * (len(tokens_b) + 1) + [0] * (64 - length))


def test_sentence_pairs_follow_nsp_rules(prepared):
  _, _, train, eval_ = prepared
  for records in (train, eval_):
    labels = [int(record["next_sentence_labels"][0]) for record in records]
    assert set(labels) == {0, 1}
    for record, label in zip(records, labels):
      tokens_a, tokens_b = _split(record)
      (documents_a, positions_a), (documents_b, positions_b) = (
          divmod(tokens - _OFFSET, _STRIDE) for tokens in (tokens_a, tokens_b))
      # Each side is one contiguous run of one document (truncation only trims its ends).
      for documents, positions in ((documents_a, positions_a), (documents_b, positions_b)):
        assert len(set(documents)) == 1
        assert list(positions) == list(range(positions[0], positions[0] + len(positions)))
      if label == 0:  # B really follows A.
        assert documents_b[0] == documents_a[0] and positions_b[0] > positions_a[-1]
      else:
        assert documents_b[0] != documents_a[0]
  fraction_random = np.mean([record["next_sentence_labels"][0] for record in train])
  assert 0.3 < fraction_random < 0.75


def test_eval_documents_are_held_out(prepared):
  _, _, train, eval_ = prepared
  def documents_of(records):
    return {int(d) for record in records
            for d in (record["input_ids"][1:record["input_mask"].sum() - 1] - _OFFSET) // _STRIDE
            if d >= 0}
  eval_documents = documents_of(eval_)
  assert len(eval_documents) == 5
  assert not documents_of(train) & eval_documents
  assert len(documents_of(train)) == 35


def test_instances_fill_target_length(prepared):
  _, _, train, _ = prepared
  lengths = np.array([record["input_mask"].sum() for record in train])
  # Most instances are full (target max_seq_length - 3), a few are short (short_seq_prob).
  assert np.mean(lengths >= 60) > 0.5
  assert np.mean(lengths < 40) > 0.02


def test_truncate_seq_pair_trims_the_longer_side():
  rng = random.Random(0)
  tokens_a, tokens_b = list(range(10)), list(range(100, 140))
  prepare.truncate_seq_pair(tokens_a, tokens_b, 30, rng)
  assert len(tokens_a) + len(tokens_b) == 30 and tokens_a == list(range(10))
  # B lost tokens at both ends, over enough draws.
  assert tokens_b[0] > 100 and tokens_b[-1] < 139


def test_single_sentence_document_gives_random_next_only():
  documents = [[[10, 11, 12]]] + [[[20 + d] * 5, [30 + d] * 5] for d in range(5)]
  rng = random.Random(0)
  instances = [instance for _ in range(20) for instance in
               prepare.create_instances_from_document(documents, 0, 32, 0.0, rng)]
  assert instances and all(instance.is_random_next for instance in instances)
  assert all(instance.tokens[1:4] == [10, 11, 12] for instance in instances)


def test_empty_sentences_and_documents_are_skipped(tmp_path):
  documents = position_documents(10)
  documents[3] = []
  documents[4] = ["", ""]
  documents[5] = ["", documents[5][0], ""]
  metadata = _prepare(tmp_path, documents, num_eval_documents=2)
  assert metadata["num_train_documents"] + metadata["num_eval_documents"] == 8


def test_deterministic_in_seed(tmp_path, prepared):
  _, metadata, _, _ = prepared
  again = _prepare(tmp_path / "again")
  other_seed = _prepare(tmp_path / "other", seed=2)
  def contents(files):
    return [open(path, "rb").read() for path in files]
  assert contents(again["train_files"]) == contents(metadata["train_files"])
  assert contents(again["eval_files"]) == contents(metadata["eval_files"])
  assert contents(other_seed["train_files"]) != contents(metadata["train_files"])


def test_metadata_is_written_last(tmp_path, monkeypatch):
  renamed = []
  rename = tf.io.gfile.rename
  def recording_rename(source, destination, overwrite=False):
    renamed.append(os.path.basename(destination))
    rename(source, destination, overwrite)
  monkeypatch.setattr(tf.io.gfile, "rename", recording_rename)
  _prepare(tmp_path)
  assert renamed[-1] == "metadata.json" and renamed.count("metadata.json") == 1
  assert set(renamed[:-1]) == {"eval.tfrecord"} | {
      f"train-0000{i}-of-00003.tfrecord" for i in range(3)}


def test_interrupted_prepare_leaves_no_metadata(tmp_path, monkeypatch):
  _prepare(tmp_path)
  assert os.path.exists(tmp_path / "metadata.json")
  def crash(path, records):
    if path.endswith("eval.tfrecord"):
      raise KeyboardInterrupt
    return write(path, records)
  write = prepare._write_atomically
  monkeypatch.setattr(prepare, "_write_atomically", crash)
  with pytest.raises(KeyboardInterrupt):
    _prepare(tmp_path)
  # The old metadata went first: the directory no longer claims to be complete.
  assert not os.path.exists(tmp_path / "metadata.json")


def test_bad_arguments_are_clear_errors(tmp_path):
  with pytest.raises(errors.UserError, match="num_eval_documents"):
    _prepare(tmp_path, position_documents(3), num_eval_documents=3)
  with pytest.raises(ValueError, match="max_seq_length"):
    _prepare(tmp_path, max_seq_length=4)


def test_with_sentencepiece(tmp_path, tokenizer):
  metadata = _prepare(tmp_path, synthetic_documents(30), tokenizer, num_eval_documents=3,
                      num_shards=1)
  assert metadata["vocab_size"] == tokenizer.vocab_size
  records = read_records(metadata["train_files"][0])
  assert len(records) == metadata["num_train_instances"] > 0
  ids = np.concatenate([record["input_ids"] for record in records])
  assert ids.max() < tokenizer.vocab_size
  assert not np.isin(ids, [tokenization.UNK_ID, tokenization.MASK_ID]).any()  # Unmasked.


def test_cli(tmp_path, sentencepiece_model):
  for i, document in enumerate(synthetic_documents(12)):
    with open(tmp_path / f"part-{i % 2}.txt", "a") as f:
      f.write("\n".join(document) + "\n\n")
  output_dir = tmp_path / "out"
  result = subprocess.run(
      [sys.executable, "-m", "bert_jax.data.prepare", f"--input_file={tmp_path}/part-*.txt",
       f"--vocab_file={sentencepiece_model}", f"--output_dir={output_dir}",
       "--max_seq_length=32", "--dupe_factor=2", "--num_eval_documents=2", "--num_shards=2",
       "--random_seed=7"],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr[-2000:]
  with open(output_dir / "metadata.json") as f:
    metadata = json.load(f)
  assert metadata["num_train_documents"] == 10 and metadata["num_eval_documents"] == 2
  assert metadata["config"]["seed"] == 7
  assert len(read_records(str(output_dir / "train-00001-of-00002.tfrecord"))) > 0

  result = subprocess.run(
      [sys.executable, "-m", "bert_jax.data.prepare", f"--input_file={tmp_path}/nothing*.txt",
       f"--vocab_file={sentencepiece_model}", f"--output_dir={output_dir}"],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].endswith(
      f"error: data.input_files: no file matches '{tmp_path}/nothing*.txt'")
