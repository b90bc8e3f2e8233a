"""Where pre-training text comes from: documents, each a list of sentences.

Three sources, chosen by `config.data.source`:

  'embedded'  the docstrings of this Python's standard library: English prose about software,
              ~600 documents, ~1.7 MB, always there, no network. Enough to train a tiny BERT.
  'text'      text files in the original BERT format: one sentence per line, a blank line
              between documents.
  'tfds'      a TFDS text dataset (e.g. wikipedia/20230601.en), one example per document.
"""

import ast
import collections
from collections.abc import Iterable, Iterator
import itertools
import os
import re
import sys
import sysconfig

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from bert_jax import errors
from bert_jax import files as files_lib
from bert_jax import tfds_datasets

# Directories of the standard library that are not its documentation: installed packages,
# test suites (fixtures, not prose), and the IDE and 2to3 (mostly grammar and UI strings).
_SKIPPED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib",
                                  "lib2to3", "__pycache__"})
# Shorter sentences are section titles, parameter names and the like: noise for NSP and MLM.
MIN_SENTENCE_CHARS = 8

_BLANK_LINE = re.compile(r"\n\s*\n")
_WHITESPACE = re.compile(r"\s+")
# End of a sentence: . ! or ? (maybe closed by a quote or bracket), whitespace, then something
# that starts a sentence. Requiring the capital keeps "e.g. this" and "os.path. join" whole.
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"')\]]?)\s+(?=[\"'(\[]?[A-Z0-9])")
# Doctest lines: the code is not prose, and its output is rarely a sentence.
_DOCTEST_LINE = re.compile(r"^\s*(>>>|\.\.\.)( |$)")


def split_sentences(text: str, *, paragraph_per_line: bool = False) -> list[str]:
  """Splits prose into sentences: at paragraph breaks, then after sentence-end punctuation.

  Args:
    text: The text.
    paragraph_per_line: True when every line is a paragraph (Wikipedia dumps); False when
      paragraphs are separated by blank lines and single newlines only wrap (docstrings).

  Returns:
    The sentences, whitespace collapsed, without doctest lines or fragments shorter than
    MIN_SENTENCE_CHARS.
  """
  paragraphs = text.split("\n") if paragraph_per_line else _BLANK_LINE.split(text)
  sentences = []
  for paragraph in paragraphs:
    lines = [line for line in paragraph.split("\n") if not _DOCTEST_LINE.match(line)]
    paragraph = _WHITESPACE.sub(" ", " ".join(lines)).strip()
    if not paragraph:
      continue
    # The split keeps each closing quote/bracket as its own item: glue it back on.
    pieces = _SENTENCE_END.split(paragraph)
    for i in range(0, len(pieces), 2):
      sentence = pieces[i] + (pieces[i + 1] if i + 1 < len(pieces) else "")
      if len(sentence) >= MIN_SENTENCE_CHARS:
        sentences.append(sentence)
  return sentences


