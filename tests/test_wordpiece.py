"""Tests of bert_jax/tokenizers/wordpiece.py: the original BERT's FullTokenizer, and the fast path."""

import random
import unicodedata

import numpy as np
import pytest

from bert_jax import errors
from bert_jax.tokenizers import tokenization
from bert_jax.tokenizers import wordpiece

# Google's layout: [PAD]=0, [unused0..98], then [UNK] [CLS] [SEP] [MASK] at 100-103.
_GOOGLE_HEAD = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] +
                ["[UNK]", "[CLS]", "[SEP]", "[MASK]"])
_WORDS = ["want", "##want", "##ed", "wa", "un", "runn", "##ing", ",", "!", "?", ".", "hello",
          "how", "are", "you", "a", "##a", "b", "##b", "c", "##c", "ab", "abc", "ah", "zz",
          "\u535a", "\u63a8", "\u2014", "$", "5", "e", "οδος", "οδοσ", "HeLLo", "Are", "yoU",
          "Héllo", "e\u0301", "[", "]", "mask", "€"]
# Characters both paths must agree on, and some they do not (private use, a final sigma,
# characters newer than tokenizers' Unicode tables) that the fast path must route around.
_FUZZ_CHARS = ("aAbBcCeEzZ019 .,!?$^`'\"-_[]{}()#@" "\t\n\r\x0b\x0c\x00\x01\x7f\x85"
               "\u00a0\u2028\u2029\u3000\u200b\u200d\ufeff\u00ad\ufffd"
               "éÉèçñÑüÜßİıΣσςΟΔ\u0301\u0308\u0327e\u0301"
               "\u535a\u63a8\u4e00\u3042\u30a2\uac00\U00020000\U0002b820\uf900"
               "\u2014\u2013\u00bf\u00a1\u3002\u300c\u201c\u2026\u20ac\u00a7"
               "\ue000\uf8ff\U000f0000\u0378\u061d\u08e2\u2e5d\u1734\U0001f600\ud800")


def _write_vocab(tmp_path, tokens, name="vocab.txt"):
  path = tmp_path / name
  path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
  return _write_vocab(tmp_path_factory.mktemp("wordpiece"), _GOOGLE_HEAD + _WORDS)


@pytest.fixture(scope="module")
def fuzz_vocab_file(tmp_path_factory):
  chars = sorted(c for c in set(_FUZZ_CHARS + _FUZZ_CHARS.lower())
                 if not c.isspace() and c != "\ud800")
  tokens = _GOOGLE_HEAD + chars + ["##" + c for c in chars] + ["ab", "##ab", "abc", "ea"]
  return _write_vocab(tmp_path_factory.mktemp("fuzz"), tokens)


def _fuzz_texts(num_texts: int, seed: int) -> list[str]:
  rng = random.Random(seed)
  texts = [""]
  for _ in range(num_texts):
    chars = []
    for _ in range(rng.randint(1, 24)):
      if rng.random() < 0.05:  # Any code point at all, assigned or not.
        chars.append(chr(rng.choice([rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)])))
      else:
        chars.append(rng.choice(_FUZZ_CHARS))
    texts.append("".join(chars))
  return texts


