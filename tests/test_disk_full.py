"""A full disk during prepare, a checkpoint save, an export, a predict or encode write: one line
naming the path, everything written before intact, and the same command goes on once there is
space (docs/resuming.md, "Faults").

On a real small file system: a tmpfs mounted for each test (root can mount one). Where mounting
is refused, the same write raises ENOSPC, injected in-process (`_Disk.injected`): the tests
run either way, never skip, and their output says which was used.
"""

import errno
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from bert_jax import disk_full
from bert_jax import files
from bert_jax.interop import export
from bert_jax.pretraining import train
from bert_jax.runtime import checkpoint
from bert_jax.runtime import metrics
from test_train import REPO, small_config, write_corpus

_MOUNT_SIZE = "64m"


class _Disk:
  """A directory on a small file system of its own, which the test fills and frees."""

  def __init__(self, path: str, monkeypatch):
    self.path = path
    os.makedirs(path)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={_MOUNT_SIZE}", "tmpfs", path],
                             capture_output=True, check=False)
    self.injected = mounted.returncode != 0
    self._monkeypatch = monkeypatch
    self._filler = os.path.join(path, "filler")
    print(f"full disk: {'injected ENOSPC (mount refused)' if self.injected else 'a real tmpfs'}")

  def fill(self, leave_bytes: int = 0) -> None:
    """Leaves about `leave_bytes` free."""
    if self.injected:
      self._inject(leave_bytes)
      return
    stat = os.statvfs(self.path)
    with open(self._filler, "ab") as f:
      f.write(b"\0" * max(stat.f_bavail * stat.f_frsize - leave_bytes, 0))

  def free(self) -> None:
    if self.injected:
      self._monkeypatch.undo()
    elif os.path.exists(self._filler):
      os.remove(self._filler)

  def close(self) -> None:
    if not self.injected:
      subprocess.run(["umount", "-l", self.path], check=False)

  def _inject(self, leave_bytes: int) -> None:
    # The writes bert_jax makes under this directory: TF's files, and Orbax's saves.
    budget = [leave_bytes]
    under = self.path

    def spend(path: str, size: int) -> None:
      if str(path).startswith(under):
        budget[0] -= size
        if budget[0] < 0:
          raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    write = tf.io.gfile.GFile.write
    self._monkeypatch.setattr(tf.io.gfile.GFile, "write", lambda f, data: (
        spend(f.name, len(data)), write(f, data))[1])
    save = checkpoint.Checkpointer.save
    self._monkeypatch.setattr(checkpoint.Checkpointer, "save", lambda c, step, *a, **k: (
        spend(os.path.join(c.directory, str(step)), 1 << 20), save(c, step, *a, **k))[1])


@pytest.fixture
def disk(tmp_path, monkeypatch):
  mounted = _Disk(str(tmp_path / "disk"), monkeypatch)
  yield mounted
  mounted.close()


def _names(directory: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(top, name), directory)
                for top, dirs, names in os.walk(directory) for name in dirs + names)


def test_full_path_reads_each_library_s_error(disk):
  assert disk_full.full_path(OSError(errno.ENOSPC, "No space left on device", "/d/f")) == "/d/f"
  assert disk_full.full_path(OSError(errno.ENOSPC, "No space left on device")) == ""
  assert disk_full.full_path(OSError(errno.EACCES, "Permission denied", "/d/f")) is None
  # Orbax's, as its background save raises it (tensorstore's text, wrapped).
  orbax_text = ('RESOURCE_EXHAUSTED: Error writing "params.w/0.0" in OCDBT database at local '
                'file "/w/checkpoints/8.orbax-checkpoint-tmp/state/ocdbt.process_0/": Failed '
                'writing: "/w/checkpoints/8.orbax-checkpoint-tmp/state/ocdbt.process_0/d/ab": '
                "Failed to write 2 bytes to file 4: No space left on device [os_error_code='28']")
  try:
    try:
      raise ValueError(orbax_text)
    except ValueError as e:
      raise RuntimeError("the save failed") from e
  except RuntimeError as wrapped:
    assert disk_full.full_path(wrapped) == (
        "/w/checkpoints/8.orbax-checkpoint-tmp/state/ocdbt.process_0/d/ab")
  # TensorFlow's, from a real write on the full disk.
  disk.fill()
  with pytest.raises((tf.errors.OpError, OSError)) as raised:
    with tf.io.gfile.GFile(os.path.join(disk.path, "big"), "wb") as f:
      f.write(b"x" * (1 << 20))
  assert disk_full.full_path(raised.value) == os.path.join(disk.path, "big")


