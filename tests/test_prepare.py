"""Tests of bert_jax/pretraining/data/prepare.py: instance layout, NSP pairing, shards, hosts, files."""

import collections
import functools
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bert_jax import errors
from bert_jax.pretraining.data import corpus
from bert_jax.pretraining.data import instances
from bert_jax.pretraining.data import prepare
from bert_jax.pretraining.data import prepare_summary
from bert_jax.pretraining.data import records
from bert_jax.pretraining.data import shards
from conftest import synthetic_documents

FEATURES = ("input_ids", "input_mask", "segment_ids", "next_sentence_labels")
# Token ids of the fake tokenizer: document * _STRIDE + position in the document + _OFFSET.
_STRIDE = 10_000
_OFFSET = 1000
# Google's WordPiece ids, not bert_jax's SentencePiece ones: prepare must ask the tokenizer.
_PAD, _UNK, _CLS, _SEP, _MASK = 0, 100, 101, 102, 103
_NUM_EVAL = 5
_PER_SHARD = 12
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PositionTokenizer:
  """Maps word "tD_P" to an id that says which document (D) and position (P) it came from."""
  vocab_size = 1_000_000
  model_file = "position-tokenizer"
  pad_id, unk_id, cls_id, sep_id, mask_id = _PAD, _UNK, _CLS, _SEP, _MASK

  def encode_batch(self, texts):
    return [[_OFFSET + int(word[1:].split("_")[0]) * _STRIDE + int(word.split("_")[1])
             for word in text.split()] for text in texts]


def position_documents(num_documents: int, seed: int = 0,
                       max_sentence_length: int = 30) -> list[list[str]]:
  """Documents whose every word encodes (document, position); sentence lengths 1 to 30."""
  rng = random.Random(seed)
  documents = []
  for d in range(num_documents):
    document, position = [], 0
    for _ in range(rng.randint(1, 10)):
      length = rng.randint(1, max_sentence_length)
      document.append(" ".join(f"t{d}_{position + k}" for k in range(length)))
      position += length
    documents.append(document)
  return documents


def read_records(path: str) -> list[dict[str, np.ndarray]]:
  result = []
  for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
    example = tf.train.Example.FromString(record)
    result.append({name: np.array(feature.int64_list.value)
                   for name, feature in example.features.feature.items()})
  return result


def _prepare(output_dir, documents=None, load_tokenizer=PositionTokenizer, **overrides):
  kwargs = dict(max_seq_length=64, short_seq_prob=0.1, dupe_factor=2,
                num_eval_documents=_NUM_EVAL, seed=1, documents_per_shard=_PER_SHARD,
                num_workers=1, progress_interval_s=None)
  kwargs.update(overrides)
  return prepare.prepare_pretraining_data(
      position_documents(40) if documents is None else documents, load_tokenizer,
      str(output_dir), **kwargs)


def _contents(files):
  return {os.path.basename(path): open(path, "rb").read() for path in files}


def _document_of(token):
  return (token - _OFFSET) // _STRIDE


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
  assert tokens[0] == _CLS
  separators = np.flatnonzero(tokens == _SEP)
  assert len(separators) == 2 and separators[1] == length - 1
  return tokens[1:separators[0]], tokens[separators[0] + 1:length - 1]


def test_files_and_metadata(prepared):
  output_dir, metadata, train, eval_ = prepared
  # 35 training documents in shards of 12: 12, 12, 11.
  names = [f"train-0000{i}.tfrecord" for i in range(3)]
  assert sorted(os.listdir(output_dir)) == ["eval.tfrecord", "metadata.json"] + names
  assert metadata["train_files"] == [os.path.join(output_dir, name) for name in names]
  assert metadata["eval_files"] == [os.path.join(output_dir, "eval.tfrecord")]
  with open(output_dir / "metadata.json") as f:
    on_disk = json.load(f)
  assert on_disk["train_files"] == names
  assert prepare.with_full_paths(on_disk, str(output_dir)) == metadata
  assert metadata["num_train_instances"] == len(train) > 100
  assert metadata["num_eval_instances"] == len(eval_) > 0
  assert (metadata["num_train_documents"], metadata["num_eval_documents"]) == (35, 5)
  assert metadata["max_seq_length"] == 64 and metadata["next_sentence_prediction"] is True
  assert metadata["vocab_size"] == PositionTokenizer.vocab_size
  assert metadata["special_ids"] == {"pad_id": 0, "unk_id": 100, "cls_id": 101, "sep_id": 102,
                                     "mask_id": 103}
  assert metadata["config"]["dupe_factor"] == 2 and metadata["config"]["seed"] == 1
  assert metadata["config"]["documents_per_shard"] == _PER_SHARD