@pytest.mark.parametrize("do_lower_case, text, words", [
    (True, " \tHeLLo!how  \n Are yoU?  ", ["hello", "!", "how", "are", "you", "?"]),
    (False, " \tHeLLo!how  \n Are yoU?  ", ["HeLLo", "!", "how", "Are", "yoU", "?"]),
    (True, "H\u00e9llo", ["hello"]),  # Accents go with the case.
    (False, "H\u00e9llo", ["H\u00e9llo"]),
    (True, "e\u0301", ["e"]),  # A combining mark is stripped ...
    (False, "e\u0301", ["e\u0301"]),  # ... only when uncased.
    (True, "\u0301", []),  # A lone combining mark leaves nothing.
    (True, "ah\u535a\u63a8zz", ["ah", "\u535a", "\u63a8", "zz"]),  # CJK: one word per ideograph.
    (True, "\u3042\u3044", ["\u3042\u3044"]),  # Hiragana is not spaced out.
    (True, "a\x00b\ufffdc", ["abc"]),  # NUL and U+FFFD dropped.
    (True, "a\x0bb\x7fc\u200bd\ufeffe", ["abcde"]),  # Cc/Cf controls dropped, not spaces.
    (True, "a\tb\nc\rd", ["a", "b", "c", "d"]),  # ... but \t \n \r are whitespace.
    (True, "a\u00a0b\u3000c\u2028d", ["a", "b", "c", "d"]),  # Zs, and Python's split (U+2028).
    (True, "a$b^c`d", ["a", "$", "b", "^", "c", "`", "d"]),  # All ASCII symbols split.
    (True, "a\u2014b\u00bfc\u300cd", ["a", "\u2014", "b", "\u00bf", "c", "\u300c", "d"]),
    (True, "a\u20acb+c", ["a\u20acb", "+", "c"]),  # € is a symbol (Sc), not punctuation.
    (True, "\u039f\u0394\u039f\u03a3", ["\u03bf\u03b4\u03bf\u03c2"]),  # Final sigma: ς.
    (True, "a\ue000b", ["a\ue000b"]),  # Private use is kept.
    (True, "[MASK]", ["[", "mask", "]"]),  # Literal special tokens are plain text.
    (True, "", []),
    (True, b"caf\xc3\xa9 \xff", ["cafe"]),  # Bytes: UTF-8, invalid bytes dropped.
])
def test_basic_tokenizer_matches_original(do_lower_case, text, words):
  assert wordpiece.BasicTokenizer(do_lower_case).tokenize(text) == words


@pytest.mark.parametrize("text, tokens", [
    ("UNwant\u00e9d,running", ["un", "##want", "##ed", ",", "runn", "##ing"]),
    ("unwanted running", ["un", "##want", "##ed", "runn", "##ing"]),
    ("unwantedX running", ["[UNK]", "runn", "##ing"]),  # One bad piece: the whole word.
    ("xyz", ["[UNK]"]),
    ("a" * 200, ["a"] + ["##a"] * 199),
    ("a" * 201, ["[UNK]"]),  # Longer than 200 characters.
    ("\u039f\u0394\u039f\u03a3", ["οδος"]),
    ("", []),
])
def test_full_tokenizer_matches_original(vocab_file, text, tokens):
  tokenizer = wordpiece.FullTokenizer(vocab_file, do_lower_case=True)
  assert tokenizer.tokenize(text) == tokens
  ids = tokenizer.convert_tokens_to_ids(tokens)
  assert tokenizer.convert_ids_to_tokens(ids) == tokens
  assert tokenizer.encode(text) == ids
  assert tokenizer.encode_batch([text, text]) == [ids, ids]


def test_special_ids_come_from_the_vocabulary(vocab_file):
  tokenizer = tokenization.load_tokenizer(vocab_file)
  assert isinstance(tokenizer, wordpiece.FullTokenizer)
  assert tokenizer.special_ids == (0, 100, 101, 102, 103)
  assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
          tokenizer.mask_id) == (0, 100, 101, 102, 103)
  assert tokenizer.vocab_size == len(_GOOGLE_HEAD) + len(_WORDS)
  assert tokenizer.encode("xyz") == [100]
  with pytest.raises(KeyError):
    tokenizer.convert_tokens_to_ids(["not-in-vocab"])


def test_cased_vocabulary(vocab_file):
  tokenizer = tokenization.load_tokenizer(vocab_file, do_lower_case=False)
  tokens = ["HeLLo", "!", "how", "Are", "yoU", "?"]
  assert tokenizer.tokenize("HeLLo!how Are yoU?") == tokens
  assert tokenizer.encode("HeLLo!how Are yoU?") == tokenizer.convert_tokens_to_ids(tokens)
  assert tokenizer.tokenize("H\u00e9llo e\u0301") == ["H\u00e9llo", "e\u0301"]


