"""SIGTERM or SIGINT outside a training loop: the command stops at once, and says so.

Such a command has no step to save: it stops where it is with `Stopped`, so that its `finally`
blocks run (a temporary output is removed, a lock released) and every file it wrote is whole or
absent (each is written under a temporary name and renamed when complete). The training loop
defers the signal to a step boundary instead (runtime/preemption.py).
"""

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """A signal stopped the command where it was; `line` says so, for the entry point to print."""

  def __init__(self, signum: int):
    self.line = (f"Stopped by {signal.Signals(signum).name}: every file this command wrote is "
                 f"whole and its checkpoints are kept; run the same command to go on.")
    super().__init__(self.line)


@contextlib.contextmanager
def stopping() -> Iterator[None]:
  """Inside the block the first SIGTERM or SIGINT raises `Stopped`; the handlers before are
  back for a second one (it then acts as it always does) and after the block."""
  previous = {}

  def restore() -> None:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    previous.clear()

  def stop(signum, frame) -> None:
    del frame  # Unused.
    restore()
    raise Stopped(signum)

  for signum in SIGNALS:
    previous[signum] = signal.signal(signum, stop)
  try:
    yield
  finally:
    restore()
