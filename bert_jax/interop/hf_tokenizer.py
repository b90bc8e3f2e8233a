"""A bert_jax vocabulary as tokenizer files `transformers.AutoTokenizer` loads, same ids.

- WordPiece (a vocab.txt): the file itself, with a tokenizer_config.json naming BertTokenizer
  and the casing (`do_lower_case`). transformers builds its fast BertTokenizer from it; on
  ordinary text its ids are the original's (the rare characters where HF's Unicode tables
  differ are listed in tokenizers/wordpiece.py).
- SentencePiece (the unigram `.model` bert_jax trains): a tokenizer.json for HF `tokenizers`
  that reproduces it: the model's pieces and scores, its own normaliser (the precompiled NFKC
  map, then the whitespace SentencePiece collapses), '▁' before each word, and
  [CLS] a [SEP] b [SEP] around the text. `write` encodes CHECK_TEXTS both ways and refuses a
  model whose ids would differ. Where they can still differ: HF's unigram breaks exact ties
  (one repeated character split in two orders, the same score) the other way, and its
  normaliser drops a combining mark right after a character NFKC expands
  (docs/converting.md has the counts).

The special tokens are added as special tokens: in text given to the HF tokenizer, the literal
string "[MASK]" is the mask token (what fill-mask pipelines need), while bert_jax's own
SentencePiece tokenizer reads it as text.
"""

import json
import os
import re

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
import tensorflow as tf
import tokenizers
from tokenizers import decoders
from tokenizers import models
from tokenizers import normalizers
from tokenizers import pre_tokenizers
from tokenizers import processors

from bert_jax import errors
from bert_jax.tokenizers import special_tokens

# Checked at every export: words, casing, digits, accents and other scripts, runs of spaces,
# tabs, punctuation runs and characters a small vocabulary lacks.
CHECK_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "  Leading, trailing   and\trepeated   whitespace.  ",
    "Numbers 1,234.56 and dates 2026-12-05; e-mail: someone@example.com!",
    "Café naïve résumé Ångström ﬁ ① ＡＢＣ",
    "Привет мир, 你好世界, こんにちは, مرحبا",
    "Emoji 🙂🚀 and symbols ©®™ §¶ «quotes» “curly”",
    "don't can't won't (parenthesised) [bracketed] {braced}",
)
_TOKENIZER_CONFIG = "tokenizer_config.json"


def _special_tokens_config() -> dict[str, str]:
  return {"unk_token": special_tokens.UNK_TOKEN, "sep_token": special_tokens.SEP_TOKEN,
          "pad_token": special_tokens.PAD_TOKEN, "cls_token": special_tokens.CLS_TOKEN,
          "mask_token": special_tokens.MASK_TOKEN}


def _write_json(path: str, values: dict) -> None:
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(values, indent=2, sort_keys=True) + "\n")


