"""A user's mistake is one line naming the field, flag or file, before anything is lost.

One test per mistake a new user makes; in-process where the mistake is a check of inputs,
real processes where it is about processes (two runs on one workdir, the command lines).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from bert_jax import errors
from bert_jax import tfds_datasets
from bert_jax.config import validation
from bert_jax.finetuning import encode
from bert_jax.finetuning import finetune
from bert_jax.finetuning.data import finetune_data
from bert_jax.finetuning.data import task_files
from bert_jax.interop import convert
from bert_jax.pretraining import train
from bert_jax.pretraining.data import inputs
from bert_jax.runtime import workdir_lock
from bert_jax.tokenizers import tokenization
from bert_jax.tokenizers import wordpiece
from configs import tiny
from test_finetune import _config as finetune_config
from test_train import REPO, small_config, write_corpus
from test_validation import _error


def _cli(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                              "JAX_PLATFORMS": "cpu"})


def _last_line(result: subprocess.CompletedProcess) -> str:
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return result.stderr.strip().splitlines()[-1]


def test_an_empty_eval_file_stops_fine_tuning_before_the_first_step(tmp_path,
                                                                    sentencepiece_model):
  (tmp_path / "train.csv").write_text("sentence,label\n" + "a few words here,yes\n" * 8)
  (tmp_path / "dev.csv").write_text("sentence,label\n")  # Only a header.
  config = finetune_config("classification", sentencepiece_model,
                           train_file=str(tmp_path / "train.csv"),
                           eval_file=str(tmp_path / "dev.csv"), text_a_key="sentence",
                           label_key="label")
  assert _error(finetune.finetune, config, str(tmp_path / "work")) == (
      f"data.eval_file={tmp_path / 'dev.csv'} holds no example (an empty file, or only a "
      "header?)")
  assert not (tmp_path / "work" / "checkpoints").exists()


def test_encode_never_replaces_its_input_nor_an_existing_output_unasked(tmp_path):
  text = tmp_path / "lines.txt"
  text.write_text("one line\n")
  config = tiny.get_config()
  config.mode = "encode"
  config.encode.update(input_file=str(text), output_file=str(text))
  assert _error(encode.encode_file, config, str(tmp_path)) == (
      f"encode.output_file={text} is encode.input_file: it would replace the input")
  output = tmp_path / "old.npz"
  output.write_bytes(b"earlier embeddings")
  config.encode.output_file = str(output)
  assert _error(encode.encode_file, config, str(tmp_path)) == (
      f"encode.output_file={output} exists: set --config.encode.overwrite=true to replace it")
  assert text.read_text() == "one line\n" and output.read_bytes() == b"earlier embeddings"


def test_a_vocabulary_with_a_token_twice_or_a_directory_is_refused(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nword\n[MASK]\n")
  assert _error(wordpiece.load_vocab, str(vocab)) == (
      f"WordPiece vocabulary '{vocab}' lists '[MASK]' twice (lines 5 and 7)")
  assert _error(tokenization.load_tokenizer, str(tmp_path)) == (
      f"vocab_file '{tmp_path}' is a directory: name the vocab.txt or .model file in it")


def test_config_mistakes_found_before_anything_is_read(tmp_path):
  config = tiny.get_config()
  config.data.dupe_factor = 0
  assert _error(validation.validate, config) == "data.dupe_factor=0 must be at least 1"
  config = tiny.get_config()
  config.init_checkpoint = str(tmp_path / "no_such_run")
  assert _error(validation.validate, config) == (
      f"init_checkpoint={tmp_path / 'no_such_run'} does not exist (nor "
      f"{tmp_path / 'no_such_run'}.index)")
  config = tiny.get_config()
  config.train.num_train_steps = -5  # estimate once printed "-5 steps ... cost $-0".
  assert _error(validation.validate, config) == "train.num_train_steps=-5 must be at least 1"
  config = finetune_config("classification", "")
  config.train.log_every_steps = 0  # Fine-tuning once took this to the first step, after compile.
  assert _error(validation.validate, config) == "train.log_every_steps=0 must be at least 1"


def test_damaged_checkpoint_files_are_one_line(tmp_path):
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text("{not json")
  assert _error(convert.load_params, str(hf)).startswith(
      f"{hf / 'config.json'}: not a JSON model config (")
  (hf / "config.json").write_text(json.dumps({"vocab_size": 30, "hidden_size": 8,
                                              "num_hidden_layers": 1, "num_attention_heads": 2,
                                              "intermediate_size": 16}))
  (hf / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
  assert _error(convert.load_params, str(hf)).startswith(
      f"{hf / 'model.safetensors'}: cannot be read (truncated or not safetensors: ")
  os.remove(hf / "model.safetensors")
  (hf / "pytorch_model.bin").write_bytes(b"not a pickle at all")
  assert _error(convert.load_params, str(hf)).startswith(
      f"{hf / 'pytorch_model.bin'}: cannot be read as tensors only")


def test_the_workdir_must_be_a_directory_and_a_failed_run_leaves_none(tmp_path):
  corpus = write_corpus(str(tmp_path))
  workdir = tmp_path / "a_file"
  workdir.write_text("not a directory")
  assert _error(train.train_and_evaluate, small_config(corpus), str(workdir)) == (
      f"--workdir={workdir} is a file, not a directory")
  # A run that stops on a mistake in its data leaves no empty workdir (checkpoints/, data/).
  config = small_config(corpus)
  config.data.input_files = str(tmp_path / "nothing*.txt")
  assert _error(train.train_and_evaluate, config, str(tmp_path / "new")).startswith(
      "data.input_files: no file matches")
  assert not (tmp_path / "new").exists()


def test_a_live_lock_stops_a_run_and_a_stale_one_is_taken_over(tmp_path, capsys):
  lock = tmp_path / workdir_lock.LOCK_FILENAME
  # Process 1 always runs: a lock it holds is in use.
  lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 1, "started": "then"}))
  with pytest.raises(errors.UserError) as raised:
    with workdir_lock.held(str(tmp_path)):
      pass
  assert str(raised.value) == (
      f"--workdir={tmp_path} is in use by process 1 on {socket.gethostname()} since then: wait "
      f"for that run to end, or delete {lock} if it is gone")
  # A process of this host that has ended: its lock is stale.
  gone = subprocess.Popen(["true"])
  gone.wait()
  lock.write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "started": "then"}))
  with workdir_lock.held(str(tmp_path)):
    assert json.loads(lock.read_text())["pid"] == os.getpid()
  assert f"taking over the stale lock {lock} of process {gone.pid}" in capsys.readouterr().err
  assert not lock.exists()  # Released.


def test_a_second_run_on_a_workdir_in_use_stops_with_one_line(tmp_path):
  corpus = write_corpus(str(tmp_path))
  workdir = tmp_path / "work"
  flags = [f"--workdir={workdir}", "--config=configs/tiny.py", "--config.data.source=text",
           f"--config.data.input_files={corpus}", "--config.model.vocab_size=128",
           "--config.data.max_seq_length=32", "--config.data.max_predictions_per_seq=5",
           "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
           "--config.train.num_train_steps=100000", "--config.train.log_every_steps=1",
           "--config.data.num_eval_documents=6"]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
  with open(tmp_path / "first.out", "w") as out:
    first = subprocess.Popen([sys.executable, "-m", "bert_jax.main", *flags], cwd=REPO, env=env,
                             stdout=out, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 240
    while "train step=" not in (tmp_path / "first.out").read_text():
      assert first.poll() is None and time.time() < deadline, (tmp_path / "first.out").read_text()
      time.sleep(0.5)
    second = _cli("bert_jax.main", *flags)
    assert _last_line(second) == (
        f"bert_jax: error: --workdir={workdir} is in use by process {first.pid} on "
        f"{socket.gethostname()} since "
        f"{json.loads((workdir / 'lock.json').read_text())['started']}: wait for that run to "
        f"end, or delete {workdir / 'lock.json'} if it is gone")
  finally:
    first.terminate()  # SIGTERM: it saves a checkpoint and exits, releasing the lock.
    first.wait(timeout=120)
  assert first.returncode == 0 and not (workdir / "lock.json").exists()


def test_command_line_mistakes_are_one_line_and_keep_what_exists(tmp_path, sentencepiece_model):
  # tokenization train: an existing model is not replaced unasked.
  (tmp_path / "spm.model").write_bytes(b"a workdir's vocabulary")
  (tmp_path / "text.txt").write_text("A sentence.\nAnother one.\n")
  spm_command = "bert_jax.tokenizers.tokenization"
  assert _last_line(_cli(spm_command, "train", f"--input={tmp_path / 'text.txt'}",
                         "--vocab_size=50", f"--output={tmp_path / 'spm'}")) == (
      f"{spm_command}: error: --output={tmp_path / 'spm'}: {tmp_path / 'spm.model'} "
      "exists; pass --overwrite to replace it")
  assert (tmp_path / "spm.model").read_bytes() == b"a workdir's vocabulary"
  # Required flags missing: absl's one line per flag, joined into one.
  assert _last_line(_cli(spm_command, "train")) == (
      f"{spm_command}: error: flag --input=None: Flag --input must have a value other "
      "than None.; flag --vocab_size=None: Flag --vocab_size must have a value other than None.; "
      "flag --output=None: Flag --output must have a value other than None.")
  # A vocabulary smaller than asked for is said, not left for the model config to find out.
  made = _cli(spm_command, "train", f"--input={tmp_path / 'text.txt'}",
              "--vocab_size=1000", f"--output={tmp_path / 'small'}")
  assert made.returncode == 0, made.stderr[-3000:]
  assert made.stdout.strip() == str(tmp_path / "small.model")
  assert (f"{spm_command}: the input gave 18 pieces, fewer than --vocab_size=1000"
          in made.stderr)
  # prepare: bad numbers, and a non-empty output directory.
  out = tmp_path / "prepared"
  out.mkdir()
  (out / "metadata.json").write_text("{}")
  common = ["bert_jax.pretraining.prepare", f"--input_file={tmp_path / 'text.txt'}",
            f"--vocab_file={sentencepiece_model}", f"--output_dir={out}"]
  for flag, message in (
      ("--dupe_factor=0", "--dupe_factor=0 must be at least 1"),
      ("--host_index=2", "--host_index=2 must be between 0 and --num_hosts - 1 = 0"),
      ("--max_seq_length=64", f"--output_dir={out} is not empty: pass --overwrite to replace "
                              "what it holds, or name a new directory")):
    assert _last_line(_cli(*common, flag)) == f"bert_jax.pretraining.prepare: error: {message}"
  # Even with --overwrite, an input with no document stops before anything is replaced.
  (tmp_path / "blank.txt").write_text("\n   \n\t\n")
  assert _last_line(_cli("bert_jax.pretraining.prepare", f"--input_file={tmp_path / 'blank.txt'}",
                         f"--vocab_file={sentencepiece_model}", f"--output_dir={out}",
                         "--overwrite")) == (
      f"bert_jax.pretraining.prepare: error: --input_file={tmp_path / 'blank.txt'}: no document "
      "(only blank lines?)")
  assert (out / "metadata.json").read_text() == "{}"
  # A bad flag value of any command: one line, not absl's two and its usage hint.
  assert _last_line(_cli("bert_jax.interop", f"--input={tmp_path}", f"--output={tmp_path / 'x'}",
                         "--format=bad")) == (
      "bert_jax.interop: error: flag --format=bad: value should be one of <orbax|hf>")
  # A config field misspelt on the command line of estimate (and aot, which parses the same way).
  assert _last_line(_cli("bert_jax.tpu.estimate", "--config=configs/large.py",
                         "--topology=v5litepod-16", "--config.train.bacth_size=8")) == (
      "bert_jax: error: unknown config field train.bacth_size (did you mean "
      "train.batch_size?)")



def test_a_workdir_moved_elsewhere_still_reads(tmp_path):
  config = small_config(write_corpus(str(tmp_path)))
  inputs.resolve(config, str(tmp_path / "here"))  # Trains the vocabulary into here/data.
  os.rename(tmp_path / "here", tmp_path / "there")
  data = inputs.resolve(config, str(tmp_path / "there"))
  assert data.train_files and all(f.startswith(str(tmp_path / "there")) for f in data.train_files)


def test_a_tfds_dataset_that_cannot_be_downloaded_fails_at_once(tmp_path, monkeypatch):
  """Offline, TFDS's downloader retries for minutes; its unreachable hosts are one line now."""
  assert not tfds_datasets.reachable("tfds-host.invalid")  # RFC 2606: never resolves.
  # Behind a proxy a direct connect proves nothing: the probe stands aside.
  for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
               "all_proxy"):
    monkeypatch.delenv(name, raising=False)
  assert not tfds_datasets.behind_proxy()
  monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
  assert tfds_datasets.behind_proxy()
  monkeypatch.delenv("HTTPS_PROXY")
  if tfds_datasets.reachable("drive.google.com") or tfds_datasets.reachable(
      "storage.googleapis.com"):
    pytest.skip("this machine reaches ag_news_subset's hosts: the download would run")
  started = time.monotonic()
  message = _error(tfds_datasets.prepared_builder, "ag_news_subset", str(tmp_path))
  assert time.monotonic() - started < 30
  assert message.startswith(f"TFDS dataset 'ag_news_subset' is not prepared in {tmp_path}")
  assert message.endswith(": none of its hosts (drive.google.com) can be reached from this "
                          "machine; run once with network or set data.tfds_data_dir to where "
                          "it is prepared")
  assert _error(tfds_datasets.prepared_builder, "no_such_dataset", str(tmp_path)) == (
      "TFDS has no dataset 'no_such_dataset'")