def module_docstrings(source: str) -> list[str]:
  """The docstrings of one Python module: the module's, then classes' and functions' in order.

  Args:
    source: The module's source code.

  Returns:
    The docstrings, cleaned (inspect.cleandoc), in source order.

  Raises:
    SyntaxError, ValueError: If the source does not parse.
  """
  tree = ast.parse(source)
  docstrings = []
  module_docstring = ast.get_docstring(tree)
  if module_docstring:
    docstrings.append(module_docstring)
  definitions = [node for node in ast.walk(tree)
                 if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
  # ast.walk is breadth-first; the text reads better in the order it was written.
  definitions.sort(key=lambda node: (node.lineno, node.col_offset))
  for node in definitions:
    docstring = ast.get_docstring(node)
    if docstring:
      docstrings.append(docstring)
  return docstrings


def stdlib_documents(stdlib_dir: str | None = None) -> list[list[str]]:
  """The embedded corpus: one document per standard-library module, made of its docstrings.

  Read from the Python running this code (~4 s); the same Python gives the same corpus.

  Args:
    stdlib_dir: Root of the standard library; None = this Python's
      (sysconfig.get_paths()['stdlib']).

  Returns:
    Documents in sorted order of the modules' relative paths; modules without docstrings, and
    files that do not decode or parse, are left out.
  """
  if stdlib_dir is None:
    stdlib_dir = sysconfig.get_paths()["stdlib"]
  relative_paths = []
  for directory, subdirectories, filenames in os.walk(stdlib_dir):
    subdirectories[:] = [d for d in subdirectories if d not in _SKIPPED_STDLIB_DIRS]
    relative_directory = os.path.relpath(directory, stdlib_dir)
    relative_paths.extend(os.path.normpath(os.path.join(relative_directory, filename))
                          for filename in filenames if filename.endswith(".py"))
  documents = []
  for relative_path in sorted(relative_paths):
    try:
      with open(os.path.join(stdlib_dir, relative_path), "rb") as f:
        source = f.read().decode("utf-8")
      docstrings = module_docstrings(source)
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
      continue  # A broken or non-UTF-8 file (a few exist on purpose) is just not text.
    document = [sentence for docstring in docstrings for sentence in split_sentences(docstring)]
    if document:
      documents.append(document)
  return documents


def text_file_documents(patterns: str,
                        counters: collections.Counter | None = None) -> Iterator[list[str]]:
  """Reads documents from text files in the original BERT format.

  One sentence per line; a blank line ends a document, and so does the end of a file. What is
  not text is skipped or repaired, and counted (prepare's summary prints the counts):

    input_files         files matched.
    empty_files         files without a line of text (empty, or only blank lines).
    binary_files        files with a NUL byte in their first 8 KiB (as git decides): skipped,
                        with a line on stderr naming each.
    binary_lines        lines of a text file holding NUL bytes: skipped.
    invalid_utf8_lines  lines that are not UTF-8: kept, their bad bytes as U+FFFD (the
                        original drops the bytes).
    long_lines          lines over MAX_LINE_BYTES: not one sentence, whatever the format says;
                        read a piece at a time and cut into sentences (split_sentences, then
                        at spaces to MAX_CUT_SENTENCE_CHARS), so a file that is one huge line
                        never sits whole in memory nor makes one sentence of a million tokens.
    unstructured_files  files with no blank line in their first STRUCTURE_TEST_BYTES: one
                        sentence per line without documents (or a single one). Every
                        UNSTRUCTURED_DOCUMENT_LINES lines of them make a document (blank lines
                        still end one), so that the eval split (the first documents) takes a
                        small part of the text, not all of it, and shards can run in parallel.
                        Consecutive lines stay together, so next-sentence pairs are still real.

  Args:
    patterns: Comma-separated globs (local or gs://); files of each glob are read in sorted
      order.
    counters: If given, the counts above are added to it as the stream is read.

  Returns:
    An iterator of documents, each a non-empty list of sentences.

  Raises:
    errors.UserError: If patterns is empty or a glob matches no file (raised at the call,
      before anything is read), or a file cannot be read (when it is reached).
  """
  files = files_lib.match_files(patterns, "data.input_files")
  counters = collections.Counter() if counters is None else counters
  counters["input_files"] += len(files)
  return _read_text_files(files, counters)


# Lines are read at most this many bytes at a time; longer ones are cut into sentences. Far
# above any sentence, or a Wikipedia paragraph.
MAX_LINE_BYTES = 64 * 1024
# Sentences cut from a long line are cut again, at spaces, to at most this many characters
# (~500 tokens: an instance of the longest usual length): text without punctuation is
# still used, not truncated away.
MAX_CUT_SENTENCE_CHARS = 2000
# A file with a NUL byte in this many first bytes is binary (git's test).
_BINARY_TEST_BYTES = 8000
# A file without a blank line in this many first bytes has no document structure...
STRUCTURE_TEST_BYTES = 64 * 1024
# ... and is cut into documents of this many lines: ~500-1000 tokens, several instances each.
UNSTRUCTURED_DOCUMENT_LINES = 32
_BLANK_LINE_BYTES = re.compile(_BLANK_LINE.pattern.encode())  # The same test, on bytes.


def _decode(raw: bytes, counters: collections.Counter) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    counters["invalid_utf8_lines"] += 1
    return raw.decode("utf-8", errors="replace")


def _long_line_sentences(text: str) -> Iterator[str]:
  """The sentences of a piece of a long line, none over MAX_CUT_SENTENCE_CHARS."""
  for sentence in split_sentences(text, paragraph_per_line=True):
    while len(sentence) > MAX_CUT_SENTENCE_CHARS:
      cut = sentence.rfind(" ", 0, MAX_CUT_SENTENCE_CHARS)
      cut = cut if cut > 0 else MAX_CUT_SENTENCE_CHARS
      yield sentence[:cut]
      sentence = sentence[cut:].lstrip()
    if sentence:
      yield sentence


def _read_lines(f, counters: collections.Counter) -> Iterator[str]:
  """The stripped lines of an open binary file; a long line comes as its sentences."""
  in_long_line = False
  rest = b""  # The end of the last piece of a long line, after its last space.
  while True:
    piece = f.readline(MAX_LINE_BYTES)
    if not piece:
      if rest:  # The file ended within a long line.
        yield from _long_line_sentences(_decode(rest, counters))
      break
    line_ends = piece.endswith(b"\n") or len(piece) < MAX_LINE_BYTES
    if not in_long_line and line_ends:
      if b"\0" in piece:
        counters["binary_lines"] += 1
        continue
      yield _decode(piece, counters).strip()
      continue
    if not in_long_line:
      counters["long_lines"] += 1
      in_long_line = True
    text = rest + piece
    rest = b""
    if line_ends:
      in_long_line = False
    else:
      # Cut at a space, so no word (and no UTF-8 character: 0x20 is never part of one) is
      # split between two pieces; the words after it start the next piece.
      cut = text.rfind(b" ")
      if cut > 0:
        text, rest = text[:cut], text[cut:]
    if b"\0" in text:
      counters["binary_lines"] += 1
      continue
    yield from _long_line_sentences(_decode(text, counters))


def _read_text_files(files: list[str], counters: collections.Counter) -> Iterator[list[str]]:
  for path in files:
    # Python's own file object for local files: reading lines through gfile is ~10x slower.
    opener = tf.io.gfile.GFile if "://" in path else open
    try:
      f = opener(path, "rb")
      head = f.read(STRUCTURE_TEST_BYTES)
      f.seek(0)
    except (OSError, tf.errors.OpError) as e:
      raise errors.UserError(f"data.input_files: cannot read {path}: "
                             f"{getattr(e, 'strerror', None) or e}") from e
    with f:
      if b"\0" in head[:_BINARY_TEST_BYTES]:
        counters["binary_files"] += 1
        print(f"Skipped {path}: a binary file, not text (NUL bytes)", file=sys.stderr,
              flush=True)
        continue
      structured = _BLANK_LINE_BYTES.search(head) is not None
      counters["unstructured_files"] += not structured and bool(head.strip())
      document = []
      num_documents = 0
      for line in _read_lines(f, counters):
        if line:
          document.append(line)
        if document and (not line or (not structured
                                      and len(document) == UNSTRUCTURED_DOCUMENT_LINES)):
          num_documents += 1
          yield document
          document = []
      if document:
        num_documents += 1
        yield document
      if not num_documents:
        counters["empty_files"] += 1


# What text_file_documents counts, and how the summary says it.
INPUT_COUNTERS = {
    "input_files": "files",
    "empty_files": "empty (no text)",
    "binary_files": "binary (skipped)",
    "binary_lines": "lines with NUL bytes (skipped)",
    "long_lines": f"lines over {MAX_LINE_BYTES // 1024} KiB (cut into sentences)",
    "unstructured_files": (f"without blank lines (documents of {UNSTRUCTURED_DOCUMENT_LINES} "
                           "lines)"),
}


def input_summary(counters: dict[str, int]) -> str:
  """One line of the files read and what was skipped; '' when no file was read (TFDS)."""
  if not counters.get("input_files"):
    return ""
  return ", ".join(f"{counters[key]} {what}" for key, what in INPUT_COUNTERS.items()
                   if counters.get(key))


def tfds_documents(name: str, split: str, text_key: str,
                   data_dir: str | None = None) -> Iterator[list[str]]:
  """Reads documents from a TFDS text dataset, one example per document.

  Args:
    name: TFDS name, with config and version if needed (e.g. 'wikipedia/20230601.en').
    split: Split to read, e.g. 'train' or 'train[:1%]'.
    text_key: Feature that holds the document text.
    data_dir: TFDS data_dir; None or '' = TFDS's default.

  Yields:
    Documents, each a non-empty list of sentences (each line of the text is a paragraph).
  """
  dataset = tfds_datasets.prepared_builder(name, data_dir).as_dataset(split=split,
                                                                       shuffle_files=False)
  for example in tfds.as_numpy(dataset):
    text = example[text_key]
    document = split_sentences(text.decode("utf-8") if isinstance(text, bytes) else str(text),
                               paragraph_per_line=True)
    if document:
      yield document


def load_documents(data_config: ml_collections.ConfigDict,
                   counters: collections.Counter | None = None) -> Iterator[list[str]]:
  """The documents config.data asks for.

  Args:
    data_config: config.data; reads source, max_documents and the fields of that source
      (input_files; tfds_name, tfds_split, tfds_text_key, tfds_data_dir).
    counters: Counts of what text files held that was not text (see text_file_documents).

  Returns:
    An iterator of documents (lists of sentences), at most data_config.max_documents of them
    (0 = all).

  Raises:
    errors.UserError: For an unknown data.source, a negative data.max_documents, or input
      files that do not exist.
  """
  source = data_config.source
  documents: Iterable[list[str]]
  if source == "embedded":
    documents = stdlib_documents()
  elif source == "text":
    documents = text_file_documents(data_config.input_files, counters)
  elif source == "tfds":
    documents = tfds_documents(data_config.tfds_name, data_config.tfds_split,
                               data_config.tfds_text_key, data_config.tfds_data_dir)
  else:
    raise errors.UserError(f"data.source must be 'embedded', 'text' or 'tfds', not {source!r}")
  if data_config.max_documents < 0:
    raise errors.UserError(
        f"data.max_documents must be >= 0 (0 = all), not {data_config.max_documents}")
  if data_config.max_documents:
    return itertools.islice(documents, data_config.max_documents)
  return iter(documents)


def count_documents(data_config: ml_collections.ConfigDict) -> int:
  """How many documents load_documents(data_config) gives, for the eval hold-out's fraction.

  A TFDS split's size comes from its metadata when known (documents without text, skipped
  when read, are counted); otherwise the stream is read once to count it (text files: cheap
  next to tokenizing them).
  """
  if data_config.source == "tfds":
    builder = tfds_datasets.prepared_builder(data_config.tfds_name, data_config.tfds_data_dir)
    dataset = builder.as_dataset(split=data_config.tfds_split, shuffle_files=False)
    size = int(dataset.cardinality())
    if size >= 0:
      return min(size, data_config.max_documents or size)
  return sum(1 for _ in load_documents(data_config))

