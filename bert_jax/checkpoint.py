"""A thin layer over Orbax's CheckpointManager: async save, resume from the latest, metadata.

A checkpoint is a step directory with two items: 'state' (the train state, sharded arrays) and
'meta' (JSON: how far the data was read, the model config). Orbax writes a step to a temporary
directory and renames it when complete, so a crash mid-save never leaves a step that looks whole.
"""

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores `(state, meta)` under `directory`, keeping the newest `max_to_keep`."""

  def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save),
        item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

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
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")

