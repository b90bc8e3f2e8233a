"""Multi-host: two local processes joined by jax.distributed (gloo) over one 8-device mesh.

Each process has 4 fake CPU devices, so the processes together look like two hosts of a pod.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from bert_jax import errors
from bert_jax.runtime import distributed
from test_train import REPO, write_corpus

_WORKER = os.path.join(REPO, "tests", "distributed_worker.py")
# Generous: on 2 busy cores a process takes ~40 s; a hang must fail, not block.
_TIMEOUT_S = 240


def _env(devices: int) -> dict[str, str]:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_processes(commands: list[list[str]], envs: list[dict[str, str]] | dict[str, str]
                   ) -> list[subprocess.CompletedProcess]:
  """Starts the commands at once (they wait for each other) and waits for all of them.

  Output goes to files, not pipes: waiting on one process while another blocks on a full pipe
  would hang both at their next collective.
  """
  if isinstance(envs, dict):
    envs = [envs] * len(commands)
  outputs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in commands]
  processes = [subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr,
                                text=True)
               for command, env, (stdout, stderr) in zip(commands, envs, outputs)]
  deadline = time.monotonic() + _TIMEOUT_S
  results = []
  try:
    for command, process, (stdout, stderr) in zip(commands, processes, outputs):
      process.wait(timeout=max(deadline - time.monotonic(), 1))
      stdout.seek(0)
      stderr.seek(0)
      results.append(subprocess.CompletedProcess(command, process.returncode, stdout.read(),
                                                 stderr.read()))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
    for stdout, stderr in outputs:
      stdout.close()
      stderr.close()
  return results


def test_two_processes_train_exactly_as_one(tmp_path):
  """3 steps on a fixed batch, each process feeding its rows = the same steps in one process."""
  port = _free_port()
  multi, single = str(tmp_path / "multi.npz"), str(tmp_path / "single.npz")
  # All three at once: each process keeps about one core busy, and the reference (one
  # process, 8 devices) needs nothing from the other two.
  runs = _run_processes(
      [[sys.executable, _WORKER, multi, "2", str(i), str(port)] for i in range(2)]
      + [[sys.executable, _WORKER, single, "1", "0"]],
      [_env(4), _env(4), _env(8)])
  for run in runs:
    assert run.returncode == 0, run.stderr[-3000:]
  multi, single = np.load(multi), np.load(single)
  assert sorted(multi) == sorted(single)
  for name in multi:
    if name.startswith("batch/"):
      # The processes' rows, put together, are the whole batch in its order.
      np.testing.assert_array_equal(multi[name], single[name], err_msg=name)
    else:
      # float32 with the same mesh but other collectives (gloo across processes) summing in
      # another order: seen ~1e-6 relative, tolerance 10x that.
      np.testing.assert_allclose(multi[name], single[name], rtol=1e-5, atol=1e-6, err_msg=name)
  # Rows in the wrong place change the result far beyond that tolerance (dropout differs per
  # row), so the comparison above would catch a process feeding the wrong rows.
  assert abs(float(single["wrong_rows_loss"]) - float(single["step0/loss"])) > 1e-3


def test_cli_with_two_processes_checkpoints_and_one_process_resumes(tmp_path):
  """The real main on 2 processes (shared workdir, a 2x2x2 mesh), then one process on one
  device goes on from its checkpoint."""
  corpus = write_corpus(str(tmp_path))
  workdir = tmp_path / "work"
  # float32: runs on different meshes are compared to float32 rounding.
  command = [sys.executable, "-m", "bert_jax.main", "--config=configs/tiny.py",
             f"--workdir={workdir}", "--config.data.source=text", "--config.model.dtype=float32",
             f"--config.data.input_files={corpus}", "--config.model.vocab_size=128",
             "--config.model.hidden_size=32", "--config.model.num_hidden_layers=1",
             "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64",
             "--config.data.max_seq_length=32", "--config.data.max_predictions_per_seq=5",
             "--config.data.num_eval_documents=6", "--config.train.batch_size=8",
             "--config.train.eval_batch_size=8", "--config.train.log_every_steps=1",
             "--config.train.max_eval_steps=2", "--config.train.checkpoint_every_steps=2"]
  port = _free_port()
  first = _run_processes(
      [command + ["--config.train.num_train_steps=2", f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={i}", "--config.mesh.data=2",
                  "--config.mesh.fsdp=2", "--config.mesh.tensor=2"] for i in range(2)], _env(4))
  for run in first:
    assert run.returncode == 0, run.stderr[-3000:]
  lead, other = first
  assert "Process 0 of 2" in lead.stdout
  assert "train step=1 " in lead.stdout and "train step=2 " in lead.stdout
  assert "eval step=2 " in lead.stdout
  # Progress and metrics come from process 0 only. Process 1 prints one line of its own; the
  # rest is gloo's "[Gloo] Rank R is connected to N peer ranks. Expected ..." messages, written
  # from several threads, so they interleave at any point of a line: after our line, only the
  # words of that message may remain.
  first_line, _, rest = other.stdout.partition("\n")
  assert first_line.startswith("Process 1 of 2"), other.stdout
  gloo_words = {"Gloo", "Rank", "is", "connected", "to", "peer", "ranks", "Expected", "number",
                "of"}
  assert set(re.findall(r"[A-Za-z]+", rest)) <= gloo_words, other.stdout
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
  assert sorted(os.listdir(workdir / "tensorboard")) == ["eval", "train"]

  # One process, one device: the checkpoint crosses process counts and meshes.
  second = subprocess.run(command + ["--config.train.num_train_steps=3"], cwd=REPO, env=_env(1),
                          capture_output=True, text=True, timeout=_TIMEOUT_S)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resumed from the checkpoint at step 2" in second.stdout
  assert "Preparing" not in second.stdout  # Process 0 prepared the data once, for all.
  assert "train step=3 " in second.stdout and "train step=2 " not in second.stdout
  assert "3" in os.listdir(workdir / "checkpoints")
  # The eval set is dealt out in turn to the hosts with the masks each record gets in one
  # process: the baseline over all of it does not depend on the number of processes.
  baseline = lambda out: out.rsplit("most-frequent-token baseline ", 1)[1].split(";")[0]
  assert baseline(lead.stdout) == baseline(second.stdout)


@pytest.mark.parametrize("flags, message", [
    (dict(coordinator_address="127.0.0.1:1234"), "--num_processes, --process_id not given"),
    (dict(num_processes=2, process_id=0), "--coordinator_address not given"),
    (dict(coordinator_address="127.0.0.1", num_processes=2, process_id=0), "HOST:PORT"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), r"must be in \[0, 2\)"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0), "at least 1"),
])
def test_bad_flag_combinations_are_user_errors(flags, message):
  with pytest.raises(errors.UserError, match=message):
    distributed.initialize(**flags)


def test_no_flags_and_no_cluster_is_a_single_process(monkeypatch):
  for name in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(name, raising=False)
  assert distributed.detect_cluster() is None
  distributed.initialize()  # Does nothing.
  monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1234.0;tcp://10.0.0.1:5678")
  monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
  assert distributed.detect_cluster() is None  # `mpirun -n 1` is one process.
  monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
  assert distributed.detect_cluster() == "Open MPI"


def test_two_processes_fine_tune_packed_rows_exactly_as_one(tmp_path, sentencepiece_model):
  """Packed fine-tuning on 2 processes x 4 devices and on 1 process x 8 (the same mesh): the
  same rows per step, losses and eval, so the packed rows (cls_positions and all) are dealt out
  to the hosts and gathered back for eval correctly."""
  words = "good bad film plot music story slow fast cast song".split()
  rng = np.random.default_rng(0)
  sentences = [" ".join(rng.choice(words, rng.integers(2, 12))) for _ in range(40)]
  # Regression: every eval example's prediction is a number of its own, compared below.
  lines = ["sentence,label"] + [f"{s},{len(s.split()) / 4}" for s in sentences]
  (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
  command = [sys.executable, "-m", "bert_jax.main", "--config=configs/finetune.py",
             "--config.model.dtype=float32", f"--config.data.vocab_file={sentencepiece_model}",
             f"--config.data.train_file={tmp_path / 'train.csv'}",
             f"--config.data.eval_file={tmp_path / 'train.csv'}",
             "--config.task=regression", "--config.data.text_a_key=sentence",
             "--config.data.label_key=label",
             "--config.data.max_seq_length=32", "--config.model.hidden_size=32",
             "--config.model.num_hidden_layers=1", "--config.model.num_attention_heads=2",
             "--config.model.intermediate_size=64", "--config.model.max_position_embeddings=32",
             "--config.train.batch_size=16", "--config.train.eval_batch_size=8",
             "--config.train.num_train_steps=3", "--config.train.log_every_steps=1",
             "--config.train.learning_rate=1e-2", "--config.mesh.data=2",
             "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
  port = _free_port()
  two = _run_processes(
      [command + [f"--workdir={tmp_path / 'two'}", f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={i}"] for i in range(2)], _env(4))
  for run in two:
    assert run.returncode == 0, run.stderr[-3000:]
  one = subprocess.run(command + [f"--workdir={tmp_path / 'one'}"], cwd=REPO, env=_env(8),
                       capture_output=True, text=True, timeout=_TIMEOUT_S)
  assert one.returncode == 0, one.stderr[-3000:]
  packing_line = re.search(r"Packing: .*", one.stdout).group(0)
  assert packing_line in two[0].stdout  # The same rows, rounded to a multiple of 4.
  numbers = lambda out, name: [float(v) for v in re.findall(rf"{name}=([0-9.]+)", out)]
  np.testing.assert_allclose(numbers(two[0].stdout, "loss"), numbers(one.stdout, "loss"),
                             rtol=1e-4)
  assert len(numbers(one.stdout, "loss")) == 3
  # Every eval example's prediction, gathered from both hosts' packed rows.
  predictions = lambda run: [json.loads(line)["prediction"] for line in (
      tmp_path / run / "predictions" / "step_3" / "validation.jsonl").read_text().splitlines()]
  assert len(predictions("one")) == 40 and len(set(predictions("one"))) == 40
  np.testing.assert_allclose(predictions("two"), predictions("one"), rtol=1e-4)
