"""Orbax checkpoints of the train state, the data iterator and a metadata record.

Layout: WORKDIR/checkpoints/<step>/{state,data,metadata}. Orbax writes each
step into a temporary directory and renames it when complete, so a crash
during a save never leaves a half-written checkpoint that looks finished.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from typing import Any

import grain
import orbax.checkpoint as ocp

FORMAT_VERSION = 1
_VERSIONED_PACKAGES = ("jax", "flax", "optax", "orbax-checkpoint", "grain")


def package_versions() -> dict[str, str]:
  out = {}
  for name in _VERSIONED_PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


class Checkpointer:
  """Saves and restores {state, data iterator, metadata} by step."""

  def __init__(self, directory: str, max_to_keep: int, async_save: bool = True):
    directory = os.path.abspath(directory)  # Orbax needs absolute paths.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(directory, options=options,
                                          item_names=("state", "data", "metadata"))
    self.directory = directory

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator, metadata: dict[str, Any]) -> bool:
    saved = self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        metadata=ocp.args.JsonSave({"format_version": FORMAT_VERSION,
                                    "step": int(step),
                                    "versions": package_versions(), **metadata}),
    ), force=True)
    return saved

  def restore(self, step: int, abstract_state: Any, data_iterator) -> tuple[Any, dict]:
    """Restores the state onto the shardings in `abstract_state` and the iterator in place."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=grain.checkpoint.CheckpointRestore(data_iterator),
        metadata=ocp.args.JsonRestore(),
    ))
    logging.info("restored checkpoint %d from %s", step, self.directory)
    return restored["state"], restored["metadata"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
