"""Never lose work: SIGTERM checkpoints and exits cleanly; kill -9 and damaged checkpoints resume.

Real processes of the real CLI and real signals. Every run has the same model and the same
num_train_steps, so they compile the same steps, and share jax's persistent compilation cache:
after the first, a process starts in a few seconds.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from bert_jax import signals
from bert_jax.runtime import preemption
from test_train import REPO, write_corpus

# Generous: on 2 busy cores a first process takes ~30 s; a hang must fail, not block.
_TIMEOUT_S = 240
_NUM_TRAIN_STEPS = 150
_STEP_LINE = re.compile(r"^train step=(\d+) (.*) sequences_per_second=", re.MULTILINE)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
  return write_corpus(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
  return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu",
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache"))}


def _command(corpus: str, workdir: str, checkpoint_every_steps: int) -> list[str]:
  """The small model of test_train.small_config, logging every step."""
  flags = {
      "data.source": "text", "data.input_files": corpus, "model.vocab_size": 128,
      "model.hidden_size": 32, "model.num_hidden_layers": 2, "model.num_attention_heads": 2,
      "model.intermediate_size": 64, "model.max_position_embeddings": 64,
      "data.max_seq_length": 32, "data.max_predictions_per_seq": 5,
      "data.num_eval_documents": 6, "data.dupe_factor": 2, "data.shuffle_buffer_size": 100,
      "train.batch_size": 8, "train.eval_batch_size": 8,
      "train.num_train_steps": _NUM_TRAIN_STEPS, "train.num_warmup_steps": 2,
      "train.log_every_steps": 1, "train.eval_every_steps": 0,
      "train.checkpoint_every_steps": checkpoint_every_steps, "train.max_eval_steps": 2}
  return ([sys.executable, "-m", "bert_jax.main", "--config=configs/tiny.py",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()])


class _Run:
  """A CLI process with its output in files (a full pipe would block it)."""

  def __init__(self, command: list[str], env: dict[str, str], logs: str):
    self.stdout_path, self.stderr_path = logs + ".out", logs + ".err"
    with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
      self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    self.deadline = time.monotonic() + _TIMEOUT_S

  def stdout(self) -> str:
    with open(self.stdout_path) as f:
      return f.read()

  def stderr(self) -> str:
    with open(self.stderr_path) as f:
      return f.read()

  def wait_for_step(self, step: int) -> None:
    """Returns once the log shows a step >= `step` (the process still running)."""
    while time.monotonic() < self.deadline:
      steps = [int(s) for s, _ in _STEP_LINE.findall(self.stdout())]
      if steps and max(steps) >= step:
        assert self.process.poll() is None, "the run ended before it could be interrupted"
        return
      assert self.process.poll() is None, self.stderr()[-3000:]
      time.sleep(0.02)
    self.kill()
    raise AssertionError(f"no step {step} in time:\n{self.stdout()[-2000:]}")

  def wait(self) -> int:
    try:
      return self.process.wait(timeout=max(self.deadline - time.monotonic(), 1))
    finally:
      self.kill()

  def kill(self) -> None:
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait()


def _run(command, env, logs) -> _Run:
  run = _Run(command, env, logs)
  assert run.wait() == 0, run.stderr()[-3000:]
  return run


def _losses(stdout: str) -> dict[int, str]:
  """Each train step's logged values (loss, accuracies, learning rate) as printed."""
  return {int(step): values for step, values in _STEP_LINE.findall(stdout)}


def _preempt(command, env, logs, after_step: int) -> int:
  """Starts a run, sends SIGTERM once it has logged `after_step`; returns the saved step."""
  run = _Run(command, env, logs)
  run.wait_for_step(after_step)
  run.process.send_signal(signal.SIGTERM)
  assert run.wait() == 0, run.stderr()[-3000:]
  saved = re.findall(r"^Preempted at step (\d+): saved a checkpoint in (\S+); run the same "
                     r"command to resume\.$", run.stdout(), re.MULTILINE)
  assert len(saved) == 1, run.stdout()[-2000:]
  step = int(saved[0][0])
  assert step >= after_step and max(_losses(run.stdout())) == step
  assert "Final eval" not in run.stdout()
  return step


