"""A bad config is one line naming the field, before anything is built, written or compiled."""

import os
import subprocess
import sys

import jax
import ml_collections
import pytest
from jax.sharding import AbstractMesh

from bert_jax import errors
from bert_jax.config import validation
from bert_jax.pretraining.data import inputs
from bert_jax.runtime import sharding
from bert_jax.runtime import train_state
from configs import base
from configs import finetune
from configs import glue
from configs import large
from configs import large_lamb
from configs import ner
from configs import squad
from configs import tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _error(function, *args) -> str:
  with pytest.raises(errors.UserError) as raised:
    function(*args)
  message = str(raised.value)
  assert "\n" not in message, message
  return message


def _mesh(data: int, fsdp: int = 1, tensor: int = 1) -> AbstractMesh:
  return AbstractMesh((data, fsdp, tensor), sharding.MESH_AXES)


def test_shipped_configs_pass():
  for module in (base, tiny, large, large_lamb, finetune, glue, squad, ner):
    validation.check_fields(module.get_config())
  validation.validate(tiny.get_config())
  validation.validate_batch_sizes(tiny.get_config(), _mesh(8))


def test_hidden_size_not_divisible_by_heads():
  config = tiny.get_config()
  config.model.num_attention_heads = 3
  assert _error(validation.validate, config).startswith(
      "model.hidden_size=128 is not divisible by model.num_attention_heads=3")


def test_rng_impl():
  config = tiny.get_config()
  config.rng_impl = "philox"
  assert _error(validation.validate, config).startswith("rng_impl='philox' is not one of")
  for impl in validation.RNG_IMPLS:  # Each name jax.random.key accepts.
    config.rng_impl = impl
    validation.validate(config)
    assert train_state.root_key(config).dtype == jax.random.key(0, impl=impl).dtype


def test_global_batch_not_divisible_by_data_parallel_size():
  config = tiny.get_config()  # batch_size 32, eval_batch_size 64.
  config.train.batch_size = 12
  assert _error(validation.validate_batch_sizes, config, _mesh(8)).startswith(
      "train.batch_size=12 is not divisible by the data-parallel size 8")
  # fsdp is data parallel too; tensor is not.
  validation.validate_batch_sizes(config, _mesh(2, 2, 2))
  assert "data-parallel size 8" in _error(validation.validate_batch_sizes, config,
                                          _mesh(2, 4))
  config.train.update(batch_size=32, eval_batch_size=20)
  assert _error(validation.validate_batch_sizes, config, _mesh(8)).startswith(
      "train.eval_batch_size=20")
  config.train.update(eval_batch_size=64, grad_accum_steps=3)
  assert "train.grad_accum_steps=3" in _error(validation.validate_batch_sizes, config,
                                              _mesh(8))


def test_max_seq_length_over_max_position_embeddings():
  config = tiny.get_config()
  config.data.max_seq_length = 256
  assert _error(validation.validate, config) == (
      "data.max_seq_length=256 is larger than model.max_position_embeddings=128")


@pytest.mark.parametrize("predictions", [0, 126, 1000])
def test_max_predictions_per_seq_out_of_range(predictions):
  config = tiny.get_config()
  config.data.max_seq_length = 128  # At most 125 tokens besides [CLS] and two [SEP]s.
  config.data.max_predictions_per_seq = predictions
  assert _error(validation.validate, config).startswith(
      f"data.max_predictions_per_seq={predictions} must be between 1 and "
      "data.max_seq_length - 3 = 125")
  config.data.max_predictions_per_seq = 125
  validation.validate(config)


def test_vocab_size_against_the_tokenizer():
  config = tiny.get_config()  # model.vocab_size 4000.
  # A tokenizer vocabulary larger than the embedding table: ids past it gather garbage.
  assert _error(inputs.check_vocab, config.model.vocab_size, 4001).startswith(
      "model.vocab_size=4000 is smaller than the tokenizer's vocabulary (4001)")
  # Smaller is allowed on purpose (padded vocabularies; SentencePiece stopping early on a small
  # corpus): train.py prints a note instead.
  inputs.check_vocab(config.model.vocab_size, 4000)
  inputs.check_vocab(config.model.vocab_size, 3712)


def test_unknown_field_in_a_config_file():
  config = tiny.get_config()
  config.train.bacth_size = 8  # What someone's own configs/x.py might do: silently unused.
  assert _error(validation.check_fields, config) == (
      "unknown config field train.bacth_size: bert_jax/config/base.py has no such field (did you "
      "mean train.batch_size?)")
  # validate (what train.py and aot.py call) checks it too.
  assert _error(validation.validate, config).startswith("unknown config field")

  # Fine-tuning configs are checked against configs/finetune.py, whose data fields differ.
  config = glue.get_config()
  config.data.train_files = "x.csv"
  assert "data.train_files: bert_jax/config/finetune.py" in _error(validation.check_fields,
                                                           config)
  config = finetune.get_config()
  # A pre-training field: fine-tuning configs have it (they extend base.py) but never read it.
  config.data.input_files = "pretraining/*.txt"
  assert _error(validation.validate, config) == (
      "data.input_files='pretraining/*.txt' is a pre-training field: fine-tuning does not read it")