def test_summary(prepared):
  _, metadata, train, eval_ = prepared
  summary = metadata["summary"]
  lengths = np.array([record["input_mask"].sum() for record in train])
  labels = np.array([record["next_sentence_labels"][0] for record in train])
  assert summary["input_documents"] == 40 and summary["skipped_documents"] == 0
  assert (summary["train_documents"], summary["eval_documents"]) == (35, 5)
  assert summary["train_instances"] == len(train) and summary["eval_instances"] == len(eval_)
  assert summary["train_tokens"] == lengths.sum()
  assert summary["eval_tokens"] == sum(record["input_mask"].sum() for record in eval_)
  assert summary["random_next_ratio"] == pytest.approx(labels.mean(), abs=1e-4)
  histogram = summary["train_length_histogram"]
  assert histogram["bucket_width"] == 16
  assert histogram["counts"] == np.bincount(lengths // 16, minlength=5).tolist()
  text = prepare_summary.format_summary(summary)
  assert f"{len(train)} train" in text and "48-63" in text


def test_features_shapes_and_layout(prepared):
  _, _, train, eval_ = prepared
  for record in train + eval_:
    assert sorted(record) == sorted(FEATURES)
    assert [len(record[name]) for name in FEATURES] == [64, 64, 64, 1]
    length = int(record["input_mask"].sum())
    assert 5 <= length <= 64
    assert list(record["input_mask"]) == [1] * length + [0] * (64 - length)
    assert (record["input_ids"][length:] == _PAD).all()
    tokens_a, tokens_b = _split(record)
    assert len(tokens_a) >= 1 and len(tokens_b) >= 1
    assert list(record["segment_ids"]) == ([0] * (len(tokens_a) + 2) +
                                           [1] * (len(tokens_b) + 1) + [0] * (64 - length))


def _shard_of(document):
  return -1 if document < _NUM_EVAL else (document - _NUM_EVAL) // _PER_SHARD


def test_sentence_pairs_follow_nsp_rules(prepared):
  _, metadata, _, eval_ = prepared
  for path in metadata["train_files"] + metadata["eval_files"]:
    shard = -1 if path.endswith("eval.tfrecord") else int(os.path.basename(path)[6:11])
    file_records = read_records(path)
    labels = [int(record["next_sentence_labels"][0]) for record in file_records]
    assert set(labels) == {0, 1}
    for record, label in zip(file_records, labels):
      tokens_a, tokens_b = _split(record)
      (documents_a, positions_a), (documents_b, positions_b) = (
          divmod(tokens - _OFFSET, _STRIDE) for tokens in (tokens_a, tokens_b))
      # Each side is one contiguous run of one document (truncation only trims its ends).
      for documents, positions in ((documents_a, positions_a), (documents_b, positions_b)):
        assert len(set(documents)) == 1
        assert list(positions) == list(range(positions[0], positions[0] + len(positions)))
      # Both from this file's input shard: random-next B too.
      assert _shard_of(documents_a[0]) == _shard_of(documents_b[0]) == shard
      if label == 0:  # B really follows A.
        assert documents_b[0] == documents_a[0] and positions_b[0] > positions_a[-1]
      else:
        assert documents_b[0] != documents_a[0]
  fraction_random = metadata["num_random_next_train_instances"] / metadata["num_train_instances"]
  assert 0.3 < fraction_random < 0.75


def test_eval_documents_are_the_first_of_the_stream(prepared):
  _, _, train, eval_ = prepared
  def documents_of(records_):
    return {int(_document_of(t)) for record in records_
            for t in record["input_ids"][:record["input_mask"].sum()] if t >= _OFFSET}
  assert documents_of(eval_) == set(range(_NUM_EVAL))
  assert documents_of(train) == set(range(_NUM_EVAL, 40))


def test_instances_fill_target_length(prepared):
  _, _, train, _ = prepared
  lengths = np.array([record["input_mask"].sum() for record in train])
  # Most instances are full (target max_seq_length - 3), a few are short (short_seq_prob).
  assert np.mean(lengths >= 60) > 0.5
  assert np.mean(lengths < 40) > 0.02


class _ScriptedRandom:
  """random.Random's random() replaced by a script: pins down every front/back choice."""

  def __init__(self, values):
    self._values = list(values)

  def random(self):
    return self._values.pop(0)


def test_truncate_seq_pair_cuts_the_longer_side_from_a_random_end():
  # 14 tokens into 10: A (the longer) loses 4, front/back as the draws say.
  tokens_a, tokens_b = list(range(10)), [100, 101, 102, 103]
  rng = _ScriptedRandom([0.1, 0.9, 0.2, 0.7])
  instances.truncate_seq_pair(tokens_a, tokens_b, 10, rng)
  assert tokens_a == [2, 3, 4, 5, 6, 7] and tokens_b == [100, 101, 102, 103]
  assert not rng._values  # One draw per removed token.
  # On a tie B loses first; then the longer one again.
  tokens_a, tokens_b = [1, 2, 3, 4, 5], [100, 101, 102, 103, 104]
  instances.truncate_seq_pair(tokens_a, tokens_b, 8, _ScriptedRandom([0.9, 0.1]))
  assert tokens_b == [100, 101, 102, 103] and tokens_a == [2, 3, 4, 5]


def test_single_sentence_document_gives_random_next_only():
  documents = [[[10, 11, 12]]] + [[[20 + d] * 5, [30 + d] * 5] for d in range(5)]
  rng = random.Random(0)
  made = [instance for _ in range(20) for instance in
          instances.create_instances_from_document(documents, 0, 32, 0.0, rng, _CLS, _SEP)]
  assert made and all(instance.is_random_next for instance in made)
  assert all(instance.tokens[:4] == [_CLS, 10, 11, 12] for instance in made)


def test_empty_sentences_and_documents_are_skipped(tmp_path):
  documents = position_documents(10)
  documents[3] = []
  documents[4] = ["", ""]
  documents[5] = ["", documents[5][0], ""]
  metadata = _prepare(tmp_path, documents, num_eval_documents=2)
  assert metadata["num_train_documents"] + metadata["num_eval_documents"] == 8
  assert metadata["summary"]["skipped_documents"] == 2
  assert metadata["summary"]["input_documents"] == 10


def test_deterministic_in_seed(tmp_path, prepared):
  _, metadata, _, _ = prepared
  again = _prepare(tmp_path / "again")
  other_seed = _prepare(tmp_path / "other", seed=2)
  assert _contents(again["train_files"]) == _contents(metadata["train_files"])
  assert _contents(again["eval_files"]) == _contents(metadata["eval_files"])
  assert _contents(other_seed["train_files"]) != _contents(metadata["train_files"])


def test_same_files_with_two_workers(tmp_path, prepared):
  _, metadata, _, _ = prepared
  parallel = _prepare(tmp_path, num_workers=2)
  assert _contents(parallel["train_files"]) == _contents(metadata["train_files"])
  assert _contents(parallel["eval_files"]) == _contents(metadata["eval_files"])
  assert parallel["summary"] == metadata["summary"]


def test_hosts_split_the_shards(tmp_path, prepared):
  output_dir, metadata, _, _ = prepared
  # Host 1 first: host 0 waits for host 1's part before it writes metadata.json.
  part = _prepare(tmp_path, num_hosts=2, host_index=1)
  assert part["train_files"] == ["train-00001.tfrecord"]
  assert not os.path.exists(tmp_path / "metadata.json")
  merged = _prepare(tmp_path, num_hosts=2, host_index=0, host_wait_timeout_s=5)
  assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(output_dir) +
                                                ["host-00001-of-00002.json"])
  assert _contents(merged["train_files"] + merged["eval_files"]) == _contents(
      metadata["train_files"] + metadata["eval_files"])
  def on_disk(directory):
    with open(directory / "metadata.json") as f:
      return json.load(f)
  assert on_disk(tmp_path) == on_disk(output_dir)
  with pytest.raises(errors.UserError, match="hosts \\[1, 2\\]"):
    _prepare(tmp_path / "alone", num_hosts=3, host_index=0, host_wait_timeout_s=0)