def sentencepiece_tokenizer(model_file: str) -> tokenizers.Tokenizer:
  """The HF `tokenizers` equivalent of a bert_jax SentencePiece unigram model.

  Raises:
    errors.UserError: If the model is not one `tokenizers` can reproduce (BPE, byte fallback).
  """
  proto = sentencepiece_model_pb2.ModelProto()
  with tf.io.gfile.GFile(model_file, "rb") as f:
    proto.ParseFromString(f.read())
  trainer, normalizer = proto.trainer_spec, proto.normalizer_spec
  if trainer.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
    raise errors.UserError(f"{model_file}: a SentencePiece model of type "
                           f"{trainer.model_type}, not unigram; only unigram models export")
  if trainer.byte_fallback:
    raise errors.UserError(f"{model_file}: byte_fallback models do not export (HF's unigram "
                           "would give [UNK] where it gives bytes)")
  tokenizer = tokenizers.Tokenizer(models.Unigram(
      [(p.piece, p.score) for p in proto.pieces], unk_id=trainer.unk_id, byte_fallback=False))
  # Characters the model's normaliser turns into a space become one first: HF applies the
  # precompiled map to whole grapheme clusters and would drop a combining mark after one.
  processor = _processor(model_file)
  spaces = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and c != 0x20
                   and processor.Normalize(f"a{chr(c)}b") == "\u2581a\u2581b")
  steps = [normalizers.Replace(tokenizers.Regex(f"[{re.escape(spaces)}]"), " ")] if spaces else []
  if normalizer.precompiled_charsmap:
    steps.append(normalizers.Precompiled(normalizer.precompiled_charsmap))
  if normalizer.remove_extra_whitespaces:
    steps += [normalizers.Strip(), normalizers.Replace(tokenizers.Regex(" {2,}"), " ")]
  tokenizer.normalizer = normalizers.Sequence(steps)
  prepend = "always" if normalizer.add_dummy_prefix else "never"
  # Words first, then '▁' before each: the same pieces as '▁' for every space, but a token's
  # offsets then cover its word only, not the space before it (a QA answer's text).
  tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.WhitespaceSplit(),
      pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=prepend)])
  tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=prepend)
  tokenizer.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                                for t in special_tokens.SPECIAL_TOKENS])
  cls, sep = special_tokens.CLS_TOKEN, special_tokens.SEP_TOKEN
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f"{cls} $A {sep}", pair=f"{cls} $A:0 {sep}:0 $B:1 {sep}:1",
      special_tokens=[(cls, special_tokens.CLS_ID), (sep, special_tokens.SEP_ID)])
  return tokenizer


def _processor(model_file: str) -> spm.SentencePieceProcessor:
  processor = spm.SentencePieceProcessor()
  with tf.io.gfile.GFile(model_file, "rb") as f:
    processor.LoadFromSerializedProto(f.read())
  return processor


def _check_same_ids(model_file: str, tokenizer: tokenizers.Tokenizer) -> None:
  processor = _processor(model_file)
  for text in CHECK_TEXTS:
    ours = processor.Encode(text, out_type=int)
    theirs = tokenizer.encode(text, add_special_tokens=False).ids
    if ours != theirs:
      raise errors.UserError(f"{model_file}: its tokenizer.json would give other ids than the "
                             f"model on {text!r} ({theirs} vs {ours}); not exported")


def write(vocab_file: str, do_lower_case: bool, directory: str, model_max_length: int) -> str:
  """Writes the tokenizer files of `vocab_file` into `directory`.

  Args:
    vocab_file: A SentencePiece '.model' or a WordPiece vocab.txt, as the run used it.
    do_lower_case: WordPiece casing (SentencePiece models carry their own normalisation).
    directory: An existing directory (the export's).
    model_max_length: The longest sequence the model takes (max_position_embeddings).

  Returns:
    The files written, by name.
  """
  config = {**_special_tokens_config(), "model_max_length": model_max_length,
            "model_input_names": ["input_ids", "token_type_ids", "attention_mask"]}
  if vocab_file.endswith(".model"):
    tokenizer = sentencepiece_tokenizer(vocab_file)
    _check_same_ids(vocab_file, tokenizer)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    # The model itself too: bert_jax reads it back (fine-tuning from the exported directory).
    tf.io.gfile.copy(vocab_file, os.path.join(directory, "vocab.model"))
    config.update(tokenizer_class="PreTrainedTokenizerFast", clean_up_tokenization_spaces=False)
    names = ["tokenizer.json", "vocab.model"]
  else:
    tf.io.gfile.copy(vocab_file, os.path.join(directory, "vocab.txt"))
    config.update(tokenizer_class="BertTokenizer", do_lower_case=do_lower_case,
                  tokenize_chinese_chars=True, strip_accents=None,
                  clean_up_tokenization_spaces=True)
    names = ["vocab.txt"]
  _write_json(os.path.join(directory, _TOKENIZER_CONFIG), config)
  _write_json(os.path.join(directory, "special_tokens_map.json"), _special_tokens_config())
  return names + [_TOKENIZER_CONFIG, "special_tokens_map.json"]
