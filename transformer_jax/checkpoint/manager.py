"""Orbax checkpoints of the train state, the data position and a metadata record.

Layout: WORKDIR/checkpoints/<step>/{state,data,metadata}; inside state, big
arrays as they are and small ones packed per dtype (see checkpoint/layout.py,
whose record goes into metadata). Orbax writes each
step into a temporary directory and renames it when complete, so a crash (even
SIGKILL) during a save never leaves a half-written checkpoint that looks
finished. Saves are asynchronous: `save` returns once the arrays are copied
off the devices, and the disk write runs in the background. Kept: the last
`max_to_keep` checkpoints plus the best `keep_best` by an eval metric.

The data position is every row stream's state, gathered from all processes and
keyed by global row, so a checkpoint restores onto any process split.

Parameters alone, read from another run's checkpoints (`config.init_from`, the
tools) or written compressed, are checkpoint/params.py's job.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from transformer_jax.checkpoint.layout import Layout, pack
from transformer_jax.errors import CheckpointError

FORMAT_VERSION = 3  # 3: small arrays packed (checkpoint/layout.py); 2 is still read.
_VERSIONED_PACKAGES = ("jax", "flax", "optax", "orbax-checkpoint", "grain")


@functools.cache
def package_versions() -> dict[str, str]:
  out = {}
  for name in _VERSIONED_PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def _allgather_json(obj: Any) -> list[Any]:
  """Every process's `obj` (JSON-serialisable), in process order."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.array([len(data)], np.int32)).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:len(data)] = data
  blobs = multihost_utils.process_allgather(padded).reshape(len(lengths), -1)
  return [json.loads(bytes(b[:n]).decode()) for b, n in zip(blobs, lengths)]


def global_data_state(stream) -> dict:
  """The training stream's state with every process's rows."""
  states = _allgather_json(stream.get_state())
  rows = {}
  for s in states:
    rows.update(s["rows"])
  return {"global_batch_size": states[0]["global_batch_size"], "rows": rows}


def key_name(k) -> str:
  """A pytree key as a plain name: dict keys, dataclass fields and sequence indices alike."""
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def flat(tree) -> dict[tuple[str, ...], Any]:
  return {tuple(key_name(k) for k in path): x
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def by_path(abstract, got: dict[tuple[str, ...], Any]) -> Any:
  """`abstract`'s tree with each leaf replaced by `got[its path]`."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: got[tuple(key_name(k) for k in p)], abstract)


def read_metadata(manager, step: int) -> dict:
  return manager.restore(step, args=ocp.args.Composite(
      metadata=ocp.args.JsonRestore()))["metadata"]


def saved_layout(manager, step: int) -> Layout:
  return Layout.from_json(read_metadata(manager, step).get("state_layout"))


def saved_shapes(manager, step: int, layout: Layout) -> dict[tuple[str, ...], tuple]:
  """The shape of every array of the state saved at `step`."""
  saved = manager.item_metadata(step)["state"]
  if saved is None:
    raise OSError(f"cannot read the array metadata of checkpoint {step}")
  return layout.saved_shapes({k: tuple(v.shape) for k, v in flat(saved).items()})


def restore_arrays(manager, step: int, layout: Layout, wanted: dict[tuple[str, ...], Any],
                    **other_items) -> tuple[dict[tuple[str, ...], Any], dict]:
  """The `wanted` arrays ({path: abstract array}) of the state saved at `step`, and the other
  items asked for (`name=ocp.args...Restore()`)."""
  item = layout.restore_item(wanted)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
          partial_restore=True),
      **other_items))
  return layout.unpack(restored["state"], wanted), restored


def check_shapes(saved: dict[tuple[str, ...], tuple], want: dict[tuple[str, ...], Any],
                 what: str, advice: str = "", extra_is_error: bool = False) -> None:
  """Raises CheckpointError("WHAT (N arrays differ): path: saved S, model M; ...ADVICE")
  when a `want` array's shape differs from the saved one (or, with `extra_is_error`,
  a saved array is not wanted)."""
  diffs = [f"{'/'.join(k)}: saved {saved.get(k)}, model {tuple(x.shape)}"
           for k, x in want.items() if saved.get(k) != tuple(x.shape)]
  if extra_is_error:
    diffs += [f"{'/'.join(k)}: saved {v}, not in the model" for k, v in saved.items()
              if k not in want]
  if diffs:
    raise CheckpointError(f"{what} ({len(diffs)} arrays differ): " + "; ".join(diffs[:5])
                          + advice)


def item_handlers(state_handler=None) -> dict[str, Any]:
  """Known up front, so a fresh process can read a checkpoint's metadata before restoring."""
  return {"state": state_handler or ocp.PyTreeCheckpointHandler(use_compression=False),
          "data": ocp.JsonCheckpointHandler(),
          "metadata": ocp.JsonCheckpointHandler()}


# The operating system's words for the disk troubles a save meets, found in Orbax's errors.
_OS_ERRORS = ("No space left on device", "Read-only file system", "Permission denied",
              "Input/output error", "Disk quota exceeded")