def test_streams_shard_by_shard(tmp_path, monkeypatch):
  read = []
  def documents():
    for index, document in enumerate(position_documents(60)):
      read.append(index)
      yield document
  seen = []
  process_shard = shards.process_shard
  def recording_process_shard(task, settings, tokenizer):
    seen.append((task.kind, task.index, len(task.documents), len(read)))
    return process_shard(task, settings, tokenizer)
  monkeypatch.setattr(shards, "process_shard", recording_process_shard)
  _prepare(tmp_path, documents())
  # Shards of 12 after the 5 eval documents; nothing read more than two shards ahead.
  assert [s[:3] for s in seen] == [("eval", 0, 5)] + [("train", k, 12) for k in range(4)] + [
      ("train", 4, 7)]
  for kind, index, _, num_read in seen:
    if kind == "train":
      assert num_read <= _NUM_EVAL + (index + 2) * _PER_SHARD


def test_full_sentences_without_nsp(tmp_path):
  documents = position_documents(40)
  metadata = _prepare(tmp_path, documents, next_sentence_prediction=False, dupe_factor=3)
  assert metadata["next_sentence_prediction"] is False
  train = [r for path in metadata["train_files"] for r in read_records(path)]
  sentence_starts = {(d, sum(len(s.split()) for s in document[:k]))
                     for d, document in enumerate(documents) for k in range(len(document))}
  num_seen = {}
  for record in train:
    length = int(record["input_mask"].sum())
    tokens = record["input_ids"][:length]
    assert tokens[0] == _CLS and tokens[-1] == _SEP
    assert not record["segment_ids"].any() and record["next_sentence_labels"][0] == 0
    # Runs between [SEP]s: each a contiguous piece of one document, from a sentence start,
    # and the runs of one instance are different documents (a [SEP] between documents).
    runs = np.split(tokens[1:-1], np.flatnonzero(tokens[1:-1] == _SEP))
    runs = [run[1:] if run[0] == _SEP else run for run in runs]
    documents_in_instance = []
    for run in runs:
      document, positions = divmod(run - _OFFSET, _STRIDE)
      assert len(set(document)) == 1 and (np.diff(positions) == 1).all()
      assert (document[0], positions[0]) in sentence_starts
      documents_in_instance.append(document[0])
      for token in run:
        num_seen[token] = num_seen.get(token, 0) + 1
    assert len(set(documents_in_instance)) == len(documents_in_instance)
  # Sentences are at most 30 tokens, the room is 62: nothing cut, every token in every pass.
  assert set(num_seen.values()) == {3}
  assert len(num_seen) == sum(len(s.split()) for d in documents[_NUM_EVAL:] for s in d)
  assert np.mean([r["input_mask"].sum() >= 64 - 30 for r in train]) > 0.9


