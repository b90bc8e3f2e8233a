"""Bad input files: each is skipped with a count in the summary, or is a one-line error naming it.

Never a traceback, and nothing half-written that looks complete.
"""

import collections
import os
import random
import subprocess
import sys

import pytest

from bert_jax import errors
from bert_jax.pretraining.data import corpus
from bert_jax.pretraining.data import masking
from bert_jax.pretraining.data import pipeline
from bert_jax.pretraining.data import prepare
from bert_jax.pretraining.data import prepare_summary
from bert_jax.pretraining.data import workdir_data
from conftest import synthetic_documents

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_GOOD_TEXT = "".join("\n".join(document) + "\n\n" for document in synthetic_documents(12))
_WORDS = "the model reads a token of every sentence in each document".split()


def _huge_line(num_bytes: int = 5_000_000) -> bytes:
  """One line of num_bytes, no newline: words with a full stop now and then."""
  rng = random.Random(0)
  words = [rng.choice(_WORDS) + ("." if rng.random() < 0.03 else "")
           for _ in range(num_bytes // 5)]
  return " ".join(words).encode()[:num_bytes]


# name -> (contents, what the summary counts for it)
_BAD_FILES = {
    "empty": (b"", {"empty_files": 1}),
    "blank": (b"\n\n   \n\t\n\r\n", {"empty_files": 1}),
    "latin1": ("Caf\u00e9 na\u00efve sentence here.\nSecond sentence of it.\n".encode("latin-1"),
               {"invalid_utf8_lines": 1, "unstructured_files": 1}),
    "binary": (random.Random(1).randbytes(20_000) + b"\0",
               {"binary_files": 1}),
    "huge-line": (_huge_line(), {"long_lines": 1, "unstructured_files": 1}),
    "one-sentence-documents": (b"Only one sentence here.\n\nAnother lonely sentence.\n\n",
                               {"single_sentence_documents": 2}),
}


def _write(path, data: bytes) -> str:
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def _prepare(output_dir, patterns: str, sentencepiece_model: str, **overrides):
  counters = collections.Counter()
  documents = corpus.text_file_documents(patterns, counters)
  kwargs = dict(max_seq_length=64, short_seq_prob=0.1, dupe_factor=1, num_eval_documents=2,
                seed=0, num_workers=1, progress_interval_s=None, input_counters=counters)
  kwargs.update(overrides)
  return prepare.prepare_pretraining_data(
      documents, prepare.TokenizerLoader(sentencepiece_model), str(output_dir), **kwargs)


def _counts(summary) -> dict[str, int]:
  return {**summary["input"], "invalid_utf8_lines": summary["invalid_utf8_lines"],
          "single_sentence_documents": summary["single_sentence_documents"]}


@pytest.mark.parametrize("name", list(_BAD_FILES))
def test_a_bad_file_beside_good_text_is_skipped_and_counted(tmp_path, sentencepiece_model,
                                                            name, capsys):
  good = _write(tmp_path / "good.txt", _GOOD_TEXT.encode())
  baseline = _counts(_prepare(tmp_path / "baseline", good, sentencepiece_model)["summary"])
  contents, expected = _BAD_FILES[name]
  bad = _write(tmp_path / f"{name}.txt", contents)
  summary = _prepare(tmp_path / "out", f"{good},{bad}", sentencepiece_model)["summary"]
  counts = _counts(summary)
  assert counts["input_files"] == 2
  for key, value in counts.items():
    assert value == baseline[key] + expected.get(key, 0) + (key == "input_files"), key
  text = prepare_summary.format_summary(summary)
  if name == "binary":
    assert "2 files, 1 binary (skipped)" in text
    assert f"Skipped {bad}: a binary file" in capsys.readouterr().err
  if name in ("empty", "blank"):
    assert "2 files, 1 empty (no text)" in text
  if name == "huge-line":
    assert "1 lines over 64 KiB (cut into sentences)" in text
    assert summary["train_instances"] > 1000  # Its text is used, not truncated away.


def test_a_huge_line_is_read_in_pieces_of_sentences(tmp_path):
  path = _write(tmp_path / "huge.txt", _huge_line())
  documents = list(corpus.text_file_documents(path))
  # No blank line: documents of UNSTRUCTURED_DOCUMENT_LINES sentences, in order.
  assert {len(d) for d in documents[:-1]} == {corpus.UNSTRUCTURED_DOCUMENT_LINES}
  sentences = [sentence for document in documents for sentence in document]
  assert max(map(len, sentences)) <= corpus.MAX_CUT_SENTENCE_CHARS
  # Cut only at spaces: every word is whole; only fragments too short to be a sentence
  # (corpus.MIN_SENTENCE_CHARS, "a token.") are dropped.
  words = " ".join(sentences).replace(".", "").split()
  assert set(words[:-1]) == set(_WORDS)  # The file's last word may be cut: [:5_000_000].
  assert len(words) > 0.99 * len(_huge_line().split())


def test_a_file_of_everything_mixed_with_good_text(tmp_path, sentencepiece_model):
  lines = [_GOOD_TEXT.encode(), b"\n\n\n   \n",
           b"Bad \xff\xfe bytes in this sentence.\nA second sentence follows it.\n\n",
           b"A lonely one-sentence document.\n\n",
           _huge_line(200_000) + b"\n", b"After the huge line, same document.\n\n",
           # Past the first 8000 bytes, which decide whether a file is binary.
           b"A line with a NUL \0 byte in it.\nIts neighbour is fine though.\n\n",
           _GOOD_TEXT.encode()]
  path = _write(tmp_path / "mixed.txt", b"".join(lines))
  summary = _prepare(tmp_path / "out", path, sentencepiece_model)["summary"]
  assert summary["input"] == {"input_files": 1, "empty_files": 0, "binary_files": 0,
                              "binary_lines": 1, "long_lines": 1,
                              "unstructured_files": 0}
  assert summary["invalid_utf8_lines"] == 1
  assert summary["single_sentence_documents"] >= 2  # The lonely one, the NUL one's neighbour.
  assert summary["train_documents"] + summary["eval_documents"] == 24 + 4


def test_missing_files_are_clear_errors(tmp_path, sentencepiece_model):
  good = _write(tmp_path / "good.txt", _GOOD_TEXT.encode())
  with pytest.raises(errors.UserError, match=f"no file matches '{tmp_path}/missing.txt'"):
    corpus.text_file_documents(f"{good},{tmp_path}/missing.txt")
  with pytest.raises(errors.UserError, match=r"no file matches '.*/nothing-\*.txt'"):
    corpus.text_file_documents(f"{good},{tmp_path}/nothing-*.txt")
  # A file that goes away between the glob and its reading.
  gone = _write(tmp_path / "gone.txt", _GOOD_TEXT.encode())
  documents = corpus.text_file_documents(f"{good},{gone}")
  os.remove(gone)
  with pytest.raises(errors.UserError, match=f"cannot read {gone}"):
    list(documents)


def test_input_of_no_text_at_all_is_a_clear_error_and_writes_no_metadata(
    tmp_path, sentencepiece_model):
  for name in ("empty", "blank", "binary"):
    _write(tmp_path / f"{name}.txt", _BAD_FILES[name][0])
  with pytest.raises(errors.UserError) as raised:
    _prepare(tmp_path / "out", f"{tmp_path}/*.txt", sentencepiece_model)
  assert str(raised.value) == ("no training document: the input has no document with text "
                               "(3 files, 2 empty (no text), 1 binary (skipped))")
  assert not os.path.exists(tmp_path / "out" / prepare.METADATA_FILENAME)


def test_prepare_cli_summary_of_bad_files(tmp_path, sentencepiece_model):
  _write(tmp_path / "a-good.txt", _GOOD_TEXT.encode())
  for name in ("empty", "blank", "latin1", "binary", "huge-line"):
    _write(tmp_path / f"b-{name}.txt", _BAD_FILES[name][0])
  result = subprocess.run(
      [sys.executable, "-m", "bert_jax.pretraining.prepare", f"--input_file={tmp_path}/*.txt",
       f"--vocab_file={sentencepiece_model}", f"--output_dir={tmp_path / 'out'}",
       "--max_seq_length=64", "--dupe_factor=1", "--num_eval_documents=2", "--num_workers=1"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert "invalid UTF-8 lines: 1 (kept, as U+FFFD)" in result.stdout
  assert ("input: 6 files, 2 empty (no text), 1 binary (skipped), 1 lines over 64 KiB (cut "
          "into sentences)") in result.stdout
  assert f"Skipped {tmp_path}/b-binary.txt: a binary file" in result.stderr
  assert os.path.exists(tmp_path / "out" / prepare.METADATA_FILENAME)


# ---- TFRecords given as data.input_files (source='tfrecord') ----

@pytest.fixture(scope="module")
def records(tmp_path_factory, sentencepiece_model, tokenizer):
  output_dir = tmp_path_factory.mktemp("records")
  path = _write(output_dir / "good.txt", _GOOD_TEXT.encode())
  metadata = _prepare(output_dir, path, sentencepiece_model)
  masking_config = masking.MaskingConfig(
      vocab_size=tokenizer.vocab_size, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
      mask_id=tokenizer.mask_id, special_ids=tuple(tokenizer.special_ids),
      max_predictions_per_seq=5, masked_lm_prob=0.15, whole_word_masking=False,
      word_starts=None)
  return metadata["train_files"][0], masking_config


def _dataset(files, masking_config):
  return pipeline.pretraining_dataset(files, batch_size=2, max_seq_length=64,
                                      masking_config=masking_config, seed=0, is_training=False)


def test_a_file_that_is_not_a_tfrecord_is_named_before_training(tmp_path, records):
  good, masking_config = records
  assert len(list(_dataset([good], masking_config).as_numpy_iterator())) > 3
  for name, contents in (("text", _GOOD_TEXT.encode()), ("binary", _BAD_FILES["binary"][0]),
                         ("short", b"\x01\x02")):
    bad = _write(tmp_path / f"{name}.tfrecord", contents)
    with pytest.raises(errors.UserError, match=f"{bad}: .*not a TFRecord file"):
      _dataset([good, bad], masking_config)


def test_a_damaged_record_mid_file_is_a_clear_error(tmp_path, records):
  good, masking_config = records
  with open(good, "rb") as f:
    data = bytearray(f.read())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(64)
  bad = _write(tmp_path / "damaged.tfrecord", bytes(data))
  dataset = _dataset([bad], masking_config)  # Its first record is fine.
  with pytest.raises(errors.UserError, match=f"data.input_files: a damaged record in {bad} at "
                                             r"byte \d+.*: set --config.data.skip_damaged"):
    list(pipeline.numpy_iterator(dataset, [bad], "data.input_files"))


# ---- WORKDIR/data: a run killed while preparing ----

def test_workdir_data_of_a_killed_prepare_is_rebuilt(tmp_path, monkeypatch, sentencepiece_model):
  from configs import tiny  # pylint: disable=g-import-not-at-top
  corpus_file = _write(tmp_path / "corpus.txt", _GOOD_TEXT.encode())
  config = tiny.get_config()
  config.data.update(source="text", input_files=corpus_file, vocab_file=sentencepiece_model,
                     max_seq_length=64, num_eval_documents=2, dupe_factor=1)
  workdir = str(tmp_path / "work")
  data_dir = os.path.join(workdir, "data")

  def killed(path, value):
    del path, value
    raise KeyboardInterrupt  # Killed right before metadata.json: every shard is written.
  write_json = prepare._write_json_atomically  # pylint: disable=protected-access
  monkeypatch.setattr(prepare, "_write_json_atomically", killed)
  with pytest.raises(KeyboardInterrupt):
    workdir_data.prepare(config, workdir)
  assert os.listdir(data_dir) and not os.path.exists(os.path.join(data_dir, "metadata.json"))
  _write(os.path.join(data_dir, "train-00000.tfrecord.tmp-123"), b"half a shard")
  with pytest.raises(errors.UserError, match="not a complete prepared data directory"):
    pipeline.read_metadata(data_dir)

  monkeypatch.setattr(prepare, "_write_json_atomically", write_json)
  metadata = workdir_data.prepare(config, workdir)
  assert os.path.exists(os.path.join(data_dir, "metadata.json"))
  assert not [name for name in os.listdir(data_dir) if ".tmp-" in name]
  assert metadata["num_train_documents"] == 10
