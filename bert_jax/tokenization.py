"""Tokenizers: SentencePiece, with BERT's special tokens at fixed ids.

Every vocabulary bert_jax trains puts the special tokens first, at the same ids, so the data
pipeline and the model can name them as constants (masking never has to look a token up):

    [PAD]=0  [UNK]=1  [CLS]=2  [SEP]=3  [MASK]=4

[CLS], [SEP] and [MASK] are SentencePiece *control* symbols: the encoder never emits them for
text, so the literal string "[MASK]" in a document is ordinary text, not a mask token.
"""

from collections.abc import Iterable, Sequence
import os
import random
import tempfile

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
import tensorflow as tf

from bert_jax import errors

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
PAD_ID = 0
UNK_ID = 1
CLS_ID = 2
SEP_ID = 3
MASK_ID = 4
# In id order: SPECIAL_TOKENS[i] has id i.
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
# Also the first id of an ordinary piece: MLM's random replacements are drawn from there on.
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)


class SentencePieceTokenizer:
  """Text -> pieces -> ids with a SentencePiece model whose special tokens are at fixed ids.

  Attributes:
    model_file: Path the model was read from (local or gs://).
    pad_id, unk_id, cls_id, sep_id, mask_id: Ids of the special tokens, read from the model
      (always equal to PAD_ID ... MASK_ID: the constructor checks).
  """

  def __init__(self, model_file: str):
    """Reads a SentencePiece .model file.

    Args:
      model_file: Path of the .model file; read through tf.io.gfile, so gs:// works.

    Raises:
      errors.UserError: If model_file does not exist, is not a SentencePiece model, or its
        special tokens are not at the ids bert_jax expects.
    """
    self.model_file = model_file
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
    first_pieces = tuple(self._processor.IdToPiece(i) for i in
                         range(min(NUM_SPECIAL_TOKENS, self._processor.GetPieceSize())))
    if first_pieces != SPECIAL_TOKENS:
      raise errors.UserError(
          f"{model_file!r} has {first_pieces} at ids 0-4, not bert_jax's special tokens "
          f"{SPECIAL_TOKENS}: train it with tokenization.train_sentencepiece")
    self.pad_id = self._processor.PieceToId(PAD_TOKEN)
    self.unk_id = self._processor.PieceToId(UNK_TOKEN)
    self.cls_id = self._processor.PieceToId(CLS_TOKEN)
    self.sep_id = self._processor.PieceToId(SEP_TOKEN)
    self.mask_id = self._processor.PieceToId(MASK_TOKEN)

  @property
  def vocab_size(self) -> int:
    """Number of ids, special tokens included."""
    return self._processor.GetPieceSize()

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
    """Encodes many texts at once, in C++ threads (one per core)."""
    return self._processor.Encode(list(texts), out_type=int, num_threads=os.cpu_count() or 1)


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
        pad_id=PAD_ID,
        pad_piece=PAD_TOKEN,
        unk_id=UNK_ID,
        unk_piece=UNK_TOKEN,
        bos_id=-1,
        eos_id=-1,
        control_symbols=[CLS_TOKEN, SEP_TOKEN, MASK_TOKEN],
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
    temporary_path = f"{model_prefix}{extension}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temporary_path, "wb") as f:
      f.write(contents)
    tf.io.gfile.rename(temporary_path, model_prefix + extension, overwrite=True)
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


def load_tokenizer(vocab_file: str) -> SentencePieceTokenizer:
  """Loads the tokenizer a vocabulary file describes.

  Args:
    vocab_file: A SentencePiece .model file (local or gs://).

  Returns:
    The tokenizer.

  Raises:
    errors.UserError: If vocab_file does not exist, or is not a SentencePiece model with
      bert_jax's special tokens.
  """
  if not vocab_file or not tf.io.gfile.exists(vocab_file):
    raise errors.UserError(f"vocab_file {vocab_file!r} does not exist")
  return SentencePieceTokenizer(vocab_file)
