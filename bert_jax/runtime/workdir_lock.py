"""One training run per workdir: a lock file that names its holder, taken by process 0.

Two runs on one workdir would replace each other's checkpoints and interleave metrics.jsonl.
The lock is WORKDIR/lock.json ({"host", "pid", "started"}), created exclusively: with O_EXCL on a
local or network file system; on gs:// through the Cloud Storage client (gcs_objects.py, imported
only for gs:// paths) with the precondition "no live object" (ifGenerationMatch=0), which the
service enforces, so of two runs started within the same moment one gets it. A lock whose holder
was a process of this host that no longer runs (or this very process, after an earlier call that
crashed) is stale: it is taken over, with a warning. On gs:// the takeover deletes only the
generation it read and then creates as above, so two runs taking over the same stale lock cannot
both win; a run releases a lock only if it still holds it. A holder on another host cannot be
checked from here: the message names it and the file to delete once it is gone. All hosts of a
multi-host job share the workdir, so the lock belongs to the job: process 0 takes it, the others
learn whether it did.

Not covered: other remote file systems (a scheme other than gs://) go through tf.io.gfile, which
offers no create-only-if-absent: there the lock is written after checking that none exists.
"""

import contextlib
import json
import os
import socket
import sys
import time
import types
from typing import Iterator

import jax
from jax.experimental import multihost_utils
import numpy as np
import tensorflow as tf

from bert_jax import errors

LOCK_FILENAME = "lock.json"


def check_usable(workdir: str) -> None:
  """The workdir is a directory this process can write (created if missing).

  Raises:
    errors.UserError: It is a file, or cannot be created or written.
  """
  if _on_gcs(workdir):
    # Cloud Storage has no directories to make, only names; asked through the client the lock
    # uses (tf's gs:// file system may be absent, and knows no emulator).
    if _gcs_objects().is_object(workdir):
      raise errors.UserError(f"--workdir={workdir} is a file, not a directory")
    return
  if tf.io.gfile.exists(workdir) and not tf.io.gfile.isdir(workdir):
    raise errors.UserError(f"--workdir={workdir} is a file, not a directory")
  try:
    tf.io.gfile.makedirs(workdir)
  except (tf.errors.OpError, OSError) as e:
    raise errors.UserError(f"--workdir={workdir} cannot be created: {_reason(e)}") from None
  if "://" not in workdir and not os.access(workdir, os.W_OK | os.X_OK):
    raise errors.UserError(f"--workdir={workdir} is not writable by this user")


