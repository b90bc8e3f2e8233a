"""Tokenizers: SentencePiece (trained here) and WordPiece (Google's vocab.txt), one interface.

`load_tokenizer` picks by file name: a '.model' file is SentencePiece, anything else a WordPiece
vocabulary read by `wordpiece.FullTokenizer` (the original BERT's tokenizer). Both answer the
`Tokenizer` protocol below, which is all that data preparation and masking use.

Every SentencePiece model bert_jax trains puts the special tokens first, at fixed ids:

    [PAD]=0  [UNK]=1  [CLS]=2  [SEP]=3  [MASK]=4

[CLS], [SEP] and [MASK] are SentencePiece *control* symbols: the encoder never emits them for
text, so the literal string "[MASK]" in a document is ordinary text, not a mask token. A
WordPiece vocabulary has its own ids (Google's: [PAD]=0, [UNK] [CLS] [SEP] [MASK]=100-103): code
that must work with both reads them from the tokenizer (`tokenizer.cls_id`, `special_ids`).

Train a SentencePiece model from text files (one sentence per line, blank lines ignored):

    python -m bert_jax.tokenizers.tokenization train --input='corpus/*.txt' --vocab_size=30000 \
        --output=gs://bucket/spm
"""

from collections.abc import Iterable, Iterator, Sequence
import os
import random
import sys
import tempfile
from typing import Protocol

from absl import app
from absl import flags
import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
import tensorflow as tf

from bert_jax import disk_full
from bert_jax import errors
from bert_jax import files as files_lib
from bert_jax.tokenizers import special_tokens