class Checkpointer:
  """Saves and restores {state, data position, metadata} by step."""

  def __init__(self, directory: str, max_to_keep: int, keep_best: int = 0,
               best_metric: str = "eval/loss", best_mode: str = "min",
               async_save: bool = True):
    directory = os.path.abspath(directory)  # Orbax needs absolute paths.
    policies = [pp.LatestN(n=max_to_keep)]
    if keep_best > 0:
      policies.append(pp.BestN(get_metric_fn=lambda m: m[best_metric],
                               reverse=best_mode == "min", n=keep_best,
                               keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        create=True, enable_async_checkpointing=async_save,
        preservation_policy=pp.AnyPreservationPolicy(policies))
    self._manager = ocp.CheckpointManager(directory, options=options,
                                          item_handlers=item_handlers())
    self.directory = directory
    self._best_metric = best_metric
    # An asynchronous save is watched by a thread that waits for it; its failure is
    # reported by the next `check()` (every step), not at the next save.
    self._watcher: threading.Thread | None = None
    self._failure: CheckpointError | None = None
    self._reported = False

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict, metadata: dict[str, Any],
           metrics: dict[str, float] | None = None) -> bool:
    """Starts an asynchronous save; `metrics` (with the best-by metric) ranks it."""
    if metrics is not None and self._best_metric not in metrics:
      metrics = None
    self._join_watcher()
    self.check()
    tree, layout = pack(flat(state))
    try:
      saved = self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeSave(tree),
          data=ocp.args.JsonSave(data_state),
          metadata=ocp.args.JsonSave({"format_version": FORMAT_VERSION,
                                      "step": int(step),
                                      "versions": package_versions(),
                                      "state_layout": layout.to_json(), **metadata}),
      ), metrics=metrics, force=True)
    except Exception as e:  # pylint: disable=broad-except
      self._failure = self._save_error(step, e)
      self.check()
    self._watcher = threading.Thread(target=self._watch, args=(step,), daemon=True)
    self._watcher.start()
    return saved

  def _watch(self, step: int) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._failure = self._save_error(step, e)

  def _join_watcher(self) -> None:
    if self._watcher is not None:
      self._watcher.join()
      self._watcher = None

  def _save_error(self, step: int, error: Exception) -> CheckpointError:
    text = str(error).strip()
    known = [e for e in _OS_ERRORS if e in text]
    reason = known[0] if known else (text.splitlines()[0][:300] if text else
                                     type(error).__name__)
    good = [int(d) for d in os.listdir(self.directory) if d.isdigit() and int(d) != step] \
        if os.path.isdir(self.directory) else []
    kept = (f"the last complete checkpoint, step {max(good)}, is kept and restorable"
            if good else "no earlier checkpoint exists")
    return CheckpointError(
        f"saving checkpoint {step} in {self.directory} failed: {reason}. The run stopped; "
        f"{kept}. Free disk space or fix the folder, then run the same command to resume")

  def check(self) -> None:
    """Raises the failure of an earlier asynchronous save (CheckpointError), once."""
    if self._failure is not None and not self._reported:
      self._reported = True
      raise self._failure

  def metadata(self, step: int) -> dict:
    return read_metadata(self._manager, step)

  def check_shapes(self, step: int, abstract_state: Any, layout: Layout) -> None:
    """Raises CheckpointError naming the arrays whose saved shape differs from the model's."""
    check_shapes(saved_shapes(self._manager, step, layout), flat(abstract_state),
                 f"checkpoint {os.path.join(self.directory, str(step))} does not match the model",
                 ". Change the config back, or start a new workdir (config.init_from can "
                 "take the matching parameters)", extra_is_error=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
    """Restores (state onto the shardings in `abstract_state`, data state, metadata)."""
    layout = saved_layout(self._manager, step)
    self.check_shapes(step, abstract_state, layout)
    others = {"data": ocp.args.JsonRestore(), "metadata": ocp.args.JsonRestore()}
    if layout.arrays_key:
      got, restored = restore_arrays(self._manager, step, layout, flat(abstract_state),
                                      **others)
      state = by_path(abstract_state, got)
    else:  # format 2: the state's own tree, tuples saved as lists.
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              abstract_state,
              restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)),
          **others))
      state = restored["state"]
    logging.info("restored checkpoint %d from %s", step, self.directory)
    return state, restored["data"], restored["metadata"]

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict, dict] | None:
    """The newest checkpoint that restores; older ones stand in for unreadable ones.

    A shape mismatch is not skipped (an older checkpoint would not fit either).
    """
    steps = self.all_steps()
    errors = []
    for step in reversed(steps):
      try:
        return (step, *self.restore(step, abstract_state))
      except CheckpointError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        path = os.path.join(self.directory, str(step))
        errors.append(f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        logging.warning("checkpoint %s is unreadable (%s); trying the one before", path,
                        errors[-1])
        print(f"warning: checkpoint {path} is unreadable; trying the one before", flush=True)
    if errors:
      raise CheckpointError("no readable checkpoint: " + " | ".join(errors))
    return None

  def wait(self) -> None:
    """Waits for the save in flight; raises CheckpointError if it failed."""
    self._join_watcher()
    self.check()

  def close(self) -> None:
    """Waits for the save in flight (a failure already raised is not raised again)."""
    self._join_watcher()
    try:
      self.check()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        if not self._reported:
          raise
