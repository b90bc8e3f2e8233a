"""WordPiece tokenization exactly as google-research/bert's FullTokenizer, plus a fast path.

The pure-Python path (BasicTokenizer, then WordpieceTokenizer) reproduces the original's
algorithm step for step: clean the text, space out CJK ideographs, split on whitespace,
lower-case and strip accents (uncased vocabularies only), split on punctuation, then greedy
longest-match-first WordPiece with '##' continuations.

The fast path hands the same work to HF's `tokenizers` (Rust, multi-threaded encode_batch).
Its BertNormalizer and BertPreTokenizer do not treat every character as the original does: they
drop private-use characters (the original keeps them), their Unicode tables are older than
Python's (~760 newer punctuation marks, combining marks and format characters are classified
otherwise; 0x2B820-0x2B91F are not spaced out as CJK), and they lower-case a word-final Σ to
'σ' where Python writes 'ς'. So every character is checked once, the first time it is seen,
against the pure-Python path; a text holding a character that would tokenize differently is
encoded by the pure-Python path instead. Ids are therefore identical whichever path runs, and
ordinary text (all of ASCII agrees) never leaves the fast path.

Threads: the fast path runs on rayon's global pool, whose size is read from RAYON_NUM_THREADS
once, when the pool first starts (the first encode_batch in the process); `num_threads` sets it
if nothing has started the pool yet.
"""

from collections.abc import Iterable, Sequence
import logging
import os
import unicodedata

import numpy as np
import tensorflow as tf

from bert_jax import errors
from bert_jax.tokenizers import special_tokens

try:  # The fast path is optional: everything works, slower, without it.
  import tokenizers
  from tokenizers import models as tokenizers_models
  from tokenizers import normalizers as tokenizers_normalizers
  from tokenizers import pre_tokenizers as tokenizers_pre_tokenizers
except ImportError:  # pragma: no cover - exercised only where tokenizers is not installed.
  tokenizers = None

# A longer word is one [UNK], as in the original.
MAX_INPUT_CHARS_PER_WORD = 200
CONTINUATION_PREFIX = "##"
# The CJK Unified Ideographs blocks the original spaces out (not Hangul, Hiragana, Katakana:
# those languages are written with spaces, and the original leaves them to WordPiece).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_GREEK_CAPITAL_SIGMA = "\u03a3"
# Set once this process's tokenizers has run a parallel batch: rayon's pool size is fixed then.
_rayon_pool_started = False


def convert_to_unicode(text: str | bytes) -> str:
  """Text as str; bytes are decoded as UTF-8, invalid sequences dropped (as the original)."""
  if isinstance(text, str):
    return text
  if isinstance(text, bytes):
    return text.decode("utf-8", "ignore")
  raise ValueError(f"unsupported text type: {type(text)}")


def load_vocab(vocab_file: str) -> list[str]:
  """Reads a WordPiece vocabulary: one token per line, the id of a token is its line number.

  Args:
    vocab_file: Path of the vocabulary (local or gs://).

  Returns:
    The tokens in id order, each stripped of surrounding whitespace (as the original does).

  Raises:
    errors.UserError: If the file does not exist, is a directory, is not UTF-8 text or lists
      a token twice.
  """
  if not tf.io.gfile.exists(vocab_file):
    raise errors.UserError(f"WordPiece vocabulary {vocab_file!r} does not exist")
  if tf.io.gfile.isdir(vocab_file):
    raise errors.UserError(f"WordPiece vocabulary {vocab_file!r} is a directory, not a file")
  try:
    with tf.io.gfile.GFile(vocab_file, "rb") as f:
      text = f.read().decode("utf-8")
  except UnicodeDecodeError as e:
    raise errors.UserError(f"WordPiece vocabulary {vocab_file!r} is not UTF-8 text: {e}") from None
  # splitlines() would also break on \x1c, \x85, U+2028 ...; the original reads with readline().
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()  # The newline that ends the last line starts no token.
  tokens = [line.strip() for line in lines]
  # A token listed twice would take its last line's id: [MASK] or [CLS] silently moved.
  first_line = {}
  for number, token in enumerate(tokens, start=1):
    if token in first_line and token:
      raise errors.UserError(f"WordPiece vocabulary {vocab_file!r} lists {token!r} twice (lines "
                             f"{first_line[token]} and {number})")
    first_line.setdefault(token, number)
  return tokens


