"""Tests of bert_jax/tokenizers/tokenization.py: fixed special ids, encoding paths, training, errors."""

import os
import subprocess
import sys
import textwrap

from absl import flags
import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from bert_jax import errors
from bert_jax.tokenizers import special_tokens
from bert_jax.tokenizers import tokenization
from conftest import synthetic_documents


def test_special_tokens_at_fixed_ids(tokenizer):
  assert special_tokens.SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
  assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
          tokenizer.mask_id) == (0, 1, 2, 3, 4)
  assert tokenizer.convert_ids_to_tokens(range(5)) == list(special_tokens.SPECIAL_TOKENS)
  assert tokenizer.convert_tokens_to_ids(special_tokens.SPECIAL_TOKENS) == [0, 1, 2, 3, 4]


def test_literal_special_token_text_is_plain_text(tokenizer):
  ids = tokenizer.encode("the [MASK] model [CLS] and [SEP] data [PAD]")
  assert ids
  assert not set(ids) & {special_tokens.PAD_ID, special_tokens.CLS_ID, special_tokens.SEP_ID,
                         special_tokens.MASK_ID}


def test_encode_paths_agree(tokenizer):
  texts = ["The model reads every document.", "A small batch of data", "zebra quokka 42"]
  for text in texts:
    pieces = tokenizer.tokenize(text)
    assert all(isinstance(piece, str) for piece in pieces)
    assert tokenizer.encode(text) == tokenizer.convert_tokens_to_ids(pieces)
  assert tokenizer.encode_batch(texts) == [tokenizer.encode(text) for text in texts]
  # Characters never seen in training come out as [UNK].
  assert special_tokens.UNK_ID in tokenizer.encode("zebra quokka")


def test_vocab_size_is_soft_limit(tokenizer, tmp_path):
  assert special_tokens.NUM_SPECIAL_TOKENS < tokenizer.vocab_size <= 200
  # Far more pieces than the tiny corpus holds: trains anyway, with fewer.
  sentences = [s for document in synthetic_documents(10) for s in document]
  model_file = tokenization.train_sentencepiece(sentences, 5000, str(tmp_path / "big"), 1000)
  assert 0 < tokenization.load_tokenizer(model_file).vocab_size < 5000


def _pieces(model_file: str) -> list[tuple[str, float]]:
  model = sentencepiece_model_pb2.ModelProto()
  with open(model_file, "rb") as f:
    model.ParseFromString(f.read())
  return [(piece.piece, piece.score) for piece in model.pieces]


def test_training_is_deterministic_and_leaves_only_final_files(sentencepiece_model, tmp_path):
  sentences = [s for document in synthetic_documents(80) for s in document]
  model_prefix = str(tmp_path / "sub" / "spm")
  contents = []
  for _ in range(2):  # The second run overwrites the first.
    model_file = tokenization.train_sentencepiece(sentences, vocab_size=200,
                                                  model_prefix=model_prefix,
                                                  input_sentence_size=10_000, seed=0)
    assert model_file == model_prefix + ".model"
    assert sorted(os.listdir(tmp_path / "sub")) == ["spm.model", "spm.vocab"]
    with open(model_file, "rb") as f:
      contents.append(f.read())
  assert contents[0] == contents[1]
  assert _pieces(model_file) == _pieces(sentencepiece_model)
  with open(model_prefix + ".vocab") as f:
    assert [line.split("\t")[0] for line in f][:5] == list(special_tokens.SPECIAL_TOKENS)


