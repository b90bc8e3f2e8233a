"""Tests of bert_jax/pretraining/data/corpus.py: sentence splitting, the embedded corpus, text files, TFDS."""

import collections
import os

import ml_collections
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bert_jax import errors
from bert_jax.pretraining.data import corpus

# TFDS datasets here come from tfds.testing.mock_data (conftest.tfds_mock_hosts).
pytestmark = pytest.mark.usefixtures("tfds_mock_hosts")


def test_split_sentences_on_paragraphs_and_punctuation():
  text = """Return the value.  It is cached: call clear() to drop it!

  Is that so? Yes, e.g. this stays whole. Short.
  >>> value = compute(1,
  ...                 2)
  A wrapped
      line joins up."""
  assert corpus.split_sentences(text) == [
      "Return the value.",
      "It is cached: call clear() to drop it!",
      "Is that so?",
      "Yes, e.g. this stays whole.",  # 'Short.' is a fragment, dropped.
      "A wrapped line joins up.",
  ]


def test_split_sentences_keeps_closing_quotes():
  assert corpus.split_sentences('He said "stop." Then it stopped.') == [
      'He said "stop."', "Then it stopped."]


def test_split_sentences_paragraph_per_line():
  text = "First paragraph here\nSecond paragraph. With two sentences.\n\n"
  assert corpus.split_sentences(text, paragraph_per_line=True) == [
      "First paragraph here", "Second paragraph.", "With two sentences."]
  assert corpus.split_sentences(text) == [
      "First paragraph here Second paragraph.", "With two sentences."]


def test_module_docstrings_in_source_order():
  source = '''"""The module docstring."""
class A:
  """Class A."""
  def method(self):
    """A.method."""
def f():
  """Function f."""
  def inner():
    """Inner of f."""
if True:
  async def g():
    """Coroutine g."""
def no_docstring():
  pass
'''
  assert corpus.module_docstrings(source) == [
      "The module docstring.", "Class A.", "A.method.", "Function f.", "Inner of f.",
      "Coroutine g."]