@contextlib.contextmanager
def held(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock while the block runs.

  Raises:
    errors.UserError: Another run holds it, or the workdir cannot be used.
  """
  path = os.path.join(workdir, LOCK_FILENAME)
  error = ""
  # A run that stops on a user's mistake leaves no empty directories behind in a workdir it made.
  created = "://" not in workdir and not tf.io.gfile.exists(workdir)
  if jax.process_index() == 0:
    try:
      check_usable(workdir)
      _acquire(path)
    except errors.UserError as e:
      error = str(e)
  if jax.process_count() > 1:
    # Every process stops, or none: the others would otherwise wait for process 0 forever.
    taken = int(multihost_utils.broadcast_one_to_all(np.int32(0 if error else 1)))
    if not taken and not error:
      error = f"--workdir={workdir}: process 0 could not take its lock (its error says why)"
  if error:
    raise errors.UserError(error)
  stopped_by_mistake = False
  try:
    yield
  except errors.UserError:
    stopped_by_mistake = True
    raise
  finally:
    if jax.process_index() == 0:
      _release(path)
      if stopped_by_mistake and created:
        _remove_empty_directories(workdir)


def _remove_empty_directories(top: str) -> None:
  """Removes `top` and the directories under it that hold no file (local paths only)."""
  if "://" in top:
    return
  for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
    try:
      os.rmdir(directory)  # Only ever succeeds on an empty directory.
    except OSError:
      pass


def _acquire(path: str) -> None:
  mine = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
  for _ in range(3):  # A stale lock taken over, or a race lost to a lock then released.
    holder, generation = _read(path)
    if holder is not None:
      if not _stale(holder):
        raise errors.UserError(
            f"--workdir={os.path.dirname(path)} is in use by process {holder.get('pid')} on "
            f"{holder.get('host')} since {holder.get('started')}: wait for that run to end, or "
            f"delete {path} if it is gone")
      print(f"Warning: taking over the stale lock {path} of process {holder.get('pid')} on "
            f"{holder.get('host')} (no longer running)", file=sys.stderr, flush=True)
      if _on_gcs(path):
        # Only the lock read: if another run took it over meanwhile, read again who holds it.
        if not _gcs_objects().delete_if_generation(path, generation):
          continue
      else:
        tf.io.gfile.remove(path)
    if _create(path, json.dumps(mine) + "\n"):
      return
  raise errors.UserError(f"{path}: could not take the workdir's lock (another run keeps taking it)")


def _create(path: str, text: str) -> bool:
  """Writes `path` only if it does not exist; False if another process created it first."""
  if _on_gcs(path):
    return _gcs_objects().create_if_absent(path, text)
  if "://" in path:
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(text)
    return True
  try:
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  except OSError as e:
    raise errors.UserError(f"{path}: cannot be written: {_reason(e)}") from None
  with os.fdopen(descriptor, "w") as f:
    f.write(text)
  return True


def _read(path: str) -> tuple[dict | None, int | None]:
  """The lock's holder (None if there is no lock) and, on gs://, the generation read."""
  generation = None
  try:
    if _on_gcs(path):
      found = _gcs_objects().read(path)
      if found is None:
        return None, None
      text, generation = found
    else:
      with tf.io.gfile.GFile(path) as f:
        text = f.read()
    holder = json.loads(text)
  except tf.errors.NotFoundError:
    return None, None
  except (json.JSONDecodeError, UnicodeDecodeError):
    return {"host": "?", "pid": "?", "started": "? (an unreadable lock file)"}, generation
  return (holder if isinstance(holder, dict) else {}), generation


def _stale(holder: dict) -> bool:
  """Whether the holder is known to be gone: a process of this host that no longer runs."""
  if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
    return False
  if holder["pid"] == os.getpid():
    return True  # This process, whose earlier run ended without releasing it.
  try:
    os.kill(holder["pid"], 0)
  except ProcessLookupError:
    return True
  except PermissionError:
    return False  # Alive, another user's.
  return False


def _release(path: str) -> None:
  if _on_gcs(path):
    _release_on_gcs(path)
    return
  holder, _ = _read(path)
  if holder is not None and holder.get("pid") == os.getpid() and (
      holder.get("host") == socket.gethostname()):
    tf.io.gfile.remove(path)


def _release_on_gcs(path: str) -> None:
  try:
    holder, generation = _read(path)
    if holder is not None and holder.get("pid") == os.getpid() and (
        holder.get("host") == socket.gethostname()):
      _gcs_objects().delete_if_generation(path, generation)  # Not one taken over meanwhile.
  except errors.UserError as e:
    # The run's work is done (or its own error is on its way out): say what is left behind
    # rather than fail it, or hide its error, now.
    print(f"Warning: the workdir's lock could not be released ({e}); delete {path} before "
          f"the next run", file=sys.stderr, flush=True)


def _on_gcs(path: str) -> bool:
  return path.startswith("gs://")


def _gcs_objects() -> types.ModuleType:
  # Imported here: local runs never load the Cloud Storage client.
  from bert_jax.runtime import gcs_objects  # pylint: disable=g-import-not-at-top
  return gcs_objects


def _reason(error: BaseException) -> str:
  return " ".join(str(getattr(error, "message", "") or error).split())[:200]