def test_missing_special_token_names_file_and_token(tmp_path):
  path = _write_vocab(tmp_path, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"], "nomask.txt")
  with pytest.raises(errors.UserError, match=r"nomask\.txt.*\[MASK\]"):
    wordpiece.FullTokenizer(path)


def test_missing_vocabulary_names_file(tmp_path):
  with pytest.raises(errors.UserError, match="absent.txt"):
    wordpiece.FullTokenizer(str(tmp_path / "absent.txt"))
  with pytest.raises(errors.UserError, match="absent.txt"):
    tokenization.load_tokenizer(str(tmp_path / "absent.txt"))


def test_word_starts(vocab_file):
  tokenizer = wordpiece.FullTokenizer(vocab_file)
  starts = tokenizer.word_starts()
  assert starts.dtype == np.bool_ and starts.shape == (tokenizer.vocab_size,)
  tokens = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
  assert [token for token, start in zip(tokens, starts) if not start] == [
      "##want", "##ed", "##ing", "##a", "##b", "##c"]
  assert starts[list(tokenizer.special_ids)].all()


def test_vocabulary_lines_are_stripped_and_numbered(tmp_path):
  # The id of a token is its line number; surrounding whitespace is not part of the token.
  path = tmp_path / "spaces.txt"
  path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n  hello \r\n\nworld", encoding="utf-8")
  tokenizer = wordpiece.FullTokenizer(str(path))
  assert tokenizer.vocab_size == 8
  assert tokenizer.encode("hello world") == [5, 7]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fast_path_gives_identical_ids_on_fuzz(fuzz_vocab_file, do_lower_case):
  texts = _fuzz_texts(1500, seed=int(do_lower_case))
  fast = wordpiece.FullTokenizer(fuzz_vocab_file, do_lower_case=do_lower_case)
  slow = wordpiece.FullTokenizer(fuzz_vocab_file, do_lower_case=do_lower_case,
                                 use_fast_path=False)
  if not fast.uses_fast_path:
    pytest.skip("tokenizers is not installed")
  expected = [slow.convert_tokens_to_ids(slow.tokenize(text)) for text in texts]
  assert slow.encode_batch(texts) == expected
  assert fast.encode_batch(texts) == expected
  assert [fast.encode(text) for text in texts[:100]] == expected[:100]


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_fuzz_corpus_reaches_where_tokenizers_differs(fuzz_vocab_file, do_lower_case):
  # Unguarded, tokenizers gives other ids on part of the fuzz corpus: the test above would
  # catch a guard that let those texts through.
  fast = wordpiece.FullTokenizer(fuzz_vocab_file, do_lower_case=do_lower_case)
  if not fast.uses_fast_path:
    pytest.skip("tokenizers is not installed")
  texts = [text for text in _fuzz_texts(1500, seed=int(do_lower_case)) if "\ud800" not in text]
  unguarded = fast._fast.encode_batch(texts)  # pylint: disable=protected-access
  expected = [fast.convert_tokens_to_ids(fast.tokenize(text)) for text in texts]
  num_different = sum(a != b for a, b in zip(unguarded, expected))
  assert 0 < num_different < len(texts) // 2


def test_fast_path_on_real_text_stays_fast(vocab_file):
  tokenizer = wordpiece.FullTokenizer(vocab_file)
  if not tokenizer.uses_fast_path:
    pytest.skip("tokenizers is not installed")
  texts = ["hello, how are you?", "Un wanted running!", "ah \u535a\u63a8 zz caf\u00e9"]
  tokenizer.encode_batch(texts)
  # Every character seen agrees: nothing of ordinary text goes the slow way.
  assert all(tokenizer._fast.agrees_on(text) for text in texts)  # pylint: disable=protected-access
  assert not tokenizer._fast.agrees_on("\u039f\u03a3")  # pylint: disable=protected-access


def test_matches_transformers_bert_tokenizer(vocab_file):
  transformers = pytest.importorskip("transformers")
  texts = ["UNwant\u00e9d,running", "HeLLo!how  Are yoU?", "ah\u535a\u63a8zz", "a\x00b\ufffdc",
           "a$b^c`d e\u2014f", "a" * 201, "xyz unwantedX", ""]
  for do_lower_case in (True, False):
    ours = wordpiece.FullTokenizer(vocab_file, do_lower_case=do_lower_case)
    theirs = transformers.BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    for text in texts:
      assert unicodedata.normalize("NFC", text) == text  # HF's BertTokenizer NFCs first.
      assert ours.tokenize(text) == theirs.tokenize(text), text
      assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
