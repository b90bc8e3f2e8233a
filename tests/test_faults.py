"""Faults that real pods meet: a lost host, a job that never forms, a kill during a save, a
signal at any moment. Each ends in one line and a state the same command picks up.

Real processes of the real CLI, real signals (docs/resuming.md has the table these back).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from bert_jax import signals
from bert_jax.interop import export
from test_distributed import _env, _free_port
# The same small runs as test_preemption.py's, and its fixtures (the corpus, a compile cache).
from test_preemption import (  # pylint: disable=unused-import
    _NUM_TRAIN_STEPS, _Run, _command, _finetune_command, _losses, _preempt, _run, corpus, env)
from test_train import REPO

# A short heartbeat, so a silent host is seen lost in seconds (a killed one is seen at once).
_HEARTBEAT_FLAGS = ["--heartbeat_timeout_seconds=10"]
# The bound a test allows a survivor: the heartbeat timeout, the watch's interval and a start-up
# on 2 busy cores.
_LOST_WITHIN_S = 60


def _job(command: list[str], port: int, logs: str) -> list[_Run]:
  """The two processes of a job on one 2-device mesh (one CPU device each)."""
  return [_Run(command + [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                          f"--process_id={i}", "--config.mesh.data=2"] + _HEARTBEAT_FLAGS,
               {**_env(1)}, f"{logs}.{i}") for i in range(2)]


def test_a_lost_process_ends_the_other_with_one_line_and_the_same_command_resumes(
    tmp_path, corpus):
  workdir = str(tmp_path / "work")
  command = _command(corpus, workdir, checkpoint_every_steps=10)
  lead, other = _job(command, _free_port(), str(tmp_path / "first"))
  lead.wait_for_step(25)  # Past two checkpoints.
  other.process.send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  assert other.wait() == -signal.SIGKILL
  lead.deadline = killed_at + _LOST_WITHIN_S
  assert lead.wait() == 1, lead.stderr()[-3000:]
  assert time.monotonic() - killed_at < _LOST_WITHIN_S
  lost = re.findall(r"^bert_jax: error: process 1 of 2 was lost \(.*\); the last complete "
                    r"checkpoint is step (\d+) in (\S+): run the same command on every process "
                    r"to resume\.$", lead.stderr(), re.MULTILINE)
  assert len(lost) == 1, lead.stderr()[-3000:]
  step = int(lost[0][0])
  assert step >= 20 and lost[0][1] == os.path.join(workdir, "checkpoints")
  # No abort, no crash dump, no traceback: the line is the only thing the survivor says.
  for wall in ("Fatal Python error", "Traceback", "Terminating process", "Check failure"):
    assert wall not in lead.stderr()

  resumed = _job(command, _free_port(), str(tmp_path / "second"))
  for run in resumed:
    assert run.wait() == 0, run.stderr()[-3000:]
  out = resumed[0].stdout()
  assert f"Resumed from the checkpoint at step {step} " in out
  assert min(_losses(out)) == step + 1
  assert f"Final eval at step {_NUM_TRAIN_STEPS}" in out


def test_a_process_that_never_joins_ends_the_wait_with_one_line(tmp_path, corpus):
  workdir = tmp_path / "work"
  command = _command(corpus, str(workdir), checkpoint_every_steps=10) + [
      f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2",
      "--process_id=0", "--initialization_timeout_seconds=3"]
  start = time.monotonic()
  run = subprocess.run(command, cwd=REPO, env=_env(1), capture_output=True, text=True,
                       timeout=60)
  assert run.returncode == 1
  assert time.monotonic() - start < 45
  assert re.search(r"^bert_jax: error: --coordinator_address=127\.0\.0\.1:\d+: the job did not "
                   r"form within 3 s \(--initialization_timeout_seconds\): process 0 waited for "
                   r"all 2 processes to join\.", run.stderr, re.MULTILINE), run.stderr
  assert "Fatal Python error" not in run.stderr and "Traceback" not in run.stderr
  assert not workdir.exists()  # Nothing was written.


def _unfinished_save(checkpoints: str) -> str | None:
  """The directory of a save in flight, once a complete one is there to resume from."""
  try:
    names = os.listdir(checkpoints)
  except FileNotFoundError:
    return None
  if not any(name.isdigit() for name in names):
    return None
  return next((name for name in names if ".orbax-checkpoint-tmp" in name), None)


def _assert_same_losses(resumed: str, reference: str, first: int, last: int) -> None:
  """The resumed run logged steps first..last with the values the uninterrupted run logged."""
  expected, got = _losses(reference), _losses(resumed)
  assert sorted(got) == list(range(first, last + 1))
  assert got == {step: expected[step] for step in got}


def test_kill_9_while_a_checkpoint_is_written_resumes_from_the_one_before(tmp_path, corpus, env):
  # The uninterrupted run, beside: the resumed one must log its very losses.
  reference = _Run(_command(corpus, str(tmp_path / "reference"), checkpoint_every_steps=2), env,
                   str(tmp_path / "reference"))
  workdir = str(tmp_path / "work")
  checkpoints = os.path.join(workdir, "checkpoints")
  command = _command(corpus, workdir, checkpoint_every_steps=2)
  run = _Run(command, env, str(tmp_path / "first"))
  # Freeze the process the moment a save is in flight (SIGSTOP stops every thread at once),
  # then kill it: a save cut short at a random point of its writing.
  caught = None
  while caught is None and run.process.poll() is None and time.monotonic() < run.deadline:
    caught = _unfinished_save(checkpoints)
    if caught is not None:
      run.process.send_signal(signal.SIGSTOP)
      if not os.path.exists(os.path.join(checkpoints, caught)):
        caught = None  # Finalised just before the stop: wait for the next save.
        run.process.send_signal(signal.SIGCONT)
  run.kill()
  assert caught is not None, "no save was caught in flight"
  step = int(caught.split(".")[0])

  resumed = _Run(command, env, str(tmp_path / "second"))
  assert resumed.wait() == 0, resumed.stderr()[-3000:]
  assert (f"Set aside the unfinished save of step {step} in {checkpoints} as "
          f"{checkpoints}/{step}.unfinished") in resumed.stderr()
  start = int(re.search(r"Resumed from the checkpoint at step (\d+) ", resumed.stdout()).group(1))
  assert start == step - 2  # The one before, complete.
  assert f"Final eval at step {_NUM_TRAIN_STEPS}" in resumed.stdout()
  assert os.path.isdir(os.path.join(checkpoints, f"{step}.unfinished"))  # Kept, for a look.
  assert reference.wait() == 0, reference.stderr()[-3000:]
  _assert_same_losses(resumed.stdout(), reference.stdout(), start + 1, _NUM_TRAIN_STEPS)
  final_eval = re.compile(r"^eval step=.*? most_frequent", re.MULTILINE)
  assert final_eval.findall(resumed.stdout()) == final_eval.findall(reference.stdout())


_ENDINGS = re.compile(r"^(Stopped by SIGTERM: .*|Preempted at step \d+: .*|Final eval at step "
                      r"\d+: .*|Best accuracy .*)$", re.MULTILINE)


def _interrupt(command, env, logs: str, line: str) -> str:
  """Sends SIGTERM when `line` appears; checks the run ends saved or complete (status 0, and
  its own line, one of them). Returns its output."""
  run = _Run(command, env, logs)
  while line not in run.stdout():
    assert run.process.poll() is None, run.stderr()[-3000:]
    assert time.monotonic() < run.deadline, f"no {line!r}"
    time.sleep(0.01)
  run.process.send_signal(signal.SIGTERM)
  assert run.wait() == 0, run.stderr()[-3000:]
  assert _ENDINGS.findall(run.stdout()), run.stdout()[-2000:]
  assert not ("Stopped by SIGTERM" in run.stdout() and "Preempted" in run.stdout())
  return run.stdout()


def test_sigterm_at_any_moment_of_pre_training_ends_saved_or_complete(tmp_path, corpus, env):
  """One workdir and the same command, each run stopped at another moment: data preparation,
  mid-loop, after the final eval; then to the end. Compilation (after the data's summary line)
  on a workdir of its own: a signal that lands late there may find the loop done, and the next
  moment gone."""
  _interrupt(_command(corpus, str(tmp_path / "compiling"), checkpoint_every_steps=100), env,
             str(tmp_path / "compiling"), "instances:")
  workdir = str(tmp_path / "work")
  command = _command(corpus, workdir, checkpoint_every_steps=100)
  logs = str(tmp_path / "run")
  _interrupt(command, env, f"{logs}.preparing", "Preparing pre-training data")
  # Mid-loop: a checkpoint at the current step, and the same command resumes right after it.
  step = _preempt(command, env, f"{logs}.loop", after_step=5)
  assert str(step) in os.listdir(os.path.join(workdir, "checkpoints"))
  resumed = _interrupt(command, env, f"{logs}.final", "Final eval")
  assert f"Resumed from the checkpoint at step {step} " in resumed
  assert min(_losses(resumed)) == step + 1
  again = _run(command, env, f"{logs}.again").stdout()
  assert (f"Final eval at step {_NUM_TRAIN_STEPS}" in again
          or f"Training is already complete: step {_NUM_TRAIN_STEPS}" in again)
  assert str(_NUM_TRAIN_STEPS) in os.listdir(os.path.join(workdir, "checkpoints"))


def test_sigterm_at_any_moment_of_fine_tuning_ends_saved_or_complete(
    tmp_path, env, sentencepiece_model):
  """As pre-training's: stopped mid-loop, after the final eval; the run then ends as an
  uninterrupted one (beside it), and a run stopped after its last checkpoint but before
  best.json writes best.json when run again. Stopped while compiling on a workdir of its own (the
  120 steps take a second or two: a late signal may find them done)."""
  reference = _Run(_finetune_command(tmp_path, sentencepiece_model, str(tmp_path / "reference")),
                   env, str(tmp_path / "reference"))
  _interrupt(_finetune_command(tmp_path, sentencepiece_model, str(tmp_path / "compiling")), env,
             str(tmp_path / "compiling"), "Compiled the fine-tuning step")
  workdir = tmp_path / "work"
  command = _finetune_command(tmp_path, sentencepiece_model, str(workdir))
  logs = str(tmp_path / "run")
  step = _preempt(command, env, f"{logs}.loop", after_step=5)
  assert step < 120 and str(step) in os.listdir(workdir / "checkpoints")
  resumed = _interrupt(command, env, f"{logs}.final", "eval validation step=120")
  assert f"Resumed from the checkpoint at step {step} " in resumed
  again = _run(command, env, f"{logs}.again").stdout()
  assert "Best accuracy" in again or "Fine-tuning is already complete: step 120" in again
  assert reference.wait() == 0, reference.stderr()[-3000:]
  _assert_same_losses(resumed, reference.stdout(), step + 1, 120)
  # The same final eval and best, to the printed digit.
  final = re.compile(r"^(?:eval validation|Best accuracy) .*$", re.MULTILINE)
  assert final.findall(resumed + again) == final.findall(reference.stdout().replace(
      str(tmp_path / "reference"), str(workdir)))
  best = json.loads((workdir / "best.json").read_text())
  assert best["step"] == 120 and best["metric"] == "accuracy"
  rows = (workdir / "predictions" / "step_120" / "validation.jsonl").read_text().splitlines()
  assert len(rows) == 24 and all(json.loads(row) for row in rows)

  written = (workdir / "best.json").read_text()
  (workdir / "best.json").unlink()  # As if stopped between the last checkpoint and best.json.
  last = _run(command, env, f"{logs}.last").stdout()
  assert "Fine-tuning is already complete: step 120" in last
  assert (workdir / "best.json").read_text() == written


def test_a_stopped_export_leaves_no_output_and_no_temporary(tmp_path):
  output = tmp_path / "exported"
  before = signal.getsignal(signal.SIGTERM)

  def write(directory: str) -> None:
    os.makedirs(directory)
    with open(os.path.join(directory, "model.safetensors"), "wb") as f:
      f.write(b"half")
      os.kill(os.getpid(), signal.SIGTERM)  # Mid-write.
      time.sleep(1)
      f.write(b" and the rest")

  with pytest.raises(signals.Stopped):
    with signals.stopping():
      # pylint: disable-next=protected-access
      export._in_place(str(output), overwrite=False, write=write)
  assert sorted(os.listdir(tmp_path)) == []
  assert signal.getsignal(signal.SIGTERM) == before  # The next signal acts as it always does.


_TPU_LINES = re.compile(r"TPU_WORKER_HOSTNAMES|TPU accelerator type|libtpu", re.IGNORECASE)


@pytest.mark.parametrize("skip", [True, False])
def test_a_cpu_run_says_nothing_of_tpus(skip):
  """With libtpu installed (the test extras have it) and no TPU chips, starting jax's backend
  printed libtpu's errors; the commands' start-up (bert_jax/backends.py) keeps them out."""
  pytest.importorskip("libtpu")
  from jax._src import hardware_utils  # pylint: disable=import-outside-toplevel
  if hardware_utils.num_available_tpu_chips_and_device_id()[0] or \
      hardware_utils.has_visible_nvidia_gpu():
    pytest.skip("a host with an accelerator keeps jax's own choice")
  code = ("from bert_jax import backends\n"
          + ("assert backends.skip_tpu_without_chips() == 'cpu'\n" if skip else "")
          + "import jax\nprint(jax.devices()[0].platform)\n")
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
  run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
  assert run.returncode == 0 and run.stdout.strip() == "cpu", run.stderr[-2000:]
  # Without the skip, the same start prints them: the check above can fail.
  assert bool(_TPU_LINES.search(run.stderr)) != skip, run.stderr[-2000:]
