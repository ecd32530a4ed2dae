"""Parameters alone from a run's checkpoints: `config.init_from`, the tools' restore,
and compressed checkpoints.

A compressed checkpoint (the compress tool's, `save_compressed`) holds parameters
only, as integers and scales or non-zeros and bitmasks (compress/stored.py), with the
record of how in its metadata ("compression"); the tools and `config.init_from`
read it as they read any checkpoint, and `train.py` fine-tunes from it. The
checkpoints themselves (layout, saving, the train state) are checkpoint.py's.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from transformer_jax.checkpoint import layout as checkpoint_layout, manager as checkpoint
from transformer_jax.compress import quant, stored as compressed


def _open_run(source: str, what: str):
  """A read-only manager over a run's checkpoints (`source`: its workdir or checkpoints dir)."""
  directory = source
  if os.path.isdir(os.path.join(source, "checkpoints")):
    directory = os.path.join(source, "checkpoints")
  if not os.path.isdir(directory):
    raise checkpoint.CheckpointError(f"{what}={source!r}: no such directory")
  manager = ocp.CheckpointManager(
      os.path.abspath(directory), options=ocp.CheckpointManagerOptions(read_only=True),
      item_handlers=checkpoint.item_handlers(ocp.PyTreeCheckpointHandler()))
  return manager, directory


def _pick_step(manager, directory: str, step: int, what: str, step_what: str) -> int:
  steps = sorted(manager.all_steps())
  if not steps:
    raise checkpoint.CheckpointError(f"{what}: no checkpoint in {directory}")
  if step < 0:
    return steps[-1]
  if step not in steps:
    raise checkpoint.CheckpointError(f"{step_what}={step}: {directory} holds steps {steps}")
  return step


def _saved_param_shapes(manager, step: int,
                        layout: checkpoint_layout.Layout) -> dict[tuple[str, ...], tuple]:
  saved = checkpoint.saved_shapes(manager, step, layout)
  return {k[1:]: v for k, v in saved.items() if k[0] == "params"}


def _restore_params(manager, step: int, layout: checkpoint_layout.Layout,
                    wanted: dict[tuple[str, ...], Any]) -> dict[tuple[str, ...], Any]:
  """{path within params: array} for the `wanted` parameters."""
  got, _ = checkpoint.restore_arrays(manager, step, layout,
                                     {("params",) + k: v for k, v in wanted.items()})
  return {k[1:]: v for k, v in got.items()}


def _abstract(x) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)


def load_params(source: str, step: int, params: Any, pattern: str = "") -> tuple[Any, list[str]]:
  """`params` with the entries of another run's checkpoint put in (for config.init_from).

  Takes every parameter whose "/"-joined path matches `pattern` (all when
  empty) and whose saved shape equals the model's; the others stay as they are.
  Returns (params, the paths taken). Errors name the directory or the pattern.
  """
  manager, directory = _open_run(source, "config.init_from.workdir")
  try:
    step = _pick_step(manager, directory, step, f"config.init_from.workdir={source!r}",
                      "config.init_from.step")
    spec = _compression(manager, step)
    if spec is not None:  # as floats: training starts from them.
      got = {tuple(p.split("/")): quant.materialize(x)
             for p, x in _decoded(manager, step, spec).items()}
      saved = {p: tuple(np.shape(x)) for p, x in got.items()}
    else:
      layout = checkpoint.saved_layout(manager, step)
      saved = _saved_param_shapes(manager, step, layout)
    regex = re.compile(pattern) if pattern else None
    wanted = {}
    for path, x in checkpoint.flat(params).items():
      name = "/".join(path)
      if (regex is None or regex.fullmatch(name)) and saved.get(path) == tuple(x.shape):
        wanted[path] = _abstract(x)
    if not wanted:
      raise checkpoint.CheckpointError(
          f"config.init_from: no parameter of {directory} step {step} matches the model "
          f"(pattern {pattern!r})")
    if spec is not None:
      got = {p: jax.device_put(np.asarray(got[p], wanted[p].dtype), wanted[p].sharding)
             for p in wanted}
    else:
      got = _restore_params(manager, step, layout, wanted)
  finally:
    manager.close()
  merged = jax.tree_util.tree_map_with_path(
      lambda p, x: got.get(tuple(checkpoint.key_name(k) for k in p), x), params)
  return merged, sorted("/".join(p) for p in got)


