"""A full disk, recognised in whatever error a write raised, becomes one line naming the path.

ENOSPC reaches a command in several shapes: Python's OSError (errno 28, often without a file
name), TensorFlow's ResourceExhaustedError ("PATH; No space left on device"), and tensorstore's
error from inside Orbax's background save ('... Failed writing: "PATH": ... No space left on
device [os_error_code='28']'), wrapped once or twice on its way to the main thread. Each write
of bert_jax already goes to a temporary name renamed when whole (Orbax's step directories,
files.write_whole, prepare's shards, export's directory), so what existed before is intact:
the line says so, and that the same command goes on once there is space.
"""

import contextlib
import errno
import logging
import re
from collections.abc import Callable, Iterator

from bert_jax import errors

_NO_SPACE = "No space left on device"
# Where the path is in each library's text: TF's "PATH; No space left on device", tensorstore's
# 'Failed writing: "PATH"' (or 'local file "PATH"'), and any quoted absolute path as a fallback.
_PATH_PATTERNS = (re.compile(r"(?:^|\s)((?:/|gs://)[^\s;\"']+); " + _NO_SPACE),
                  re.compile(r"Failed writing: \"([^\"]+)\""),
                  re.compile(r"local file \"([^\"]+)\""),
                  re.compile(r"\"((?:/|gs://)[^\"]+)\""))


class DiskFull(errors.UserError):
  """A write failed for lack of space; the message names the path and what was kept."""


def full_path(error: BaseException) -> str | None:
  """The path a write ran out of space on, if `error` or anything that caused it is ENOSPC;
  '' when the error does not say which path; None when it is not a full disk."""
  seen = set()
  pending = [error]
  while pending:
    current = pending.pop()
    if current is None or id(current) in seen:
      continue
    seen.add(id(current))
    if isinstance(current, OSError) and current.errno == errno.ENOSPC:
      return str(current.filename or "")
    text = str(getattr(current, "message", "") or current)
    if _NO_SPACE in text:
      for pattern in _PATH_PATTERNS:
        match = pattern.search(text)
        if match:
          return match.group(1)
      return ""
    pending += [current.__cause__, current.__context__,
                *getattr(current, "exceptions", ())]  # An ExceptionGroup's members too.
  return None


@contextlib.contextmanager
def reported(where: str, kept: Callable[[], str] = lambda: "") -> Iterator[None]:
  """Turns a full disk inside the block into DiskFull: '<path>: no space left on device ...'.

  Args:
    where: What the command was writing, named when the error names no path (a directory).
    kept: What a rerun goes on from, computed after the failure (say, the last checkpoint).
  """
  # Orbax's writer threads log their own ENOSPC, with tracebacks, before the main thread hears
  # of it: the line below says it once.
  quiet = _DropNoSpace()
  handlers = logging.getLogger().handlers
  for handler in handlers:
    handler.addFilter(quiet)
  try:
    yield
  except Exception as e:  # pylint: disable=broad-exception-caught
    path = full_path(e)
    if path is None:
      raise
    what_is_kept = kept()
    raise DiskFull(
        f"{path or where}: no space left on device; "
        f"{what_is_kept + ', and ' if what_is_kept else ''}what was written before is kept "
        f"(nothing is left half-written): free space there and run the same command again to "
        f"go on") from None
  finally:
    for handler in handlers:
      handler.removeFilter(quiet)


class _DropNoSpace(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return _NO_SPACE not in text