def test_a_truncated_latest_checkpoint_is_skipped_with_a_warning(tmp_path, corpus, env):
  workdir = str(tmp_path / "work")
  checkpoints = os.path.join(workdir, "checkpoints")
  command = _command(corpus, workdir, checkpoint_every_steps=2)
  _preempt(command, env, str(tmp_path / "first"), after_step=4)
  steps = sorted(int(name) for name in os.listdir(checkpoints) if name.isdigit())
  latest, previous = steps[-1], steps[-2]
  # Cut the largest file of the arrays' data in half.
  data_files = [os.path.join(root, name)
                for root, _, names in os.walk(os.path.join(checkpoints, str(latest), "state"))
                for name in names]
  largest = max(data_files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)

  # Checkpoints every `latest` steps: the resumed run saves that step again, where the
  # unreadable one was.
  resumed = _run(_command(corpus, workdir, checkpoint_every_steps=latest), env,
                 str(tmp_path / "second"))
  assert f"Warning: the checkpoint at step {latest} in {checkpoints} cannot be read (" \
      in resumed.stderr(), resumed.stderr()[-3000:]
  assert f"Resumed from the checkpoint at step {previous} " in resumed.stdout()
  assert f"Final eval at step {_NUM_TRAIN_STEPS}" in resumed.stdout()
  # Set aside, not deleted.
  assert os.path.isdir(os.path.join(checkpoints, f"{latest}.unreadable"))


def _finetune_command(directory, vocab_file: str, workdir: str) -> list[str]:
  """A small classifier from a random init, fine-tuned for 120 steps, logging every step."""
  rng = random.Random(0)
  words = "alpha beta gamma delta river stone light water green small".split()
  for name, count in (("train.csv", 96), ("dev.csv", 24)):
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      rows = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(count)]
      with open(path, "w") as f:
        f.write("sentence,label\n" + "".join(
            f"{row},{'yes' if 'alpha' in row else 'no'}\n" for row in rows))
  flags = {
      "model.vocab_size": 256, "model.hidden_size": 32, "model.num_hidden_layers": 1,
      "model.num_attention_heads": 2, "model.intermediate_size": 64,
      "model.max_position_embeddings": 64, "data.vocab_file": vocab_file,
      "data.train_file": os.path.join(directory, "train.csv"),
      "data.eval_file": os.path.join(directory, "dev.csv"), "data.max_seq_length": 32,
      "train.batch_size": 8, "train.eval_batch_size": 8, "train.num_train_steps": 120,
      "train.learning_rate": 1e-3, "train.log_every_steps": 1, "train.eval_every_steps": 0,
      "train.checkpoint_every_steps": 1000}
  return ([sys.executable, "-m", "bert_jax.main", "--config=configs/finetune.py",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in flags.items()])


def test_handler_sets_the_flag_then_restores_the_handlers():
  # Python's own Ctrl-C handler, as the CLI has it (a pytest-xdist worker may ignore SIGINT).
  outer = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    _check_handlers()
  finally:
    signal.signal(signal.SIGINT, outer)


def _check_handlers():
  previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  watch = preemption.Preemption().install()
  try:
    with watch.deferring():  # The training loop's way: the signal waits for a step boundary.
      assert not watch.reached(1)
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.01)  # Python runs the handler between bytecodes of the main thread.
      assert watch.requested and watch.reached(2)
      # A second signal stops at once, as it would have without the watch.
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
      assert {s: signal.getsignal(s) for s in previous} == previous
  finally:
    watch.uninstall()
  assert {s: signal.getsignal(s) for s in previous} == previous

  watch = preemption.Preemption().install()
  with watch.deferring():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
  # After the loop (one that completed: the signal came in its last step) another signal is a
  # clean stop, not the signal's default.
  with pytest.raises(signals.Stopped):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
  watch.uninstall()
  assert watch.reached(3)
  assert {s: signal.getsignal(s) for s in previous} == previous

  # Outside the loop (the command's guard): the first signal stops where the main thread is,
  # with the handlers before put back, and a line to print.
  with preemption.guard() as watch:
    with pytest.raises(signals.Stopped, match=r"^Stopped by SIGTERM: .* run the same command"):
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.01)
    assert {s: signal.getsignal(s) for s in previous} == previous
    assert preemption.Preemption.for_loop() == (watch, False)
  assert preemption.Preemption.for_loop()[1]  # No guard: the loop installs its own.