def _is_whitespace(char: str) -> bool:
  # \t \n \r are control characters to Unicode, whitespace to BERT.
  return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def _is_control(char: str) -> bool:
  if char in "\t\n\r":
    return False
  return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char: str) -> bool:
  code_point = ord(char)
  # All non-alphanumeric ASCII counts ('$', '^', '`' are symbols to Unicode, not punctuation).
  if 33 <= code_point <= 47 or 58 <= code_point <= 64 or 91 <= code_point <= 96 or (
      123 <= code_point <= 126):
    return True
  return unicodedata.category(char).startswith("P")


def _is_cjk_ideograph(code_point: int) -> bool:
  return any(low <= code_point <= high for low, high in _CJK_RANGES)


class BasicTokenizer:
  """Cleaning, CJK spacing, whitespace and punctuation splitting, lower-casing, accent stripping."""

  def __init__(self, do_lower_case: bool = True):
    self.do_lower_case = do_lower_case

  def tokenize(self, text: str | bytes) -> list[str]:
    """Splits text into words and punctuation marks, as the original BasicTokenizer."""
    text = self._clean_text(convert_to_unicode(text))
    text = self._space_out_cjk(text)
    split_tokens = []
    for token in text.split():
      if self.do_lower_case:
        token = self._strip_accents(token.lower())
      split_tokens.extend(self._split_on_punctuation(token))
    # Accent stripping can empty a token (a lone combining mark): join and split drops it.
    return " ".join(split_tokens).split()

  @staticmethod
  def _clean_text(text: str) -> str:
    output = []
    for char in text:
      if char == "\x00" or char == "\ufffd" or _is_control(char):
        continue
      output.append(" " if _is_whitespace(char) else char)
    return "".join(output)

  @staticmethod
  def _space_out_cjk(text: str) -> str:
    if text.isascii():
      return text  # No ideograph, nothing to do: most text, and the check is cheap.
    output = []
    for char in text:
      output.append(f" {char} " if _is_cjk_ideograph(ord(char)) else char)
    return "".join(output)

  @staticmethod
  def _strip_accents(text: str) -> str:
    text = unicodedata.normalize("NFD", text)
    return "".join(char for char in text if unicodedata.category(char) != "Mn")

  @staticmethod
  def _split_on_punctuation(text: str) -> list[str]:
    words: list[list[str]] = []
    start_new_word = True
    for char in text:
      if _is_punctuation(char):
        words.append([char])
        start_new_word = True
      else:
        if start_new_word:
          words.append([])
        start_new_word = False
        words[-1].append(char)
    return ["".join(word) for word in words]


class WordpieceTokenizer:
  """Greedy longest-match-first split of one word into vocabulary pieces."""

  def __init__(self, vocab: dict[str, int], unk_token: str = special_tokens.UNK_TOKEN,
               max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD):
    self.vocab = vocab
    self.unk_token = unk_token
    self.max_input_chars_per_word = max_input_chars_per_word

  def tokenize(self, text: str) -> list[str]:
    """Pieces of each whitespace-separated word of text; a word that cannot be split is [UNK]."""
    output_tokens = []
    for word in text.split():
      if len(word) > self.max_input_chars_per_word:
        output_tokens.append(self.unk_token)
        continue
      pieces = []
      start = 0
      while start < len(word):
        end = len(word)
        piece = None
        while start < end:
          candidate = word[start:end]
          if start > 0:
            candidate = CONTINUATION_PREFIX + candidate
          if candidate in self.vocab:
            piece = candidate
            break
          end -= 1
        if piece is None:
          # One unmatched position makes the whole word unknown, not just its tail.
          pieces = [self.unk_token]
          break
        pieces.append(piece)
        start = end
      output_tokens.extend(pieces)
    return output_tokens