def _write(path, text: str | bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(text.encode() if isinstance(text, str) else text)


def test_stdlib_documents_one_per_module_skipping_non_library(tmp_path):
  for relative_path in ("b.py", "pkg/a.py", "tests/t.py", "pkg/test/t.py", "site-packages/s.py",
                        "idlelib/i.py", "lib2to3/l.py"):
    _write(tmp_path / relative_path, f'"""Docstring of the {relative_path} module."""\n'
           f'def f():\n  """Function of {relative_path}."""\n')
  _write(tmp_path / "broken.py", '"""Broken module here."""\ndef (:\n')
  _write(tmp_path / "latin1.py", b'"""Caf\xe9 module docstring."""\n')
  _write(tmp_path / "nodocs.py", "x = 1\n")
  _write(tmp_path / "notes.txt", '"""Not a module at all."""\n')
  assert corpus.stdlib_documents(str(tmp_path)) == [
      ["Docstring of the b.py module.", "Function of b.py."],
      ["Docstring of the pkg/a.py module.", "Function of pkg/a.py."],
  ]


@pytest.fixture(scope="module")
def stdlib_corpus() -> list[list[str]]:
  return corpus.stdlib_documents()


def test_stdlib_documents_real(stdlib_corpus):
  assert len(stdlib_corpus) > 300
  assert all(document and all(document) for document in stdlib_corpus)
  num_chars = sum(len(sentence) for document in stdlib_corpus for sentence in document)
  assert num_chars > 500_000
  sentences = {sentence for document in stdlib_corpus for sentence in document}
  # textwrap's module docstring opens a document.
  assert ["Text wrapping and filling."] in [document[:1] for document in stdlib_corpus]
  assert not any(sentence.startswith(">>>") for sentence in sentences)


def test_stdlib_documents_deterministic(stdlib_corpus):
  assert corpus.stdlib_documents() == stdlib_corpus


def test_text_file_documents(tmp_path):
  _write(tmp_path / "a.txt", "First sentence.\n  Second sentence.  \n\n\n\nOther doc.\n")
  _write(tmp_path / "b.txt", "Doc of b.\nStill b.")
  _write(tmp_path / "c.text", "Doc of c.\n\n")
  documents = list(corpus.text_file_documents(f"{tmp_path}/*.txt, {tmp_path}/c.text"))
  assert documents == [["First sentence.", "Second sentence."], ["Other doc."],
                       ["Doc of b.", "Still b."], ["Doc of c."]]


def test_one_sentence_per_line_without_documents_is_cut_into_documents(tmp_path):
  lines = [f"Sentence number {i} of the text." for i in range(100)]
  _write(tmp_path / "lines.txt", "\n".join(lines) + "\n")
  # A blank line anywhere in the first 64 KiB: the file's own documents, however long.
  _write(tmp_path / "docs.txt", "\n".join(lines) + "\n\nA second document.\n")
  counters = collections.Counter()
  documents = list(corpus.text_file_documents(f"{tmp_path}/lines.txt", counters))
  size = corpus.UNSTRUCTURED_DOCUMENT_LINES
  assert documents == [lines[i:i + size] for i in range(0, 100, size)]
  assert counters["unstructured_files"] == 1
  assert "1 without blank lines" in corpus.input_summary(counters)
  counters = collections.Counter()
  documents = list(corpus.text_file_documents(f"{tmp_path}/docs.txt", counters))
  assert documents == [lines, ["A second document."]]
  assert not counters["unstructured_files"]


def test_text_file_documents_missing_glob_is_a_clear_error(tmp_path):
  _write(tmp_path / "a.txt", "A sentence.\n")
  with pytest.raises(errors.UserError, match="nothing-here"):
    # Raised at the call, before iteration: a bad config fails before any work.
    corpus.text_file_documents(f"{tmp_path}/a.txt,{tmp_path}/nothing-here/*.txt")
  with pytest.raises(errors.UserError, match="data.input_files"):
    corpus.text_file_documents(" , ")


def _mock_wikipedia(texts: list[str]):
  def as_dataset(self, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_tensor_slices(
        {"title": [f"Title {i}" for i in range(len(texts))], "text": texts})
  return tfds.testing.mock_data(as_dataset_fn=as_dataset)


_WIKIPEDIA_TEXTS = [
    "Alan Turing was a mathematician. He was born in London.\n\nHe studied at Cambridge.",
    "x",  # Nothing left after splitting: skipped.
    "Ada Lovelace wrote the first program.\nShe worked with Babbage!",
]


def test_tfds_documents():
  with _mock_wikipedia(_WIKIPEDIA_TEXTS):
    documents = list(corpus.tfds_documents("wikipedia/20230601.en", "train", "text", ""))
  assert documents == [
      ["Alan Turing was a mathematician.", "He was born in London.", "He studied at Cambridge."],
      ["Ada Lovelace wrote the first program.", "She worked with Babbage!"],
  ]


def _data_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({
      "source": "embedded", "max_documents": 0, "input_files": "",
      "tfds_name": "wikipedia/20230601.en", "tfds_split": "train", "tfds_text_key": "text",
      "tfds_data_dir": ""})
  config.update(overrides)
  return config


def test_load_documents_dispatches_and_caps(tmp_path, monkeypatch):
  _write(tmp_path / "a.txt", "One.\n\nTwo.\n\nThree.\n")
  config = _data_config(source="text", input_files=str(tmp_path / "*.txt"))
  assert list(corpus.load_documents(config)) == [["One."], ["Two."], ["Three."]]
  config.max_documents = 2
  assert list(corpus.load_documents(config)) == [["One."], ["Two."]]

  monkeypatch.setattr(corpus, "stdlib_documents", lambda: [["Embedded one."], ["Embedded 2."]])
  assert list(corpus.load_documents(_data_config(max_documents=1))) == [["Embedded one."]]

  with _mock_wikipedia(_WIKIPEDIA_TEXTS):
    documents = list(corpus.load_documents(_data_config(source="tfds")))
  assert len(documents) == 2


def test_load_documents_unknown_source():
  with pytest.raises(errors.UserError, match="data.source"):
    corpus.load_documents(_data_config(source="wikipedia"))