def test_a_dead_proxy_is_one_line_within_seconds(tmp_path, monkeypatch):
  """HTTPS_PROXY naming a closed local port: TFDS's downloader would retry through it for
  minutes; the probe tries the proxy itself. One that answers is trusted."""
  for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
               "all_proxy"):
    monkeypatch.delenv(name, raising=False)
  with socket.socket() as listening:
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    assert tfds_datasets.dead_proxy() is None  # It answers.
  # Closed now: connections to it are refused.
  started = time.monotonic()
  message = _error(tfds_datasets.prepared_builder, "ag_news_subset", str(tmp_path))
  assert time.monotonic() - started < 30
  assert message.startswith(f"TFDS dataset 'ag_news_subset' is not prepared in {tmp_path}")
  assert message.endswith(f" and could not be downloaded: the proxy HTTPS_PROXY=http://127.0.0.1:"
                          f"{port} does not answer; start it, unset the variable, or set "
                          "data.tfds_data_dir to where it is prepared")


def test_a_corpus_too_small_for_an_eval_document_stops_before_the_vocabulary(tmp_path):
  (tmp_path / "one.txt").write_text("The only document.\nIt has two sentences.\n")
  config = small_config(str(tmp_path / "one.txt"))
  config.data.num_eval_documents = -1  # The fraction rule, which never holds out half.
  assert _error(inputs.resolve, config, str(tmp_path / "work")).startswith(
      "held out 0 of 1 documents for eval (0.0%): eval_fraction=0.05, at least 10 and at most "
      "200, never more than half: the corpus is too small to hold out a document for eval")
  assert not (tmp_path / "work" / "data" / "vocab.model").exists()


