"""Preemption: SIGTERM or SIGINT asks the training loop to checkpoint at a step and stop.

A Cloud TPU VM about to be preempted (or any scheduler ending a job) sends SIGTERM; Ctrl-C sends
SIGINT. Either one asks the loop to finish its current step, save a checkpoint there and exit
cleanly. The loop asks `reached(step)` once per step, and stops when it answers True.

One process: the signal handler sets a flag; the next `reached` answers True.

Several processes (a pod, or any `jax.distributed` job): every host must stop at the same step,
or their collectives (and the checkpoint, which each writes a part of) would not match, yet a
signal reaches some hosts and not others, at different steps. jax's preemption sync manager
solves this: `jax.distributed.initialize` starts it on every process (any platform, TPU, GPU or
CPU: it only talks to the coordination service) and it installs its own C-level SIGTERM handler.
On a notice from any host, the hosts exchange the steps they have reached and agree on the next
one, at which `multihost_utils.reached_preemption_sync_point(step)` answers True everywhere. So
with several processes SIGTERM is left to jax (a Python handler would replace jax's, and the
notice would never be shared) and SIGINT is turned into a SIGTERM to this process, which jax then
handles the same way. With the preemption service turned off (`jax_enable_preemption_service`
False) nothing is installed: a signal stops the job as usual, and it resumes from the last
periodic checkpoint.

A second signal while the first is being served (say, Ctrl-C again during the save) stops the
process at once, as the signal normally would (with several processes, a second SIGINT does; jax's
handler ignores a second SIGTERM, after which the scheduler's SIGKILL ends the job): the checkpoint
being written then is never finalized (Orbax renames a step into place only when it is complete), so
a resume starts from the previous complete one. Nothing already saved is harmed.

Outside the loop (`guard`, which bert_jax.main holds around every command), a first signal
stops the command at once with `signals.Stopped`: there is no step to save before the loop,
and after it the final checkpoint is already complete. Every output is written under a
temporary name and renamed when whole, and a command run again picks up what is missing
(docs/resuming.md), so stopping anywhere loses nothing that was finished.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import jax
from jax.experimental import multihost_utils

from bert_jax import signals
from bert_jax.runtime import report



def _sync_service_available() -> bool:
  """Whether jax's preemption sync manager runs in this process (multi-process jobs only)."""
  # Read, not probed with a call: a call records a step, and the steps must rise from the first.
  return (jax.process_count() > 1 and jax.distributed.is_initialized()
          and bool(jax.config.jax_enable_preemption_service))


class _Guard:
  watch: "Preemption | None" = None  # The one `guard` installed, while it runs.


@contextlib.contextmanager
def guard() -> Iterator["Preemption"]:
  """Watches for SIGTERM / SIGINT for the whole block: `signals.Stopped` outside the loop,
  a checkpoint and a clean stop inside it (the loop takes this watch over)."""
  watch = Preemption().install()
  _Guard.watch = watch
  try:
    yield watch
  finally:
    _Guard.watch = None
    watch.uninstall()


class Preemption:
  """Watches for SIGTERM / SIGINT between `install()` and `uninstall()`.

  Outside `deferring()` a first signal raises `signals.Stopped` where the main thread is.
  Inside it (the training loop) the signal asks `reached` to answer True after the step in
  progress.
  """

  def __init__(self):
    self.requested = False  # A signal arrived (this process).
    self._previous: dict[signal.Signals, object] = {}
    self._synced = False
    self._reached = False
    self._deferring = False

  @staticmethod
  def for_loop() -> tuple["Preemption", bool]:
    """(the watch of `guard` if one runs, else a new one installed; whether it is new)."""
    if _Guard.watch is not None:
      return _Guard.watch, False
    return Preemption().install(), True

  @contextlib.contextmanager
  def deferring(self) -> Iterator[None]:
    """Inside the block a signal waits for the loop's next step boundary."""
    self._deferring = True
    try:
      yield
    finally:
      self._deferring = False

  def install(self) -> "Preemption":
    self._synced = _sync_service_available()
    if jax.process_count() > 1 and not self._synced:
      report.line("The jax preemption service is off: SIGTERM stops this multi-process job without "
                  "a checkpoint (it resumes from the last periodic one).")
      return self
    if threading.current_thread() is not threading.main_thread():
      return self  # Python lets only the main thread set handlers; signals keep their meaning.
    # With several processes, jax's own handler keeps SIGTERM (see the module docstring).
    for signum in (signal.SIGINT,) if self._synced else signals.SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def uninstall(self) -> None:
    """Puts back the handlers that were there before `install`."""
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame  # Unused.
    if not self._deferring:
      # Outside the loop (before it, or after it, even once a signal in its last step let it
      # complete): stop here. The handlers before ours come back first, so that a further
      # signal while the stack unwinds acts as it always does.
      self.uninstall()
      raise signals.Stopped(signum)
    if self.requested:
      # The second signal: stop now, as this signal would have without us.
      self.uninstall()
      signal.raise_signal(signum)
      return
    self.requested = True
    report.line(f"Received {signal.Signals(signum).name}: saving a checkpoint after the current "
                f"step (send it again to stop at once, without one).")
    if self._synced and signum != signal.SIGTERM:
      signal.raise_signal(signal.SIGTERM)  # To jax's handler, which tells the other hosts.

  def reached(self, step: int) -> bool:
    """Whether to save at `step` and stop; call it after every step, on every host.

    With several processes it is a sync point: every host answers True at the same step. The
    ids jax gets are the train steps, as Orbax's CheckpointManager also passes them when it
    saves (mixing in other ids would move the agreed step). Once True, stays True.
    """
    if not self._reached:
      if self._synced:
        self._reached = multihost_utils.reached_preemption_sync_point(step)
      else:
        self._reached = self.requested
    return self._reached
