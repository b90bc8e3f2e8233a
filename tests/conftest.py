"""Fixtures shared by the data tests: a synthetic corpus and a tiny SentencePiece model."""

import os
import random
import sys
import tempfile

# torch's Linux wheel on PyPI (the CUDA build) brings triton, which torch imports as soon as
# transformers loads a model. Loaded after TensorFlow (whose LLVM symbols are global), triton's own
# LLVM crashes the process in its static initialisers. It compiles GPU kernels only: left out here.
sys.modules.setdefault("triton", None)

# Tests run on the CPU. The test extra installs libtpu (for test_aot's TPU compiler), and without
# this every process would probe for a TPU, take libtpu's lock file and print its warnings;
# subprocesses of the tests inherit it.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests (and the CLI runs they start) compile the same small programs: one persistent
# compilation cache for all of them, the pytest-xdist workers included, saves minutes.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"bert_jax_tests_xla_cache_{os.getuid()}"))

# transformers beside TensorFlow: its TensorFlow path off, as the export's README tells users
# (its pipelines would otherwise try TF models under Keras 3). Set before anything imports it.
os.environ.setdefault("USE_TF", "0")

import pytest

from bert_jax import tfds_datasets
from bert_jax.tokenizers import tokenization

_WORDS = (
    "the a an model data token sentence vocabulary train step batch layer attention head "
    "mask predict next random document corpus python module function class return value "
    "string list dict file path read write open close error raise test run fast slow small "
    "large number of in on for with from into over under between each every some many "
    "is are was were be been has have had can may must should will would does do did"
).split()


def synthetic_documents(num_documents: int = 40, seed: int = 0) -> list[list[str]]:
  """Documents of 1 to 12 sentences of 3 to 16 words, deterministic in the seed."""
  rng = random.Random(seed)
  documents = []
  for _ in range(num_documents):
    document = []
    for _ in range(rng.randint(1, 12)):
      words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 16))]
      document.append(" ".join(words).capitalize() + ".")
    documents.append(document)
  return documents


@pytest.fixture(scope="session")
def sentencepiece_model(tmp_path_factory) -> str:
  """Path of a ~200-piece SentencePiece model trained on the synthetic corpus."""
  sentences = [s for document in synthetic_documents(80) for s in document]
  model_prefix = str(tmp_path_factory.mktemp("spm") / "spm")
  return tokenization.train_sentencepiece(sentences, vocab_size=200, model_prefix=model_prefix,
                                          input_sentence_size=10_000, seed=0)


@pytest.fixture(scope="session")
def tokenizer(sentencepiece_model) -> tokenization.SentencePieceTokenizer:
  return tokenization.load_tokenizer(sentencepiece_model)


@pytest.fixture
def tfds_mock_hosts(monkeypatch):
  """For tests under tfds.testing.mock_data: the mock serves the datasets, so their download
  hosts count as reachable (this machine is offline; the real probe is tested in
  test_mistakes)."""
  monkeypatch.setattr(tfds_datasets, "reachable", lambda host, port=443: True)


@pytest.fixture(scope="session")
def review_classifier(tmp_path_factory):
  """A small model pre-trained for 2 steps, and a classifier fine-tuned from it for 3 steps on
  review CSVs: (the data directory, the pre-training workdir, the fine-tuning workdir)."""
  # pylint: disable=g-import-not-at-top
  from bert_jax.finetuning import finetune
  from bert_jax.pretraining import train
  from test_finetune import _config, write_reviews
  from test_train import small_config, write_corpus
  directory = tmp_path_factory.mktemp("reviews")
  pretrain_dir, workdir = str(directory / "pretrain"), str(directory / "cls")
  train.train_and_evaluate(small_config(write_corpus(str(directory)), num_train_steps=2),
                           pretrain_dir)
  write_reviews(directory, 24, 12)
  config = _config("classification", "", train_file=str(directory / "train.csv"),
                   eval_file=str(directory / "dev.csv"), text_a_key="review", label_key="stars",
                   max_examples=0)
  config.init_checkpoint = pretrain_dir
  finetune.finetune(config, workdir)
  return directory, pretrain_dir, workdir