def test_table_rows_cut_short_or_without_a_label_name_the_line(tmp_path):
  def read(text):
    (tmp_path / "train.csv").write_text(text)
    return _error(task_files.read_text_examples, str(tmp_path / "train.csv"), "data.train_file",
                  "train", "sentence", None, "label", False, None, 0)
  assert read('sentence,label\n"an unclosed quote,pos\nnext,neg\n') == (
      f"{tmp_path / 'train.csv'}:3: no value for column 'label': the row has 1 of the header's "
      "2 fields (an unclosed quote, or a missing separator?)")
  assert read("sentence,label\nhello,pos\nworld,\n") == (
      f"{tmp_path / 'train.csv'}:3: column 'label' is empty: every example needs a label")


def test_a_step_directory_as_init_checkpoint_finds_its_workdirs_vocabulary(tmp_path):
  (tmp_path / "run" / "checkpoints" / "10").mkdir(parents=True)
  (tmp_path / "run" / "data").mkdir()
  (tmp_path / "run" / "data" / "metadata.json").write_text(json.dumps(
      {"vocab_file": "vocab.model", "train_files": [], "eval_files": []}))
  config = finetune_config("classification", "")
  config.init_checkpoint = str(tmp_path / "run" / "checkpoints" / "10")
  assert finetune_data.vocab_file(config) == str(tmp_path / "run" / "data" / "vocab.model")