class FullTokenizer:
  """Google BERT's FullTokenizer: text -> WordPiece tokens -> ids, with a fast batch path.

  Attributes:
    vocab_file: Path the vocabulary was read from (local or gs://).
    do_lower_case: Whether text is lower-cased and stripped of accents (uncased vocabularies).
    vocab: Token -> id (a token listed twice keeps its last line, as in the original).
    pad_id, unk_id, cls_id, sep_id, mask_id: Ids of the special tokens in this vocabulary
      (Google's vocabularies have [PAD]=0 and [UNK] [CLS] [SEP] [MASK] at 100-103).
  """

  def __init__(self, vocab_file: str, do_lower_case: bool = True,
               num_threads: int | None = None, use_fast_path: bool = True):
    """Reads the vocabulary and builds both paths.

    Args:
      vocab_file: WordPiece vocabulary, one token per line (local or gs://).
      do_lower_case: True for uncased vocabularies.
      num_threads: Threads of the fast path's encode_batch; None = rayon's default (all cores,
        or RAYON_NUM_THREADS). Takes effect only before the first fast batch in the process.
      use_fast_path: False forces the pure-Python path (for tests and benchmarks).

    Raises:
      errors.UserError: If the file does not exist or lacks one of the special tokens.
    """
    self.vocab_file = vocab_file
    self.do_lower_case = do_lower_case
    self._id_to_token = load_vocab(vocab_file)
    self.vocab = {token: token_id for token_id, token in enumerate(self._id_to_token)}
    for token in special_tokens.SPECIAL_TOKENS:
      if token not in self.vocab:
        raise errors.UserError(f"WordPiece vocabulary {vocab_file!r} has no {token} token")
    self.pad_id = self.vocab[special_tokens.PAD_TOKEN]
    self.unk_id = self.vocab[special_tokens.UNK_TOKEN]
    self.cls_id = self.vocab[special_tokens.CLS_TOKEN]
    self.sep_id = self.vocab[special_tokens.SEP_TOKEN]
    self.mask_id = self.vocab[special_tokens.MASK_TOKEN]
    self.basic_tokenizer = BasicTokenizer(do_lower_case)
    self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab)
    self._fast = None
    if use_fast_path and tokenizers is not None:
      _set_rayon_threads(num_threads)
      self._fast = _FastWordPiece(self.vocab, do_lower_case, self.basic_tokenizer)

  @property
  def vocab_size(self) -> int:
    """Number of ids: lines of the vocabulary file."""
    return len(self._id_to_token)

  @property
  def special_ids(self) -> tuple[int, int, int, int, int]:
    """Ids of [PAD] [UNK] [CLS] [SEP] [MASK], in that order."""
    return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

  @property
  def uses_fast_path(self) -> bool:
    """Whether encode/encode_batch go through `tokenizers` (else pure Python)."""
    return self._fast is not None

  def word_starts(self) -> np.ndarray:
    """Bool [vocab_size]: True where a token begins a word (every token but '##' ones)."""
    return np.array([not token.startswith(CONTINUATION_PREFIX) for token in self._id_to_token],
                    dtype=bool)

  def tokenize(self, text: str | bytes) -> list[str]:
    """Text to WordPiece tokens, by the pure-Python path (the original's algorithm)."""
    return [piece for word in self.basic_tokenizer.tokenize(text)
            for piece in self.wordpiece_tokenizer.tokenize(word)]

  def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
    """Tokens to ids; a token not in the vocabulary raises KeyError (as the original)."""
    return [self.vocab[token] for token in tokens]

  def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
    """Ids to tokens."""
    return [self._id_to_token[int(token_id)] for token_id in ids]

  def encode(self, text: str | bytes) -> list[int]:
    """Text straight to ids: convert_tokens_to_ids(tokenize(text)), through the fast path."""
    return self.encode_batch([text])[0]

  def encode_batch(self, texts: Sequence[str | bytes]) -> list[list[int]]:
    """Encodes many texts at once: the fast path's threads where it agrees, else pure Python."""
    texts = [convert_to_unicode(text) for text in texts]
    if self._fast is None:
      return [self._encode_slowly(text) for text in texts]
    fast_indices = []
    ids: list[list[int] | None] = [None] * len(texts)
    for index, text in enumerate(texts):
      if self._fast.agrees_on(text):
        fast_indices.append(index)
      else:
        ids[index] = self._encode_slowly(text)
    if len(fast_indices) == len(texts):
      return self._fast.encode_batch(texts)
    for index, text_ids in zip(fast_indices,
                               self._fast.encode_batch([texts[i] for i in fast_indices])):
      ids[index] = text_ids
    return ids

  def _encode_slowly(self, text: str) -> list[int]:
    return self.convert_tokens_to_ids(self.tokenize(text))


