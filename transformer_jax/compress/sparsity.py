"""Magnitude pruning: masks, a gradual schedule, an optax transformation, compact storage.

Which weights are pruned: the kernels of the matrix products (attention, MLP,
heads), not the lookup tables (embeddings, positions) nor biases and norms.

  - Unstructured: the weights of smallest |w| go, `scope` "layer" (the same
    fraction of every kernel) or "global" (one threshold over all kernels).
  - Structured (`structure="groups"`): whole MLP hidden units (a column of `wi`,
    its bias, a row of `wo`) and whole attention heads (the head's slices of
    query, key, value and out), the groups of smallest L2 norm within each block.

The target is reached gradually (Zhu & Gupta, 2017): the sparsity at step t
between `start_step` and `end_step` is s * (1 - (1 - (t - start) / (end - start))^3),
masks recomputed every `update_every` steps; start == end prunes in one shot.
The optax transformation goes last in the chain and turns each update into
`u * mask - p * (1 - mask)`, so a masked weight is exactly 0 after every step.

A pruned weight is stored compactly: its non-zero values and a bitmask
(`encode_sparse` / `decode_sparse`, numpy).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer_jax.compress import quant

SCOPES = ("layer", "global")
STRUCTURES = ("none", "groups")
GROUP_AXES = ("mlp", "heads")  # a structured group: one index along one of these axes.


def prunable(names: tuple | None, shape: tuple) -> bool:
  """Kernels of matrix products: at least 2-D and not a lookup table."""
  if not quant.quantizable(names, shape):
    return False
  names = tuple(names or ())
  lead = 1 if names[:1] == ("layers",) else 0
  return not (names[lead:lead + 1] and names[lead] in quant.LOOKUP_AXES)


def sparsity_at(step, target: float, start: int, end: int):
  """The cubic schedule's sparsity at `step` (0 before `start`, `target` from `end`)."""
  if end <= start:
    return jnp.where(step >= start, target, 0.0)
  frac = jnp.clip((step - start) / (end - start), 0.0, 1.0)
  return jnp.where(step >= start, target * (1.0 - (1.0 - frac) ** 3), 0.0)


def _names_list(params: Any, names: Any) -> list:
  flat = jax.tree.leaves(params)
  if names is None:
    return [None] * len(flat)
  leaves = jax.tree.leaves(names, is_leaf=lambda x: x is None or
                           isinstance(x, jax.sharding.PartitionSpec))
  return [tuple(n) if n is not None else None for n in leaves]


def _keep_largest(scores: jax.Array, sparsity) -> jax.Array:
  """Mask of `scores`' shape that drops floor(sparsity * n) of the smallest."""
  flat = scores.reshape(-1)
  n = flat.shape[0]
  k = jnp.floor(sparsity * n).astype(jnp.int32)
  rank = jnp.argsort(jnp.argsort(flat))  # 0 = smallest.
  return (rank >= k).reshape(scores.shape)


def magnitude_masks(params: Any, names: Any, sparsity, scope: str = "layer",
                    structure: str = "none") -> Any:
  """A boolean mask per parameter (all True where not prunable) at `sparsity`."""
  flat, treedef = jax.tree.flatten(params)
  name_list = _names_list(params, names)
  ok = [prunable(n, x.shape) for x, n in zip(flat, name_list)]
  masks = [jnp.ones(x.shape, bool) for x in flat]
  if structure == "groups":
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for axis_name in GROUP_AXES:
      blocks: dict[tuple, list[int]] = {}  # a module (the kernels' parent) -> its kernels.
      for i, (path, n) in enumerate(zip(paths, name_list)):
        if ok[i] and axis_name in (n or ()):
          blocks.setdefault(tuple(path[:-1]), []).append(i)
      for members in blocks.values():
        masks_of = _group_masks([flat[i] for i in members],
                                [name_list[i] for i in members], axis_name, sparsity)
        for i, m in zip(members, masks_of):
          masks[i] = m
  elif scope == "global":
    chosen = [i for i in range(len(flat)) if ok[i]]
    if chosen:
      mags = jnp.concatenate([jnp.abs(flat[i].astype(jnp.float32)).reshape(-1) for i in chosen])
      keep = _keep_largest(mags, sparsity)
      offset = 0
      for i in chosen:
        size = flat[i].size
        masks[i] = keep[offset:offset + size].reshape(flat[i].shape)
        offset += size
  else:
    for i in range(len(flat)):
      if ok[i]:
        mags = jnp.abs(flat[i].astype(jnp.float32))
        stacked = (name_list[i] or (None,))[0] == "layers"  # scanned: each layer on its own.
        masks[i] = (jax.vmap(_keep_largest, (0, None))(mags, sparsity) if stacked
                    else _keep_largest(mags, sparsity))
  return jax.tree.unflatten(treedef, masks)


