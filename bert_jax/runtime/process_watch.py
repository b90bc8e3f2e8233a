"""A multi-process job whose process is lost ends with one line, not a hang or a crash dump.

jax's coordination service (process 0 runs it; `jax.distributed.initialize` starts it) hears
every process's heartbeats and sees a process's connection close. By default it then ends every
other process at once with a C++ fatal error and Python's crash dump, and a process waiting in a
collective first fails with the transport's error (gloo: "Connection reset by peer"), then hangs
in jax's shutdown barrier until the heartbeat timeout. With `jax_enable_recoverability` (set by
runtime/distributed.py) the service lets the others run on instead, and `get_live_nodes` says
which processes it still sees: the primitive under jax's own `multihost_utils.live_devices`.

So every process runs a thread that asks it in turn. The call is a barrier among the live
processes: all of them meet in it, and a lost one is left out once the service has seen it go
(at once when its connection closes, as after `kill -9`; after `--heartbeat_timeout_seconds`
when its host vanishes). A thread that finds a process missing prints one line naming it and the
last complete checkpoint, and ends its process with status 1 (`os._exit`: the main thread may be
blocked in a collective that will never complete).

Process 0 is special: it runs the service. When it is lost, jax ends the others at once with its
own fatal error; jax 0.12 offers Python no way to hear of it first (the client's
missed-heartbeat callback cannot be a Python function: it fails with std::bad_cast).

At the end of a command every process meets the others in `finish`, then leaves the service in
order (the others first, process 0 last), so that no process sees the service vanish under it.
"""

import os
import sys
import threading
import time

import jax
from jax._src import distributed as jax_distributed  # The client: jax keeps it there.

from bert_jax.runtime import checkpoint

# Seconds between two questions to the service: a lost process is reported within this much of
# the service seeing it go.
_INTERVAL_SECONDS = 2.0
_DONE_BARRIER = "bert_jax_command_done"


class _Watch:
  """What the thread reads: set once, by `start`."""
  checkpoint_dir: str | None = None
  heartbeat_timeout_seconds: int = 100
  stopping = threading.Event()  # The command is ending: a process leaving is expected.
  thread: threading.Thread | None = None


def start(checkpoint_dir: str | None, heartbeat_timeout_seconds: int) -> None:
  """Starts the watch in this process (a job of several processes, after initialize).

  Args:
    checkpoint_dir: Where the command's checkpoints are, for the line; None if it has none.
    heartbeat_timeout_seconds: As passed to jax: how long a silent host takes to be seen lost.
  """
  _Watch.checkpoint_dir = checkpoint_dir
  _Watch.heartbeat_timeout_seconds = heartbeat_timeout_seconds
  _Watch.thread = threading.Thread(target=_watch, name="bert_jax process watch", daemon=True)
  _Watch.thread.start()


def active() -> bool:
  return _Watch.thread is not None


def _watch() -> None:
  client = jax_distributed.global_state.client
  processes = list(range(jax.process_count()))
  while not _Watch.stopping.is_set():
    try:
      live = client.get_live_nodes(processes)
    except Exception as e:  # pylint: disable=broad-exception-caught
      # Raised when the service itself is gone: process 0 was lost (if jax lets us see it).
      if not _Watch.stopping.is_set():
        _end(lost=[0], why=f"the coordination service on process 0 stopped answering ({e})")
      return
    lost = sorted(set(processes) - set(live))
    if lost and not _Watch.stopping.is_set():
      _end(lost, why="jax's coordination service no longer sees it")
    time.sleep(_INTERVAL_SECONDS)


def _end(lost: list[int], why: str) -> None:
  names = ", ".join(map(str, lost))
  print(f"bert_jax: error: process {names} of {jax.process_count()} was lost ({why}); "
        f"{checkpoint.resume_point(_Watch.checkpoint_dir)}: run the same command on every "
        f"process to resume.",
        file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(1)  # pylint: disable=protected-access


def await_verdict() -> None:
  """Called when a collective failed: waits for the watch to name the lost process and end this
  one; returns (the caller then re-raises: a bug) if no process is lost in that time."""
  if not active():
    return
  deadline = time.monotonic() + _Watch.heartbeat_timeout_seconds + 3 * _INTERVAL_SECONDS
  while time.monotonic() < deadline and _Watch.thread.is_alive():
    time.sleep(0.2)


def finish(timeout_seconds: int = 600) -> None:
  """Ends the command in step with the other processes; a no-op without the watch.

  Every process waits for the others here, then leaves the coordination service: the others
  first, and process 0, which runs it, once they have gone. Without this, under recoverability
  jax's shutdown waits for nobody, and a process still leaving would find the service gone.
  """
  if not active():
    return
  _Watch.stopping.set()
  client = jax_distributed.global_state.client
  try:
    client.wait_at_barrier(_DONE_BARRIER, timeout_seconds * 1000)
  except Exception as e:  # pylint: disable=broad-exception-caught
    _Watch.stopping.clear()
    _end(lost=_lost_now(), why=f"it did not reach the end of the command ({_one_line(e)})")
  if jax.process_index() == 0:
    _wait_for_others_to_leave(client)
  jax.distributed.shutdown()


def _lost_now() -> list[int]:
  processes = list(range(jax.process_count()))
  try:
    live = jax_distributed.global_state.client.get_live_nodes(processes)
  except Exception:  # pylint: disable=broad-exception-caught
    return [0]
  return sorted(set(processes) - set(live)) or processes[1:]


def _wait_for_others_to_leave(client, timeout_seconds: float = 60.0) -> None:
  """Returns once the service sees only process 0 (the others have shut their clients down), or
  after `timeout_seconds`.

  `get_live_nodes` waits for every live process to call it. After `finish`'s barrier the others
  call it at most once more (a watch thread already in its loop), so within two calls it returns
  only when they have left.
  """
  done = threading.Event()

  def ask() -> None:
    try:
      while len(client.get_live_nodes(list(range(jax.process_count())))) > 1:
        pass
    finally:
      done.set()

  threading.Thread(target=ask, daemon=True).start()
  done.wait(timeout_seconds)


def _one_line(error: BaseException, limit: int = 200) -> str:
  text = " ".join(str(error).split())
  return text if len(text) <= limit else text[:limit] + "..."
