"""How the train state is laid out in a checkpoint: big arrays as they are, small ones packed.

Orbax's cost per saved array is roughly fixed (about 1.7 ms of CPU each on the
test machine), and a Transformer's state is mostly small arrays: biases,
layer-norm scales and their two Adam moments. So the arrays of at most
`PACK_MAX_BYTES` are concatenated, one flat array per dtype, replicated over the
mesh, and saved beside the big ones:

    state/arrays/<path of each big array>   as the state holds it (its sharding)
    state/packed/<dtype>                    the small arrays of that dtype, flattened

The record of which array sits where (a `Layout`) goes into the checkpoint's
metadata, so a restore needs nothing but the checkpoint. Neither part depends on
the mesh, so a checkpoint restores onto any device count. Checkpoints of format
2 (before packing) hold the state's arrays at the top level; `Layout.legacy()`
reads them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

PACK_MAX_BYTES = 1 << 18  # 256 KiB: at most 64k float32 values per packed array.

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where each array of a saved state lives: under `arrays_key`, or in a packed group."""
  arrays_key: Path  # ("arrays",); () in format-2 checkpoints.
  groups: dict[str, list[tuple[Path, tuple[int, ...]]]]  # dtype -> [(path, shape)] in order.

  @classmethod
  def legacy(cls) -> Layout:
    return cls(arrays_key=(), groups={})

  def to_json(self) -> dict:
    return {"arrays_key": list(self.arrays_key),
            "groups": {dt: [[list(p), list(s)] for p, s in entries]
                       for dt, entries in self.groups.items()}}

  @classmethod
  def from_json(cls, obj: dict | None) -> Layout:
    if obj is None:
      return cls.legacy()
    return cls(arrays_key=tuple(obj["arrays_key"]),
               groups={dt: [(tuple(p), tuple(s)) for p, s in entries]
                       for dt, entries in obj["groups"].items()})

  def packed(self) -> dict[Path, tuple[str, int, tuple[int, ...]]]:
    """Each packed array's (dtype, offset, shape)."""
    out = {}
    for dtype, entries in self.groups.items():
      offset = 0
      for path, shape in entries:
        out[path] = (dtype, offset, shape)
        offset += int(np.prod(shape, dtype=np.int64))
    return out

  def group_sizes(self) -> dict[str, int]:
    return {dt: sum(int(np.prod(s, dtype=np.int64)) for _, s in entries)
            for dt, entries in self.groups.items()}

  def saved_shapes(self, array_shapes: dict[Path, tuple]) -> dict[Path, tuple]:
    """Every state array's shape, from Orbax's per-array metadata (`array_shapes`, keyed by
    the full path in the saved tree) and the packed record."""
    n = len(self.arrays_key)
    out = {path[n:]: shape for path, shape in array_shapes.items()
           if path[:n] == self.arrays_key}
    out.update({path: shape for path, (_, _, shape) in self.packed().items()})
    return out

  def restore_item(self, wanted: dict[Path, jax.ShapeDtypeStruct]) -> dict:
    """The tree to hand Orbax for restoring the `wanted` arrays (a partial restore)."""
    packed = self.packed()
    item: dict = {}
    for path, x in wanted.items():
      if path not in packed:
        _set(item, self.arrays_key + path, x)
    sharding = _replicated(wanted.values())
    sizes = self.group_sizes()
    for dtype in sorted({packed[p][0] for p in wanted if p in packed}):
      _set(item, ("packed", dtype), jax.ShapeDtypeStruct((sizes[dtype],), jnp.dtype(dtype),
                                                          sharding=sharding))
    return item

  def unpack(self, restored: dict, wanted: dict[Path, jax.ShapeDtypeStruct]) -> dict[Path, Any]:
    """The `wanted` arrays out of a tree restored from `restore_item`, on their shardings."""
    packed = self.packed()
    out = {}
    for path in wanted:
      if path not in packed:
        out[path] = _get(restored, self.arrays_key + path)
    for dtype in sorted({packed[p][0] for p in wanted if p in packed}):
      paths = [p for p in wanted if p in packed and packed[p][0] == dtype]
      pieces = tuple((packed[p][1], packed[p][2]) for p in paths)
      shardings = tuple(wanted[p].sharding for p in paths)
      split = jax.jit(functools.partial(_split, pieces=pieces),
                      out_shardings=shardings if all(shardings) else None)
      out.update(zip(paths, split(_get(restored, ("packed", dtype)))))
    return out


def pack(flat: dict[Path, Any]) -> tuple[dict, Layout]:
  """The tree Orbax saves for a state given as {path: array}, and its layout."""
  groups: dict[str, list[Path]] = {}
  tree: dict = {}
  for path, x in flat.items():
    if _packable(x):
      groups.setdefault(np.dtype(x.dtype).name, []).append(path)
    else:
      _set(tree, ("arrays",) + path, x)
  concat = _concatenate(_replicated(flat.values()))
  for dtype, paths in sorted(groups.items()):
    _set(tree, ("packed", dtype), concat(tuple(flat[p] for p in paths)))
  layout = Layout(arrays_key=("arrays",),
                  groups={dt: [(p, tuple(flat[p].shape)) for p in paths]
                          for dt, paths in sorted(groups.items())})
  return tree, layout


def _packable(x) -> bool:
  dtype = np.dtype(x.dtype) if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended) else None
  return dtype is not None and dtype.kind in "biuf" and x.nbytes <= PACK_MAX_BYTES


def _replicated(leaves) -> Any:
  """Replicated over the mesh of the first named-sharded leaf (None when there is none)."""
  for x in leaves:
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding):
      return NamedSharding(sharding.mesh, P())
  return None


@functools.cache
def _concatenate(sharding):
  """A jitted concatenation of flattened arrays, replicated on `sharding`'s mesh."""
  return jax.jit(lambda xs: jnp.concatenate([jnp.ravel(x) for x in xs]), out_shardings=sharding)


def _split(flat, *, pieces):
  return tuple(flat[o:o + int(np.prod(s, dtype=np.int64))].reshape(s) for o, s in pieces)


def _set(tree: dict, path: Path, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree, path: Path):
  for key in path:
    tree = tree[key]
  return tree