def restore_params(workdir: str, step: int, abstract_params: Any) -> tuple[Any, int]:
  """Every parameter of a run's checkpoint (`step` -1: the latest), placed on the shardings
  of `abstract_params`; returns (params, step). For the translate and generate tools."""
  manager, directory = _open_run(workdir, "--workdir")
  try:
    step = _pick_step(manager, directory, step, f"--workdir={workdir!r}", "--step")
    spec = _compression(manager, step)
    want = checkpoint.flat(abstract_params)
    what = f"checkpoint {os.path.join(directory, str(step))} does not match the model of " \
           f"{workdir}/config.json"
    if spec is not None:
      checkpoint.check_shapes(compressed.spec_shapes(spec), want, what)
      decoded = _decoded(manager, step, spec)
      got = {k: _place(decoded["/".join(k)], v) for k, v in want.items()}
    else:
      layout = checkpoint.saved_layout(manager, step)
      checkpoint.check_shapes(_saved_param_shapes(manager, step, layout), want, what)
      got = _restore_params(manager, step, layout, {k: _abstract(v) for k, v in want.items()})
  finally:
    manager.close()
  return checkpoint.by_path(abstract_params, got), step


# ------------------------------------------------------------- compressed checkpoints


def save_compressed(directory: str, step: int, params: Any, names: Any,
                    metadata: dict[str, Any]) -> dict:
  """Writes `params` (floats and `quant.QTensor`s) compressed as checkpoint `step` in
  `directory` (a run's checkpoints folder); returns the spec of how each was stored."""
  arrays, spec = compressed.encode(jax.device_get(params), names)
  manager = ocp.CheckpointManager(
      os.path.abspath(directory), options=ocp.CheckpointManagerOptions(create=True),
      item_handlers=checkpoint.item_handlers(ocp.PyTreeCheckpointHandler()))
  try:
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeSave(arrays), data=ocp.args.JsonSave({}),
        metadata=ocp.args.JsonSave({"format_version": checkpoint.FORMAT_VERSION,
                                    "step": int(step),
                                    "versions": checkpoint.package_versions(),
                                    "compression": spec, **metadata})), force=True)
    manager.wait_until_finished()
  finally:
    manager.close()
  return spec


def run_metadata(source: str, step: int) -> dict:
  """The metadata saved with checkpoint `step` of `source` (a workdir or checkpoints folder)."""
  manager, _ = _open_run(source, "--workdir")
  try:
    return checkpoint.read_metadata(manager, step)
  finally:
    manager.close()


def compression_spec(source: str, step: int) -> dict | None:
  """How checkpoint `step` of `source` (a workdir or checkpoints folder) stores its
  parameters (compress/stored.py's spec); None for an ordinary checkpoint."""
  manager, _ = _open_run(source, "--workdir")
  try:
    return _compression(manager, step)
  finally:
    manager.close()


def _compression(manager, step: int) -> dict | None:
  return checkpoint.read_metadata(manager, step).get("compression")


def _decoded(manager, step: int, spec: dict) -> dict[str, Any]:
  """{"a/b/kernel": numpy array or QTensor of numpy arrays} of a compressed checkpoint."""
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore()))
  return compressed.decode(jax.device_get(restored["state"]), spec)


def _place(x, abstract):
  """A decoded parameter on `abstract`'s sharding (a QTensor's scale replicated)."""
  if not isinstance(x, quant.QTensor):
    return jax.device_put(np.asarray(x, abstract.dtype), abstract.sharding)
  sharding = abstract.sharding
  replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec()) \
      if isinstance(sharding, jax.sharding.NamedSharding) else sharding
  same = tuple(np.shape(x.qvalue)) == tuple(abstract.shape)
  return quant.QTensor(qvalue=jax.device_put(x.qvalue, sharding if same else replicated),
                       scale=jax.device_put(x.scale, replicated), bits=x.bits, shape=x.shape)