def _older_python() -> str:
  """A Python older than 3.12 on PATH (this machine kind has 3.11), else the test skips."""
  path = next((path for path in map(shutil.which, ("python3.11", "python3.10")) if path), None)
  if path is None:
    pytest.skip("no python3.11 or python3.10 on PATH")
  return path


def test_a_python_older_than_3_12_is_one_line():
  # setup.py's python_requires stops pip on such a Python; this is the line for a checkout run
  # without installing (python3.11 -m bert_jax.main), before jax or anything else is imported.
  old_python = _older_python()
  result = subprocess.run([old_python, "-m", "bert_jax.main", "--help"], capture_output=True,
                          text=True, cwd=REPO, check=False, env={**os.environ, "PYTHONPATH": ""})
  assert result.returncode == 1
  assert result.stdout == ""
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("bert_jax needs Python 3.12 or newer"), lines


def test_pip_on_a_python_older_than_3_12_says_so(tmp_path):
  # pip resolves the pins before python_requires; setup.py's own line comes first.
  old_python = _older_python()
  subprocess.run([old_python, "-m", "venv", str(tmp_path / "venv")], check=True)
  result = subprocess.run([str(tmp_path / "venv/bin/pip"), "install", "-q", "-e", REPO],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert "bert_jax needs Python 3.12 or newer" in result.stdout + result.stderr