def test_missing_field_and_unknown_mode():
  config = tiny.get_config()
  del config.train["batch_size"]
  assert _error(validation.check_fields, config).startswith(
      "config field train.batch_size is missing")
  config = tiny.get_config()
  config.mode = "distill"
  assert _error(validation.check_fields, config) == (
      "config.mode='distill' is not 'pretrain', 'eval', 'encode', 'finetune' or 'predict'")


def test_unknown_override_names_the_whole_path():
  config = tiny.get_config()
  assert validation.unknown_override(config, "train.batch_size") is None
  assert validation.unknown_override(config, "train.batch_sise") == (
      "unknown config field train.batch_sise (did you mean train.batch_size?)")
  assert validation.unknown_override(config, "trian.batch_size") == (
      "unknown config field trian.batch_size (did you mean train?)")
  assert validation.unknown_override(config, "train.batch_size.x") == (
      "unknown config field train.batch_size.x")


def test_mesh_not_matching_the_devices():
  def mesh(**sizes):
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, **sizes})
  assert sharding.mesh_shape(mesh(), 8) == (8, 1, 1)
  for sizes, field in (({"data": 3}, "data*fsdp*tensor = 3 but there are 8 devices"),
                       ({"fsdp": 3}, "do not divide"),
                       ({"data": -1, "fsdp": -1}, "at most one of mesh.data"),
                       ({"tensor": 0}, "mesh.tensor=0")):
    message = _error(sharding.mesh_shape, mesh(**sizes), 8)
    assert message.startswith("mesh") and field in message, message


# ---- The command line: one line on stderr, exit status 1, nothing written ----

def _run_main(workdir, *args, env=None, cwd=REPO):
  result = subprocess.run(
      [sys.executable, "-m", "bert_jax.main", f"--workdir={workdir}", *args], cwd=cwd,
      capture_output=True, text=True, timeout=120,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert not os.path.exists(workdir)  # Nothing was written before the error.
  return result.stderr.strip().splitlines()[-1]


def test_cli_unknown_override_and_missing_config_file(tmp_path):
  workdir = tmp_path / "work"
  assert _run_main(workdir, "--config=configs/tiny.py", "--config.train.batch_sise=8") == (
      "bert_jax: error: unknown config field train.batch_sise (did you mean "
      "train.batch_size?)")
  assert _run_main(workdir, "--config=configs/nothere.py", "--config.train.batch_size=8") == (
      "bert_jax: error: --config=configs/nothere.py: no such file")


def test_cli_unknown_field_in_a_config_file(tmp_path):
  config_file = tmp_path / "my_config.py"
  config_file.write_text("from configs import tiny\n\n\ndef get_config():\n"
                         "  config = tiny.get_config()\n  config.train.bacth_size = 8\n"
                         "  return config\n")
  assert _run_main(tmp_path / "work", f"--config={config_file}") == (
      "bert_jax: error: unknown config field train.bacth_size: bert_jax/config/base.py has no such "
      "field (did you mean train.batch_size?)")


def test_config_files_by_absolute_path_from_any_directory(tmp_path):
  """The schema is inside the package: the repository's config files (one of them built on
  another) and one's own, run from elsewhere, are loaded and checked."""
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  large_lamb = os.path.join(REPO, "configs", "large_lamb.py")
  assert _run_main(tmp_path / "work", f"--config={large_lamb}", "--config.train.batch_size=0",
                   cwd=elsewhere) == "bert_jax: error: train.batch_size=0 must be at least 1"
  own = elsewhere / "mine.py"
  own.write_text("from bert_jax.config import finetune\n\n\ndef get_config():\n"
                 "  config = finetune.get_config()\n  config.train.bacth_size = 8\n"
                 "  return config\n")
  assert _run_main(tmp_path / "work", f"--config={own}", cwd=elsewhere) == (
      "bert_jax: error: unknown config field train.bacth_size: bert_jax/config/finetune.py has "
      "no such field (did you mean train.batch_size?)")


def test_cli_mesh_not_matching_the_devices(tmp_path):
  last = _run_main(tmp_path / "work", "--config=configs/tiny.py", "--config.mesh.data=3",
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8",
                        "JAX_PLATFORMS": "cpu"})
  assert last == "bert_jax: error: mesh: data*fsdp*tensor = 3 but there are 8 devices"
