"""Compressed parameters as stored: integers and scales, non-zeros and bitmasks.

`encode` turns a parameter tree (float arrays, or `quant.QTensor`s) into plain
arrays for Orbax plus a JSON spec of how each was stored; `decode` turns them
back. Per parameter (path "a/b/kernel"):

  dense     the float array as it is (biases, norms, what was not compressed)
  int8      {"qvalue": int8, "scale": float32}       (quant.QTensor)
  int4      {"qvalue": uint8, two values a byte, "scale"}
  +sparse   the values (floats, or int8 for quantized weights) replaced by
            {"values": the non-zeros, "bitmask": one bit per weight}, wherever
            that is smaller (a pruned weight); decoded back to the dense array.

Decoded quantized weights stay `QTensor`s (integers in memory); the decode and
eval programs turn them into floats inside each call (`Programs.for_params`).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from transformer_jax.compress import quant, sparsity

FORMAT = 1


def _flat(tree) -> dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: isinstance(x, quant.QTensor))[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): x for path, x in leaves}


def _set(tree: dict, path: str, value) -> None:
  keys = path.split("/")
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def _maybe_sparse(values: np.ndarray, allow: bool) -> tuple[Any, bool]:
  """The non-zeros and a bitmask where that is smaller (and `allow`), else `values`."""
  if allow and sparsity.sparse_bytes(values) < values.nbytes:
    return sparsity.encode_sparse(values), True
  return values, False


def encode(params: Any, names: Any) -> tuple[dict, dict]:
  """(tree of numpy arrays to save, {"format": 1, "params": {path: how}})."""
  arrays: dict = {}
  spec: dict = {}
  name_leaves = jax.tree.leaves(names, is_leaf=lambda x: x is None or
                                isinstance(x, jax.sharding.PartitionSpec))
  flat = _flat(params)
  if len(name_leaves) != len(flat):
    raise ValueError(f"{len(name_leaves)} logical names for {len(flat)} parameters")
  for (path, x), n in zip(flat.items(), name_leaves):
    n = tuple(n) if n is not None else None
    if isinstance(x, quant.QTensor):
      ints = np.asarray(quant.unpack_int4(x.qvalue, x.shape) if x.bits == 4 else x.qvalue)
      sparse = sparsity.sparse_bytes(ints) < np.asarray(x.qvalue).nbytes
      stored = sparsity.encode_sparse(ints) if sparse else np.asarray(x.qvalue)
      _set(arrays, path, {"qvalue": stored, "scale": np.asarray(x.scale)})
      spec[path] = {"encoding": f"int{x.bits}", "sparse": sparse, "shape": list(x.shape),
                    "dtype": "float32", "stored_bytes": stored_bytes(stored) + x.scale.nbytes}
    else:
      a = np.asarray(x)
      stored, sparse = _maybe_sparse(a, allow=sparsity.prunable(n, a.shape))
      _set(arrays, path, stored)
      spec[path] = {"encoding": "dense", "sparse": sparse, "shape": list(a.shape),
                    "dtype": a.dtype.name, "stored_bytes": stored_bytes(stored)}
  return arrays, {"format": FORMAT, "params": spec}


def decode(arrays: dict, spec: dict) -> dict[str, Any]:
  """{path: numpy array or QTensor of numpy arrays} from `encode`'s output."""
  if spec.get("format") != FORMAT:
    raise ValueError(f"compressed format {spec.get('format')!r}; this version reads {FORMAT}")
  out = {}
  for path, how in spec["params"].items():
    node = arrays
    for k in path.split("/"):
      node = node[k]
    shape = tuple(how["shape"])
    if how["encoding"] == "dense":
      out[path] = (sparsity.decode_sparse(node, shape, np.dtype(how["dtype"])) if how["sparse"]
                   else np.asarray(node))
      continue
    bits = int(how["encoding"][3:])
    q = node["qvalue"]
    if how["sparse"]:
      q = sparsity.decode_sparse(q, shape, np.int8)
      if bits == 4:
        q = np.asarray(quant.pack_int4(q))
    out[path] = quant.QTensor(qvalue=np.asarray(q), scale=np.asarray(node["scale"]), bits=bits,
                              shape=shape)
  return out


def spec_shapes(spec: dict) -> dict[tuple[str, ...], tuple]:
  return {tuple(p.split("/")): tuple(h["shape"]) for p, h in spec["params"].items()}


def stored_bytes(arrays) -> int:
  """Bytes of the arrays in `arrays` (a tree, or one array)."""
  return sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(arrays))
