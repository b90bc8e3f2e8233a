"""mode='eval' and mode='encode' on a tiny model pre-trained for two steps."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from bert_jax import errors
from bert_jax.finetuning import encode
from bert_jax.finetuning import finetune
from bert_jax.pretraining import evaluation
from bert_jax.pretraining import train
from configs import finetune as finetune_config
from configs import tiny
from test_train import REPO, small_config, write_corpus

# A text, a pair, an empty line, the first text again, and the pair's A alone.
LINES = ["alpha beta gamma river", "river stone\tlight water", "", "alpha beta gamma river",
         "river stone"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  """(corpus file, workdir, the final eval metrics) of a two-step pre-training run."""
  directory = tmp_path_factory.mktemp("pretrained")
  corpus = write_corpus(str(directory))
  workdir = str(directory / "work")
  final_metrics = train.train_and_evaluate(small_config(corpus, num_train_steps=2), workdir)
  return corpus, workdir, final_metrics


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("text") / "lines.txt"
  path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
  return str(path)


def _config(corpus: str, mode: str, **encode_fields):
  config = small_config(corpus, num_train_steps=2)
  config.mode = mode
  config.encode.update(encode_fields)
  return config


@pytest.fixture(scope="module")
def encoded(pretrained, text_file):
  """The .npz of LINES, from the pre-trained workdir, in batches of 4 on one device."""
  corpus, workdir, _ = pretrained
  return encode.encode_file(_config(corpus, "encode", input_file=text_file, batch_size=4),
                            workdir)


def _flags(config, reference, prefix: str = "") -> list[str]:
  """--config.a.b=v for every field where `config` differs from `reference`."""
  flags = []
  for name, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flags += _flags(value, reference[name], f"{prefix}{name}.")
    elif value != reference[name]:
      flags.append(f"--config.{prefix}{name}={value}")
  return flags


def _run_main(flags: list[str], num_devices: int) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={num_devices}"}
  return subprocess.run([sys.executable, "-m", "bert_jax.main", "--config=configs/tiny.py",
                         *flags], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)


def _snapshot(directory: str) -> dict[str, int]:
  """Every path under `directory` and its modification time."""
  paths = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(root, name)
      paths[os.path.relpath(path, directory)] = os.stat(path).st_mtime_ns
  return paths


def test_eval_gives_the_final_eval_of_training_and_leaves_checkpoints_alone(pretrained, capsys):
  corpus, workdir, final_metrics = pretrained
  checkpoints = os.path.join(workdir, "checkpoints")
  before = _snapshot(checkpoints)
  capsys.readouterr()

  results = evaluation.evaluate_checkpoint(_config(corpus, "eval"), workdir)

  assert results == final_metrics
  out = capsys.readouterr().out
  assert "eval step=2 " in out and "most_frequent_token_accuracy=" in out
  with open(os.path.join(workdir, "eval_results.json")) as f:
    saved = json.load(f)
  assert saved == {"step": 2, "checkpoint": os.path.join(checkpoints, "2"), **final_metrics}
  assert _snapshot(checkpoints) == before


def test_encode_embeds_every_line_in_order(pretrained, text_file, encoded, tmp_path):
  corpus, workdir, _ = pretrained
  assert encoded == os.path.join(workdir, "embeddings.npz")
  smaller_batches = encode.encode_file(_config(
      corpus, "encode", input_file=text_file, batch_size=2,
      output_file=str(tmp_path / "out" / "batch2.npz")), workdir)
  with np.load(encoded) as by_4, np.load(smaller_batches) as by_2:
    assert sorted(by_4.files) == ["cls", "mean", "pooled"]
    for name in by_4.files:
      embeddings = by_4[name]
      assert embeddings.shape == (5, 32) and embeddings.dtype == np.float32, name
      assert np.all(np.isfinite(embeddings)), name
      np.testing.assert_array_equal(embeddings[0], embeddings[3], err_msg=name)
      np.testing.assert_allclose(by_2[name], embeddings, atol=1e-6, err_msg=name)
      # The pair reads its B too: not the embedding of A alone.
      assert not np.allclose(embeddings[1], embeddings[4], atol=1e-4), name


def test_eval_without_params_is_a_one_line_error(pretrained, tmp_path):
  corpus, _, _ = pretrained
  workdir = str(tmp_path / "empty")
  with pytest.raises(errors.UserError) as raised:
    evaluation.evaluate_checkpoint(_config(corpus, "eval"), workdir)
  message = str(raised.value)
  assert "--workdir=" in message and "config.init_checkpoint" in message, message
  assert "\n" not in message
  assert not os.path.exists(workdir)  # Nothing was prepared or created.


@pytest.mark.parametrize("contents, expected", [
    (None, "encode.input_file={path}: no such file"),
    (b"fine\n\xff not utf-8\n", "encode.input_file={path}: line 2 is not UTF-8"),
    (b"", "encode.input_file={path} is empty"),
])
def test_bad_encode_input_is_a_one_line_error(pretrained, tmp_path, contents, expected):
  corpus, workdir, _ = pretrained
  path = tmp_path / "input.txt"
  if contents is not None:
    path.write_bytes(contents)
  with pytest.raises(errors.UserError) as raised:
    encode.encode_file(_config(corpus, "encode", input_file=str(path)), workdir)
  message = str(raised.value)
  assert message.startswith(expected.format(path=path)), message
  assert "\n" not in message


def test_main_encodes_from_init_checkpoint_on_two_devices(pretrained, text_file, encoded,
                                                         tmp_path):
  _, workdir, _ = pretrained
  output_dir = tmp_path / "cli"
  run = _run_main([f"--workdir={output_dir}", "--config.mode=encode",
                   f"--config.init_checkpoint={workdir}",
                   f"--config.encode.input_file={text_file}", "--config.encode.batch_size=4",
                   "--config.data.max_seq_length=32", "--config.model.dtype=float32"],
                  num_devices=2)
  assert run.returncode == 0, run.stderr[-3000:]
  output_file = output_dir / "embeddings.npz"
  assert (f"Encoded 5 lines of {text_file} into {output_file}: 'cls', 'pooled' and 'mean', "
          f"float32 [5, 32] each") in run.stdout
  # Batches split over a 2-device mesh, the params read through init_checkpoint: the same.
  with np.load(output_file) as two_devices, np.load(encoded) as one_device:
    for name in one_device.files:
      np.testing.assert_allclose(two_devices[name], one_device[name], atol=1e-5, err_msg=name)


def test_main_evaluates_on_a_tensor_parallel_mesh(pretrained):
  corpus, workdir, final_metrics = pretrained
  flags = _flags(_config(corpus, "eval"), tiny.get_config())
  run = _run_main([f"--workdir={workdir}", *flags, "--config.mesh.data=1",
                   "--config.mesh.tensor=2"], num_devices=2)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "eval step=2 " in run.stdout
  with open(os.path.join(workdir, "eval_results.json")) as f:
    saved = json.load(f)
  assert saved["step"] == 2
  for name, value in final_metrics.items():
    assert saved[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_encode_reads_the_encoder_of_a_fine_tuning_workdir(pretrained, text_file, encoded,
                                                           tmp_path):
  corpus, pretrain_dir, _ = pretrained
  with open(tmp_path / "train.csv", "w") as f:
    f.write("review,stars\n" + "".join(f"alpha river {i},{i % 2}\n" for i in range(8)))
  config = finetune_config.get_config()
  config.update(task="classification", init_checkpoint=pretrain_dir)
  config.data.update(train_file=str(tmp_path / "train.csv"), eval_file=str(tmp_path / "train.csv"),
                     text_a_key="review", label_key="stars", max_seq_length=32)
  config.train.update(batch_size=2, eval_batch_size=2, num_train_steps=1, learning_rate=1e-2)
  fine_tuned = str(tmp_path / "fine_tuned")
  finetune.finetune(config, fine_tuned)

  # The fine-tuning workdir as the run's own; its vocabulary found through its saved config.
  written = encode.encode_file(_config(corpus, "encode", input_file=text_file), fine_tuned)
  with np.load(written) as after, np.load(encoded) as before:
    assert after["mean"].shape == (5, 32) and np.all(np.isfinite(after["mean"]))
    # One step of fine-tuning moved the encoder.
    assert not np.allclose(after["mean"], before["mean"], atol=1e-6)
