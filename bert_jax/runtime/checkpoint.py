"""A thin layer over Orbax's CheckpointManager: async save, resume from the latest, metadata.

A checkpoint is a step directory with two items: 'state' (the train state, sharded arrays) and
'meta' (JSON: how far the data was read, the model config). Orbax writes a step to a temporary
directory and renames it when complete, so a crash mid-save never leaves a step that looks whole
(unfinished ones are never listed). A step that looks whole may still not read (files truncated
or damaged afterwards): resuming then warns and falls back to the newest step that reads.
"""

import os
import re
import sys
from collections.abc import Callable
from typing import Any

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from bert_jax import disk_full
from bert_jax import errors

# Appended to the name of a step directory that could not be read, to set it aside (kept for a
# look, never deleted) so that the resumed run can save that step again.
UNREADABLE_SUFFIX = ".unreadable"
# The same for a save that never completed (its process was killed while writing it).
UNFINISHED_SUFFIX = ".unfinished"
# A step's directory: finalized ('12'), or a save in flight or cut short: Orbax's temporary name
# on a local disk ('12.orbax-checkpoint-tmp-...'), the final name without its commit marker on
# gs://.
_STEP_DIRECTORY = re.compile(r"(\d+)(\.orbax-checkpoint-tmp.*)?/?")


class Checkpointer:
  """Saves and restores `(state, meta)` under `directory`, keeping the newest `max_to_keep`."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save,
            # Fine-tuning saves checkpoints/ and best/ at the same step, both in flight at
            # once: without a prefix of their own their processes' barriers share names, and a
            # multi-process run hung or finalised one with another's metadata. The directory's
            # name is the same on every host.
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=os.path.basename(os.path.normpath(directory)))),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_meta(self) -> tuple[int | None, dict[str, Any]]:
    """The newest step whose metadata reads, and that metadata; (None, {}) with no checkpoint.

    Raises:
      errors.UserError: There are checkpoints, but none reads.
    """
    found = self._newest_readable(self.restore_meta)
    return found if found is not None else (None, {})

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]]:
    """Restores the newest step that reads whole (see `restore`): (step, state, meta).

    Newer steps that do not read are set aside (renamed with UNREADABLE_SUFFIX), so the resumed
    run can save those steps again.

    Raises:
      errors.UserError: There is no checkpoint, or none reads.
    """
    found = self._newest_readable(lambda step: self.restore(step, abstract_state))
    if found is None:
      raise errors.UserError(f"no checkpoint to restore in {self.directory}")
    step, (state, meta) = found
    self._set_aside([s for s in self.all_steps() if s > step])
    return step, state, meta

  def _newest_readable(self, read: Callable[[int], Any]) -> tuple[int, Any] | None:
    """(step, read(step)) of the newest step `read` succeeds on, on every process.

    Returns None when there are no checkpoints. Falling back past an unreadable step is worth a
    warning, never silence; and with no readable step at all, starting afresh would later
    overwrite what is there, so that is an error.
    """
    steps = self.all_steps()
    first_error = None
    for step in reversed(steps):
      try:
        result, error = read(step), None
      # Orbax, tensorstore and json raise many kinds; for a step on disk all mean "unreadable".
      except Exception as e:  # pylint: disable=broad-exception-caught
        result, error = None, e
      if _on_every_process(error is None):
        return step, result
      reason = _one_line(error) if error is not None else "it does not read on another host"
      first_error = first_error or reason
      print(f"Warning: the checkpoint at step {step} in {self.directory} cannot be read "
            f"({reason}); falling back to the one before.", file=sys.stderr, flush=True)
    if steps:
      raise errors.UserError(
          f"none of the checkpoints in {self.directory} (steps {', '.join(map(str, steps))}) "
          f"can be read (step {steps[-1]}: {first_error}); not starting afresh over them: "
          f"move them away to do so")
    return None

  def _set_aside(self, steps: list[int]) -> None:
    if not steps:
      return
    if jax.process_index() == 0:
      for step in steps:
        path = epath.Path(self.directory) / str(step)
        target = _free_name(path.parent / (path.name + UNREADABLE_SUFFIX))
        path.rename(target)
        print(f"Set the unreadable checkpoint at step {step} aside as {target}", file=sys.stderr,
              flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("bert_jax checkpoint set aside")
    self._manager.reload()

  def set_aside_unfinished(self) -> None:
    """Renames the saves that never completed (UNFINISHED_SUFFIX), with a line for each.

    Only a run that holds the workdir's lock may call it: a save in flight of another run
    looks the same.
    """
    directory = epath.Path(self.directory)
    if jax.process_index() == 0 and directory.is_dir():
      finished = set(self.all_steps())
      for path in sorted(directory.iterdir()):
        match = _STEP_DIRECTORY.fullmatch(path.name)
        if match and int(match.group(1)) not in finished:
          step = int(match.group(1))
          target = _free_name(directory / f"{step}{UNFINISHED_SUFFIX}")
          path.rename(target)
          print(f"Set aside the unfinished save of step {step} in {self.directory} as {target} "
                f"(its process stopped while writing it; delete it once no run uses this "
                f"workdir)", file=sys.stderr, flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("bert_jax unfinished checkpoints set aside")
    self._manager.reload()

  def save(self, step: int, state: Any, meta: dict[str, Any], force: bool = False) -> bool:
    """Starts an async save of `state` and `meta` at `step`; returns whether one was started."""
    return self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(meta)), force=force)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores onto the shardings of `abstract_state` (a tree of jax.ShapeDtypeStruct)."""
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])

  def restore_meta(self, step: int) -> dict[str, Any]:
    """Only the JSON metadata of `step` (cheap: no arrays are read)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])

  def wait_until_finished(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      if disk_full.full_path(e) is not None:
        self._discard_unfinished()
      raise

  def close(self) -> None:
    self.wait_until_finished()
    self._manager.close()

  def _discard_unfinished(self) -> None:
    """Deletes this run's saves that a full disk cut short: never complete, they only hold the
    space a rerun needs (one cut short by a kill is set aside instead: set_aside_unfinished)."""
    directory = epath.Path(self.directory)
    if jax.process_index() != 0 or not directory.is_dir():
      return
    for path in directory.iterdir():
      if ".orbax-checkpoint-tmp" in path.name and _STEP_DIRECTORY.fullmatch(path.name):
        path.rmtree(missing_ok=True)


def _free_name(path: epath.Path) -> epath.Path:
  """`path`, or `path2`, `path3`... : the first that does not exist."""
  candidate, copy = path, 1
  while candidate.exists():
    copy += 1
    candidate = path.parent / f"{path.name}{copy}"
  return candidate


def _on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process: hosts read their own shards, and may disagree."""
  if jax.process_count() == 1:
    return ok
  return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def _one_line(error: BaseException, limit: int = 300) -> str:
  text = " ".join(str(error).split())
  if len(text) > limit:
    text = text[:limit] + "..."
  return f"{type(error).__name__}: {text}"


def resume_point(directory: str | None) -> str:
  """Where a new run of the command starts: the newest finalized step of the checkpoints in
  `directory` (None: a command that saves none), in words."""
  if directory is None:
    return "this command saves no checkpoint"
  try:
    steps = ocp.utils.checkpoint_steps(epath.Path(directory))  # Finalized only.
  except (OSError, ValueError):
    steps = []
  if not steps:
    return f"there is no complete checkpoint in {directory} yet"
  return f"the last complete checkpoint is step {max(steps)} in {directory}"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")