def test_full_sentences_cut_a_long_sentence():
  documents = [[list(range(1000, 1100))], [[7, 8], [9]]]
  made = list(instances.pack_full_sentences(documents, 32, 1, random.Random(0), _CLS, _SEP))
  assert sorted(i.tokens for i in made) == sorted([[_CLS, *range(1000, 1030), _SEP],
                                                   [_CLS, 7, 8, 9, _SEP]])


def test_encoded_records_parse_like_tf_examples():
  instance = instances.Instance([_CLS, 5, 127, 128, 70_000, 2**40, _SEP, 9, _SEP], 7, True)
  serialized = records.encode_instance(instance, 12, pad_id=300)
  padded = instance.tokens + [300] * 3
  want = tf.train.Example(features=tf.train.Features(feature={
      name: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
      for name, values in (("input_ids", padded), ("input_mask", [1] * 9 + [0] * 3),
                           ("segment_ids", [0] * 7 + [1] * 2 + [0] * 3),
                           ("next_sentence_labels", [1]))}))
  assert tf.train.Example.FromString(serialized) == want
  parsed = tf.io.parse_single_example(serialized, {
      "input_ids": tf.io.FixedLenFeature([12], tf.int64),
      "segment_ids": tf.io.FixedLenFeature([12], tf.int64),
      "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64)})
  assert parsed["input_ids"].numpy().tolist() == padded
  assert parsed["segment_ids"].numpy().tolist() == [0] * 7 + [1] * 2 + [0] * 3
  assert parsed["next_sentence_labels"].numpy().tolist() == [1]


def test_extra_metadata_replaces_entries(tmp_path):
  metadata = _prepare(tmp_path, extra_metadata={"config": {"source": "text"}, "vocab_file": "v"})
  with open(tmp_path / "metadata.json") as f:
    on_disk = json.load(f)
  assert on_disk["config"] == metadata["config"] == {"source": "text"}
  assert on_disk["vocab_file"] == "v" and on_disk["num_train_documents"] == 35


def test_metadata_is_written_last(tmp_path, monkeypatch):
  renamed = []
  rename = tf.io.gfile.rename
  def recording_rename(source, destination, overwrite=False):
    renamed.append(os.path.basename(destination))
    rename(source, destination, overwrite)
  monkeypatch.setattr(tf.io.gfile, "rename", recording_rename)
  _prepare(tmp_path)
  assert renamed[-1] == "metadata.json" and renamed.count("metadata.json") == 1
  assert set(renamed[:-1]) == {"eval.tfrecord"} | {f"train-0000{i}.tfrecord" for i in range(3)}


def test_interrupted_prepare_leaves_no_metadata(tmp_path, monkeypatch):
  _prepare(tmp_path)
  assert os.path.exists(tmp_path / "metadata.json")
  def crash(path, serialized):
    if path.endswith("train-00001.tfrecord"):
      raise KeyboardInterrupt
    return write(path, serialized)
  write = shards.write_records
  monkeypatch.setattr(shards, "write_records", crash)
  with pytest.raises(KeyboardInterrupt):
    _prepare(tmp_path)
  # The old metadata went first: the directory no longer claims to be complete.
  assert not os.path.exists(tmp_path / "metadata.json")


def test_bad_arguments_are_clear_errors(tmp_path):
  with pytest.raises(errors.UserError, match="num_eval_documents"):
    _prepare(tmp_path, position_documents(3), num_eval_documents=3)
  with pytest.raises(ValueError, match="max_seq_length"):
    _prepare(tmp_path, max_seq_length=4)
  with pytest.raises(ValueError, match="host_index"):
    _prepare(tmp_path, num_hosts=2, host_index=2)


def _write(path, data: bytes):
  with open(path, "wb") as f:
    f.write(data)


def test_bad_input_files(tmp_path, tokenizer, sentencepiece_model):
  text = "".join("\n".join(document) + "\n\n" for document in synthetic_documents(12))
  _write(tmp_path / "a-good.txt", text.encode())
  _write(tmp_path / "b-empty.txt", b"")
  _write(tmp_path / "c-blank.txt", b"\n\n  \n\t\n")
  _write(tmp_path / "d-latin1.txt", "Caf\u00e9 na\u00efve sentence.\nSecond one.\n".encode(
      "latin-1") + b"\n\n\xff\xfe\n")
  counters = collections.Counter()
  documents = corpus.text_file_documents(f"{tmp_path}/*.txt", counters)
  metadata = _prepare(tmp_path / "out", documents, prepare.TokenizerLoader(sentencepiece_model),
                      num_eval_documents=2, input_counters=counters)
  summary = metadata["summary"]
  # 12 good documents, the Latin-1 one, and one of a lone undecodable line.
  assert summary["input_documents"] == 14 and summary["invalid_utf8_lines"] == 2
  assert summary["train_documents"] + summary["eval_documents"] + summary[
      "skipped_documents"] == 14
  with pytest.raises(errors.UserError, match="nothing"):
    corpus.text_file_documents(f"{tmp_path}/a-good.txt,{tmp_path}/nothing*.txt")
  with pytest.raises(errors.UserError, match="no training document"):
    _prepare(tmp_path / "out2", corpus.text_file_documents(f"{tmp_path}/[bc]-*.txt"),
             prepare.TokenizerLoader(sentencepiece_model), num_eval_documents=0)


def test_with_sentencepiece(tmp_path, tokenizer, sentencepiece_model):
  metadata = _prepare(tmp_path, synthetic_documents(30),
                      prepare.TokenizerLoader(sentencepiece_model), num_eval_documents=3,
                      documents_per_shard=100)
  assert metadata["vocab_size"] == tokenizer.vocab_size
  assert metadata["special_ids"] == {"pad_id": 0, "unk_id": 1, "cls_id": 2, "sep_id": 3,
                                     "mask_id": 4}
  assert metadata["config"]["vocab_file"] == sentencepiece_model
  records_ = read_records(metadata["train_files"][0])
  assert len(records_) == metadata["num_train_instances"] > 0
  ids = np.concatenate([record["input_ids"] for record in records_])
  assert ids.max() < tokenizer.vocab_size
  assert not np.isin(ids, [tokenizer.unk_id, tokenizer.mask_id]).any()  # Unmasked.


def test_cli(tmp_path, sentencepiece_model):
  for i, document in enumerate(synthetic_documents(12)):
    with open(tmp_path / f"part-{i % 2}.txt", "a") as f:
      f.write("\n".join(document) + "\n\n")
  _write(tmp_path / "part-2.txt", b"Bad \xff byte here.\n")
  output_dir = tmp_path / "out"
  run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=_REPO)
  result = run([sys.executable, "-m", "bert_jax.pretraining.prepare",
                f"--input_file={tmp_path}/part-*.txt", f"--vocab_file={sentencepiece_model}",
                f"--output_dir={output_dir}", "--max_seq_length=32", "--dupe_factor=2",
                "--documents_per_shard=4", "--num_workers=2", "--extra_seq_lengths=48",
                "--random_seed=7", "--next_sentence_prediction=false"])
  assert result.returncode == 0, result.stderr[-2000:]
  assert "invalid UTF-8 lines: 1" in result.stdout
  # 5% of 13 is 1, the floor of 10 is more than half of them: half is held out.
  assert "held out 6 of 13 documents for eval (46.2%)" in result.stdout
  assert "7 train, 6 eval (46.2% held out)" in result.stdout
  assert "prepare: files 3/3, 13 documents read" in result.stderr
  with open(output_dir / "metadata.json") as f:
    metadata = json.load(f)
  assert metadata["num_train_documents"] == 7 and metadata["num_eval_documents"] == 6
  assert metadata["config"]["seed"] == 7 and metadata["next_sentence_prediction"] is False
  assert metadata["train_files"] == [f"train-0000{i}.tfrecord" for i in range(2)]
  assert len(read_records(str(output_dir / "train-00001.tfrecord"))) > 0
  # The same documents' instances at 48 too, apart from the main ones' glob.
  assert [e["train_files"] for e in metadata["extra_lengths"]] == [
      [f"seq48-train-0000{i}.tfrecord" for i in range(2)]]
  assert len(read_records(str(output_dir / "seq48-train-00001.tfrecord"))[0]["input_ids"]) == 48
  assert "at length 48 (from the same documents)" in result.stdout

  # A bad hold-out or length is one line naming the flag, before anything is written.
  for flag, message in (
      ("--eval_fraction=0.9", "--eval_fraction=0.9 must be between 0 and 0.5 (the fraction of "
                              "the documents held out for eval)"),
      ("--extra_seq_lengths=512,x", "--extra_seq_lengths=512,x is not a list of lengths of at "
                                    "least 5, e.g. 512")):
    result = run([sys.executable, "-m", "bert_jax.pretraining.prepare",
                  f"--input_file={tmp_path}/part-*.txt", f"--vocab_file={sentencepiece_model}",
                  f"--output_dir={tmp_path}/never", flag])
    assert result.returncode == 1 and not os.path.exists(tmp_path / "never")
    assert (result.stderr.strip().splitlines()[-1] ==
            f"bert_jax.pretraining.prepare: error: {message}")

  result = run([sys.executable, "-m", "bert_jax.pretraining.prepare",
                f"--input_file={tmp_path}/nothing*.txt", f"--vocab_file={sentencepiece_model}",
                f"--output_dir={output_dir}"])
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].endswith(
      f"error: data.input_files: no file matches '{tmp_path}/nothing*.txt'")