def _set_rayon_threads(num_threads: int | None) -> None:
  """Sizes rayon's pool, if it has not started yet (it reads the variable only then)."""
  if num_threads is None:
    return
  if _rayon_pool_started and os.environ.get("RAYON_NUM_THREADS") != str(num_threads):
    logging.warning("tokenizers already runs on %s threads; num_threads=%d has no effect",
                    os.environ.get("RAYON_NUM_THREADS", "all"), num_threads)
    return
  os.environ["RAYON_NUM_THREADS"] = str(num_threads)


class _FastWordPiece:
  """The tokenizers pipeline of the original, and a per-character check that it agrees."""

  def __init__(self, vocab: dict[str, int], do_lower_case: bool,
               basic_tokenizer: BasicTokenizer):
    self._tokenizer = tokenizers.Tokenizer(tokenizers_models.WordPiece(
        vocab=vocab, unk_token=special_tokens.UNK_TOKEN,
        max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    self._tokenizer.normalizer = tokenizers_normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=do_lower_case,
        lowercase=do_lower_case)
    self._tokenizer.pre_tokenizer = tokenizers_pre_tokenizers.BertPreTokenizer()
    self._basic_tokenizer = basic_tokenizer
    self._agreeing: set[str] = set()
    self._disagreeing: set[str] = set()
    if do_lower_case:
      # Python lower-cases a word-final Σ to ς, tokenizers always to σ. The context test below
      # sees that too; marking it here keeps every Σ-context (removed controls...) on the slow
      # path.
      self._disagreeing.add(_GREEK_CAPITAL_SIGMA)
    self._classify("".join(chr(code_point) for code_point in range(128)))
    # Most text is ASCII: when all of ASCII agrees, str.isascii() (C speed) settles it.
    self._ascii_agrees = not self._disagreeing.intersection(map(chr, range(128)))

  def agrees_on(self, text: str) -> bool:
    """Whether the fast path gives text the pure-Python path's ids."""
    if self._ascii_agrees and text.isascii():
      return True
    chars = set(text)
    if chars <= self._agreeing:
      return True
    self._classify(chars - self._agreeing - self._disagreeing)
    return not chars & self._disagreeing

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Ids of each text (no [CLS]/[SEP] added)."""
    global _rayon_pool_started
    _rayon_pool_started = True
    # encode_batch_fast skips the character offsets, which nothing here needs.
    encodings = self._tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [encoding.ids for encoding in encodings]

  def _classify(self, chars: Iterable[str]) -> None:
    """Sorts each character into agreeing or disagreeing, by comparing words in a few contexts.

    Every step of both pipelines treats a character the same wherever it stands, except the
    lower-casing of Σ (handled above), so agreeing in these contexts means agreeing anywhere.
    """
    for char in chars:
      contexts = (char, f"a{char}b", f"\u0391{char}", f"{char}\u0391", f"\u4e00{char}\u00e9")
      try:
        agrees = all(self._basic_tokenizer.tokenize(text) == self._words(text) for text in contexts)
      except Exception:  # pylint: disable=broad-except
        agrees = False  # E.g. a lone surrogate, which Rust strings cannot hold.
      (self._agreeing if agrees else self._disagreeing).add(char)

  def _words(self, text: str) -> list[str]:
    normalized = self._tokenizer.normalizer.normalize_str(text)
    return [word for word, _ in self._tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]