def test_a_full_disk_while_preparing_is_one_line_and_leaves_no_partial_file(tmp_path, disk):
  workdir = os.path.join(disk.path, "work")
  disk.fill(leave_bytes=64 << 10)  # The vocabulary fits, the records do not.
  corpus = write_corpus(str(tmp_path), num_documents=200)
  command = [sys.executable, "-m", "bert_jax.main", "--config=configs/tiny.py",
             f"--workdir={workdir}", "--config.data.source=text",
             f"--config.data.input_files={corpus}",
             "--config.data.num_eval_documents=6", "--config.model.vocab_size=128"]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
  if disk.injected:  # The injection lives in this process: the command's own code, run here.
    with pytest.raises(disk_full.DiskFull) as raised:
      with disk_full.reported(workdir):
        train.train_and_evaluate(small_config(corpus), workdir)
    line = f"bert_jax: error: {raised.value}"
  else:
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("bert_jax: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = lines[0]
  assert line.startswith(f"bert_jax: error: {workdir}/data/"), line
  assert "no space left on device" in line and "run the same command again" in line
  left = _names(workdir)
  assert not [name for name in left if ".tmp-" in name], left
  assert "data/metadata.json" not in left  # No half-prepared data looks complete.


# Orbax's writer threads of the failed save end on an event loop already closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_at_a_checkpoint_save_keeps_the_one_before_and_the_run_goes_on(
    tmp_path, disk):
  workdir = os.path.join(disk.path, "work")
  corpus = write_corpus(str(tmp_path))
  train.train_and_evaluate(small_config(corpus, num_train_steps=3), workdir)
  before = open(os.path.join(workdir, "metrics.jsonl")).read()
  disk.fill(leave_bytes=96 << 10)  # Room for the logs, not for a checkpoint.
  kept = lambda: checkpoint.resume_point(checkpoint.checkpoint_dir(workdir))
  with pytest.raises(disk_full.DiskFull) as raised:
    with disk_full.reported(workdir, kept=kept):
      train.train_and_evaluate(small_config(corpus, num_train_steps=6), workdir)
  message = str(raised.value)
  assert message.startswith(f"{workdir}/checkpoints/6"), message
  assert (f"the last complete checkpoint is step 3 in {workdir}/checkpoints" in message)
  # The step before is whole, the cut-short save is gone (it only held the space a rerun needs),
  # and metrics.jsonl still holds whole lines only.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]
  lines = open(os.path.join(workdir, "metrics.jsonl")).read()
  assert lines.startswith(before) and all(json.loads(line) for line in lines.splitlines())

  disk.free()
  final = train.train_and_evaluate(small_config(corpus, num_train_steps=6), workdir)
  assert final["mlm_accuracy"] >= 0
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]


def test_a_full_disk_during_an_export_leaves_no_output(review_classifier, disk):
  _, pretrain_dir, _ = review_classifier
  output = os.path.join(disk.path, "hf")
  disk.fill(leave_bytes=16 << 10)
  with pytest.raises(Exception) as raised:
    export.export_hf(pretrain_dir, output)
  assert disk_full.full_path(raised.value) is not None, raised.value
  assert _names(disk.path) == ["filler"] or disk.injected  # No output, no temporary.


def test_a_full_disk_at_a_predict_or_encode_write_keeps_the_old_file(disk):
  path = os.path.join(disk.path, "predictions.jsonl")
  files.write_whole(path, b'{"old": 1}\n')
  disk.fill()
  with pytest.raises((tf.errors.OpError, OSError)) as raised:
    files.write_whole(path, b"x" * (1 << 20))
  assert disk_full.full_path(raised.value) == f"{path}.tmp-{os.getpid()}"
  assert open(path, "rb").read() == b'{"old": 1}\n'
  assert sorted(os.listdir(disk.path)) == ["filler", "predictions.jsonl"] or disk.injected

  # metrics.jsonl keeps whole lines only (a local file: written with Python's own open).
  disk.free()
  if disk.injected:
    return
  writer = metrics.MetricWriter(disk.path)
  writer._write_line(json.dumps({"step": 1}))  # pylint: disable=protected-access
  disk.fill()
  with pytest.raises(OSError):
    writer._write_line(json.dumps({"step": 2, "padding": "x" * (1 << 20)}))  # pylint: disable=protected-access
  with open(writer.jsonl_path) as f:
    assert f.read() == '{"step": 1}\n'