def test_sampled_training_repeats_across_processes(tmp_path):
  # 1000+ sentences sampled down to 300: the sample, hence the model, must not depend on the
  # process (SentencePiece's own sampler does).
  code = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {os.path.dirname(__file__)!r})
      from conftest import synthetic_documents
      from bert_jax.tokenizers import tokenization
      sentences = [s for d in synthetic_documents(200) for s in d]
      tokenization.train_sentencepiece(sentences, 150, sys.argv[1], 300, seed=3)
  """)
  prefix = str(tmp_path / "spm")
  sentences = [s for document in synthetic_documents(200) for s in document]
  tokenization.train_sentencepiece(sentences, 150, prefix, 300, seed=3)
  with open(prefix + ".model", "rb") as f:
    in_this_process = f.read()
  subprocess.run([sys.executable, "-c", code, prefix], check=True, capture_output=True,
                 cwd=os.path.dirname(os.path.dirname(__file__)))
  with open(prefix + ".model", "rb") as f:
    assert f.read() == in_this_process
  other_seed = tokenization.train_sentencepiece(sentences, 150, str(tmp_path / "other"), 300,
                                                seed=4)
  assert _pieces(other_seed) != _pieces(prefix + ".model")


def test_no_text_is_a_clear_error(tmp_path):
  with pytest.raises(errors.UserError, match="no text"):
    tokenization.train_sentencepiece(["", "  "], 100, str(tmp_path / "spm"), 100)


def test_missing_file_is_a_clear_error(tmp_path):
  missing = str(tmp_path / "nope.model")
  with pytest.raises(errors.UserError, match="nope.model"):
    tokenization.load_tokenizer(missing)


def test_not_a_model_is_a_clear_error(tmp_path):
  path = tmp_path / "garbage.model"
  path.write_bytes(b"this is not a protobuf \xff\xfe")
  with pytest.raises(errors.UserError, match="garbage.model"):
    tokenization.load_tokenizer(str(path))


def test_model_with_other_special_ids_is_rejected(tmp_path):
  # SentencePiece's defaults: <unk>=0, <s>=1, </s>=2, no [MASK].
  sentences = [s for document in synthetic_documents(10) for s in document]
  prefix = str(tmp_path / "default")
  spm.SentencePieceTrainer.Train(sentence_iterator=iter(sentences), model_prefix=prefix,
                                 vocab_size=60, hard_vocab_limit=False, minloglevel=2)
  with pytest.raises(errors.UserError, match="default.model"):
    tokenization.load_tokenizer(prefix + ".model")


def test_sentencepiece_special_ids_and_word_starts(tokenizer):
  assert tokenizer.special_ids == (0, 1, 2, 3, 4)
  starts = tokenizer.word_starts()
  assert starts.dtype == np.bool_ and starts.shape == (tokenizer.vocab_size,)
  pieces = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
  assert starts[:special_tokens.NUM_SPECIAL_TOKENS].all()
  ordinary = list(zip(pieces, starts))[special_tokens.NUM_SPECIAL_TOKENS:]
  assert all(start == piece.startswith("\u2581") for piece, start in ordinary)
  assert 0 < starts.sum() < tokenizer.vocab_size  # Both kinds occur.
  # The first piece of every word of a sentence is a start, the others are not.
  ids = tokenizer.encode("the model reads every document")
  assert starts[ids].sum() == 5 and starts[ids[0]]


def test_load_tokenizer_picks_by_extension(sentencepiece_model, tmp_path):
  assert isinstance(tokenization.load_tokenizer(sentencepiece_model),
                    tokenization.SentencePieceTokenizer)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(special_tokens.SPECIAL_TOKENS + ("hello",)) + "\n")
  wordpiece_tokenizer = tokenization.load_tokenizer(str(vocab), do_lower_case=True)
  assert type(wordpiece_tokenizer).__name__ == "FullTokenizer"
  assert wordpiece_tokenizer.encode("Hello") == [5]


def test_importing_defines_no_flags():
  assert "vocab_size" not in flags.FLAGS and "output" not in flags.FLAGS


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "bert_jax.tokenizers.tokenization", *args],
                        capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_trains_a_model(tmp_path):
  for index, document in enumerate((synthetic_documents(30, seed=0), synthetic_documents(30, 1))):
    # Original format: blank lines between documents, which training ignores.
    (tmp_path / f"part{index}.txt").write_text(
        "\n\n".join("\n".join(sentences) for sentences in document) + "\n")
  prefix = str(tmp_path / "out" / "spm")
  result = _run_cli("train", f"--input={tmp_path}/part*.txt", "--vocab_size=120",
                    f"--output={prefix}")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == prefix + ".model"
  trained = tokenization.load_tokenizer(prefix + ".model")
  assert trained.convert_ids_to_tokens(range(5)) == list(special_tokens.SPECIAL_TOKENS)
  assert 5 < trained.vocab_size <= 120


def test_cli_missing_input_is_a_one_line_error(tmp_path):
  result = _run_cli("train", f"--input={tmp_path}/nothing*.txt", "--vocab_size=100",
                    f"--output={tmp_path}/spm")
  assert result.returncode != 0
  # TensorFlow's start-up log lines aside, one line: ours, naming the glob.
  error_lines = [line for line in result.stderr.splitlines() if "bert_jax" in line]
  assert len(error_lines) == 1 and "nothing*.txt" in error_lines[0]
  assert error_lines[0].startswith("bert_jax.tokenizers.tokenization: error:")
  assert "Traceback" not in result.stderr
  assert not os.listdir(tmp_path)