class Tokenizer(Protocol):
  """What data preparation and masking need of a tokenizer (SentencePiece or WordPiece)."""

  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int

  @property
  def vocab_size(self) -> int:
    """Number of ids, special tokens included."""

  @property
  def special_ids(self) -> tuple[int, int, int, int, int]:
    """Ids of [PAD] [UNK] [CLS] [SEP] [MASK], in that order."""

  def word_starts(self) -> np.ndarray:
    """Bool [vocab_size]: True where a token begins a word (whole-word masking)."""

  def tokenize(self, text: str) -> list[str]:
    """Text to tokens."""

  def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
    """Tokens to ids."""

  def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
    """Ids to tokens."""

  def encode(self, text: str) -> list[int]:
    """Text to ids, without [CLS]/[SEP]."""

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Many texts to ids at once: the fast path."""


class SentencePieceTokenizer:
  """Text -> pieces -> ids with a SentencePiece model whose special tokens are at fixed ids.

  Attributes:
    model_file: Path the model was read from (local or gs://).
    pad_id, unk_id, cls_id, sep_id, mask_id: Ids of the special tokens, read from the model
      (always equal to special_tokens.PAD_ID ... special_tokens.MASK_ID: the constructor checks).
  """

  def __init__(self, model_file: str, num_threads: int | None = None):
    """Reads a SentencePiece .model file.

    Args:
      model_file: Path of the .model file; read through tf.io.gfile, so gs:// works.
      num_threads: Threads of encode_batch; None = one per core.

    Raises:
      errors.UserError: If model_file does not exist, is not a SentencePiece model, or its
        special tokens are not at the ids bert_jax expects.
    """
    self.model_file = model_file
    self._num_threads = num_threads or os.cpu_count() or 1
    if not tf.io.gfile.exists(model_file):
      raise errors.UserError(f"SentencePiece model {model_file!r} does not exist")
    with tf.io.gfile.GFile(model_file, "rb") as f:
      model_proto = f.read()
    self._processor = spm.SentencePieceProcessor()
    try:
      self._processor.LoadFromSerializedProto(model_proto)
    except RuntimeError as e:
      raise errors.UserError(f"{model_file!r} is not a SentencePiece model: {e}") from None

    # The piece at each id, not PieceToId: that answers unk_id for a piece it lacks.
    num_first = min(special_tokens.NUM_SPECIAL_TOKENS, self._processor.GetPieceSize())
    first_pieces = tuple(self._processor.IdToPiece(i) for i in range(num_first))
    if first_pieces != special_tokens.SPECIAL_TOKENS:
      raise errors.UserError(
          f"{model_file!r} has {first_pieces} at ids 0-4, not bert_jax's special tokens "
          f"{special_tokens.SPECIAL_TOKENS}: train it with tokenization.train_sentencepiece")
    self.pad_id = self._processor.PieceToId(special_tokens.PAD_TOKEN)
    self.unk_id = self._processor.PieceToId(special_tokens.UNK_TOKEN)
    self.cls_id = self._processor.PieceToId(special_tokens.CLS_TOKEN)
    self.sep_id = self._processor.PieceToId(special_tokens.SEP_TOKEN)
    self.mask_id = self._processor.PieceToId(special_tokens.MASK_TOKEN)

  @property
  def vocab_size(self) -> int:
    """Number of ids, special tokens included."""
    return self._processor.GetPieceSize()

  @property
  def special_ids(self) -> tuple[int, int, int, int, int]:
    """Ids of [PAD] [UNK] [CLS] [SEP] [MASK], in that order."""
    return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

  def word_starts(self) -> np.ndarray:
    """Bool [vocab_size]: True where a piece begins a word.

    A piece begins a word when it starts with '▁' (SentencePiece's mark of a preceding space);
    special and control pieces stand alone, so they count as starts too.
    """
    processor = self._processor
    return np.array([processor.IdToPiece(i).startswith("\u2581") or processor.IsControl(i) or
                     processor.IsUnknown(i) for i in range(processor.GetPieceSize())], dtype=bool)

  def tokenize(self, text: str) -> list[str]:
    """Splits text into SentencePiece pieces ('▁' marks a preceding space)."""
    return self._processor.Encode(text, out_type=str)

  def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
    """Maps pieces to ids; a piece not in the vocabulary maps to [UNK]."""
    return [self._processor.PieceToId(token) for token in tokens]

  def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
    """Maps ids to pieces."""
    return [self._processor.IdToPiece(int(i)) for i in ids]

  def encode(self, text: str) -> list[int]:
    """Text straight to ids: the same as convert_tokens_to_ids(tokenize(text)), faster."""
    return self._processor.Encode(text, out_type=int)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Encodes many texts at once, in C++ threads (num_threads)."""
    return self._processor.Encode(list(texts), out_type=int, num_threads=self._num_threads)


def train_sentencepiece(sentences: Iterable[str],
                        vocab_size: int,
                        model_prefix: str,
                        input_sentence_size: int,
                        seed: int = 0) -> str:
  """Trains a unigram SentencePiece model with the special tokens at their fixed ids.

  The same sentences and seed give the same model, byte for byte. The files appear complete or
  not at all: they are trained under a temporary name and renamed, .vocab first and .model last,
  so an existing .model is always a finished one.

  Args:
    sentences: The training text, one sentence per item.
    vocab_size: Wanted number of pieces, special tokens included. A small corpus may give fewer
      (hard_vocab_limit is off), never more.
    model_prefix: Writes model_prefix.model and model_prefix.vocab (local or gs://).
    input_sentence_size: Most sentences to train on; a larger input is sampled down (uniformly,
      seeded). 0 = all.
    seed: Seed of the sampling.

  Returns:
    The path of the .model file.

  Raises:
    errors.UserError: If there is no non-blank sentence.
  """
  # Sampled here, not by SentencePiece: its sampler draws from a generator seeded per process
  # (set_random_generator_seed does not make it repeat across processes).
  sample = _sample_sentences(sentences, input_sentence_size, seed)
  if not sample:
    raise errors.UserError(f"no text to train the SentencePiece model {model_prefix}.model on")
  final_dir = os.path.dirname(model_prefix)
  if final_dir:
    tf.io.gfile.makedirs(final_dir)
  # SentencePiece writes only local files: train into a local scratch dir, then copy (gs:// or
  # local) under a temporary name in the destination directory and rename into place.
  with tempfile.TemporaryDirectory() as scratch_dir:
    scratch_prefix = os.path.join(scratch_dir, "spm")
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(sample),
        model_prefix=scratch_prefix,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        input_sentence_size=0,  # Train on all of the sample.
        num_threads=2,
        pad_id=special_tokens.PAD_ID,
        pad_piece=special_tokens.PAD_TOKEN,
        unk_id=special_tokens.UNK_ID,
        unk_piece=special_tokens.UNK_TOKEN,
        bos_id=-1,
        eos_id=-1,
        control_symbols=[special_tokens.CLS_TOKEN, special_tokens.SEP_TOKEN,
                         special_tokens.MASK_TOKEN],
        minloglevel=2,  # SentencePiece logs every EM iteration otherwise.
    )
    with open(scratch_prefix + ".vocab", "rb") as f:
      vocab = f.read()
    model = sentencepiece_model_pb2.ModelProto()
    with open(scratch_prefix + ".model", "rb") as f:
      model.ParseFromString(f.read())
  # The model records its prefix; the scratch one is random and would make runs differ.
  model.trainer_spec.model_prefix = model_prefix
  for extension, contents in ((".vocab", vocab), (".model", model.SerializeToString())):
    files_lib.write_whole(model_prefix + extension, contents)
  return model_prefix + ".model"


def _sample_sentences(sentences: Iterable[str], sample_size: int, seed: int) -> list[str]:
  """A uniform random sample of the non-blank sentences (all of them if fewer), seeded."""
  rng = random.Random(seed)
  sample: list[str] = []
  num_seen = 0
  for sentence in sentences:
    if not sentence.strip():
      continue  # Blank sentences carry no pieces and only take a place in the sample.
    if sample_size <= 0 or len(sample) < sample_size:
      sample.append(sentence)
    else:
      # Reservoir sampling: every sentence seen so far stays with probability size / seen.
      slot = rng.randint(0, num_seen)
      if slot < sample_size:
        sample[slot] = sentence
    num_seen += 1
  return sample


def load_tokenizer(vocab_file: str, do_lower_case: bool = True) -> Tokenizer:
  """Loads the tokenizer a vocabulary file describes.

  Args:
    vocab_file: A SentencePiece '.model' file, or else a WordPiece vocabulary (one token per
      line, e.g. Google's vocab.txt); local or gs://.
    do_lower_case: WordPiece only: True for uncased vocabularies (SentencePiece models carry
      their own normalisation).

  Returns:
    A SentencePieceTokenizer or a wordpiece.FullTokenizer.

  Raises:
    errors.UserError: If vocab_file does not exist, is not a SentencePiece model with
      bert_jax's special tokens, or is a WordPiece vocabulary without all five special tokens.
  """
  if not vocab_file or not tf.io.gfile.exists(vocab_file):
    raise errors.UserError(f"vocab_file {vocab_file!r} does not exist")
  if tf.io.gfile.isdir(vocab_file):
    raise errors.UserError(f"vocab_file {vocab_file!r} is a directory: name the vocab.txt or "
                           ".model file in it")
  if vocab_file.endswith(".model"):
    return SentencePieceTokenizer(vocab_file)
  # Imported here: only WordPiece vocabularies need it (and the `tokenizers` library it loads).
  from bert_jax.tokenizers import wordpiece  # pylint: disable=g-import-not-at-top
  return wordpiece.FullTokenizer(vocab_file, do_lower_case=do_lower_case)


def read_sentences(patterns: str) -> Iterator[str]:
  """The non-blank lines of text files (the original format: one sentence per line).

  Args:
    patterns: Comma-separated globs (local or gs://).

  Returns:
    An iterator of stripped lines; blank lines (document breaks) are left out.

  Raises:
    errors.UserError: If patterns is empty or a glob matches no file (raised at the call), or
      a file cannot be read as UTF-8 text (raised while iterating).
  """
  files = files_lib.match_files(patterns, "--input")
  return _read_lines(files)


def _read_lines(files: list[str]) -> Iterator[str]:
  for path in files:
    try:
      with tf.io.gfile.GFile(path, "r") as f:
        for line in f:
          line = line.strip()
          if line:
            yield line
    except (tf.errors.OpError, UnicodeDecodeError) as e:
      raise errors.UserError(f"cannot read {path!r}: {e}") from None


def _define_flags() -> None:
  # Defined only when run as a script: importing this module must not add flags to the
  # importer's command line.
  flags.DEFINE_string("input", None, "Comma-separated globs of text files, one sentence per "
                      "line (blank lines are ignored).")
  flags.DEFINE_integer("vocab_size", None, "Pieces in the model, the 5 special tokens "
                       "included (a small corpus may give fewer).")
  flags.DEFINE_string("output", None, "Prefix of the files to write: PREFIX.model and "
                      "PREFIX.vocab (local or gs://).")
  flags.DEFINE_integer("input_sentence_size", 10_000_000, "Most sentences to train on; a "
                       "larger input is sampled down, uniformly. 0 = all.")
  flags.DEFINE_integer("seed", 0, "Seed of the sampling.")
  flags.DEFINE_boolean("overwrite", False, "Replace PREFIX.model and PREFIX.vocab if they exist "
                       "(without it, the command stops before reading anything).")
  flags.mark_flags_as_required(["input", "vocab_size", "output"])


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] != "train":
    raise app.UsageError("usage: python -m bert_jax.tokenizers.tokenization train --input=GLOBS "
                         "--vocab_size=N --output=PREFIX [--input_sentence_size=N]")
  flag_values = flags.FLAGS
  try:
    if flag_values.vocab_size <= special_tokens.NUM_SPECIAL_TOKENS:
      raise errors.UserError(f"--vocab_size={flag_values.vocab_size} leaves no room past the "
                             f"{special_tokens.NUM_SPECIAL_TOKENS} special tokens")
    existing = [f"{flag_values.output}{ext}" for ext in (".model", ".vocab")
                if tf.io.gfile.exists(f"{flag_values.output}{ext}")]
    if existing and not flag_values.overwrite:
      # A workdir's data/vocab.model among them would silently no longer match its records.
      raise errors.UserError(f"--output={flag_values.output}: {existing[0]} exists; pass "
                             "--overwrite to replace it")
    with disk_full.reported(flag_values.output):
      model_file = train_sentencepiece(read_sentences(flag_values.input),
                                       flag_values.vocab_size, flag_values.output,
                                       flag_values.input_sentence_size, seed=flag_values.seed)
  except errors.UserError as e:
    sys.exit(f"bert_jax.tokenizers.tokenization: error: {e}")
  print(model_file)
  pieces = SentencePieceTokenizer(model_file).vocab_size
  if pieces < flag_values.vocab_size:
    print(f"bert_jax.tokenizers.tokenization: the input gave {pieces} pieces, fewer than "
          f"--vocab_size={flag_values.vocab_size} (a small corpus; set model.vocab_size to "
          f"{pieces} or more)",
          file=sys.stderr)


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=errors.flags_parser("bert_jax.tokenizers.tokenization"))