def _group_masks(kernels: list, names: list[tuple], axis_name: str, sparsity) -> list:
  """Masks dropping the groups (indices along `axis_name`) of smallest joint L2 norm over
  one module's `kernels`; a leading `layers` axis (scanned layers) is ranked per layer."""
  stacked = names[0][0] == "layers"
  score = 0.0
  for w, n in zip(kernels, names):
    ax = n.index(axis_name)
    keep_axes = (0, ax) if stacked else (ax,)
    other = tuple(a for a in range(w.ndim) if a not in keep_axes)
    score = score + jnp.sum(jnp.square(w.astype(jnp.float32)), axis=other)  # [(L,) G]
  keep = (jax.vmap(_keep_largest, (0, None))(score, sparsity) if stacked
          else _keep_largest(score, sparsity))
  out = []
  for w, n in zip(kernels, names):
    shape = [1] * w.ndim
    shape[n.index(axis_name)] = w.shape[n.index(axis_name)]
    if stacked:
      shape[0] = w.shape[0]
    out.append(jnp.broadcast_to(keep.reshape(shape), w.shape))
  return out


class PruneState(NamedTuple):
  count: jax.Array  # optimizer steps taken.
  masks: Any  # bool, like the parameters.


def prune(names: Any, target: float, start: int, end: int, update_every: int = 100,
          scope: str = "layer", structure: str = "none") -> optax.GradientTransformation:
  """Keeps the parameters masked; recomputes the masks on the schedule (goes last)."""

  def init(params):
    return PruneState(count=jnp.zeros([], jnp.int32),
                      masks=jax.tree.map(lambda p: jnp.ones(p.shape, bool), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("sparsity.prune needs the parameters")
    step = state.count
    due = (step >= start) & (step <= max(end, start)) & (
        ((step - start) % max(update_every, 1) == 0) | (step == max(end, start)))

    def recompute(_):
      new = jax.tree.map(lambda p, u: p + u, params, updates)
      return magnitude_masks(new, names, sparsity_at(step, target, start, end), scope,
                             structure)

    masks = jax.lax.cond(due, recompute, lambda _: state.masks, None)
    updates = jax.tree.map(
        lambda u, p, m: jnp.where(m, u, -p).astype(u.dtype), updates, params, masks)
    return updates, PruneState(count=step + 1, masks=masks)

  return optax.GradientTransformation(init, update)


def sparsity_of(params: Any, names: Any = None) -> float:
  """Fraction of exact zeros among the prunable weights."""
  zeros = total = 0
  for x, n in zip(jax.tree.leaves(params), _names_list(params, names)):
    if prunable(n, np.shape(x)):
      a = np.asarray(x)
      zeros += int(np.count_nonzero(a == 0))
      total += a.size
  return zeros / total if total else 0.0


# ----------------------------------------------------------------- compact storage


def encode_sparse(a: np.ndarray) -> dict[str, np.ndarray]:
  """Non-zero values (in order) and a bitmask, packed 8 per byte."""
  a = np.asarray(a)
  nonzero = a.reshape(-1) != 0
  return {"values": a.reshape(-1)[nonzero], "bitmask": np.packbits(nonzero)}


def decode_sparse(enc: dict[str, np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
  n = int(np.prod(shape))
  nonzero = np.unpackbits(np.asarray(enc["bitmask"]), count=n).astype(bool)
  out = np.zeros(n, dtype)
  out[nonzero] = np.asarray(enc["values"])
  return out.reshape(shape)


def sparse_bytes(a: np.ndarray) -> int:
  """What `encode_sparse` would take, without building it."""
  a = np.asarray(a)
  return int(np.count_nonzero(a)) * a.dtype.itemsize + (a.size + 7) // 8
