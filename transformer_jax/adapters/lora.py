"""LoRA: low-rank adapters on any kernel, as pure functions over parameter trees.

A run with `config.lora.rank` = r > 0 trains, for each target kernel W (chosen by
its path or its logical axis names), two small matrices A [in..., r] and B [r, out...]
and computes with

    W' = W + (alpha / r) A B.

Which axes of W are its input follows the logical names, as in quant.py: the
attention output [heads, kv, embed] takes two input axes, every other kernel one
(a lookup table [vocab, embed] its rows); a leading `layers` axis (scanned layers)
gives each layer its own A and B. A starts uniform in +-1/sqrt(in) (PEFT's
default), B at zero, so an adapted model starts as its base. A's and B's logical
names are W's with a `lora_rank` axis, which no rule shards: they shard like the
base's input and output axes.

The train state's parameters are the trainable tree

    {"lora": {<path of W>: {"a": A, "b": B}}, "full": {<path>: parameter}}

("full": the parameters `train_also` matches, trained as they are), and the
frozen base (every other parameter; floats in the compute dtype, or quant.QTensor
integers with `base_bits`) rides beside it, outside the optimizer. `merge` makes
the model's parameters of the two; the model code does not change.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from transformer_jax.compress import quant
from transformer_jax.errors import ConfigError

RANK_AXIS = "lora_rank"  # A's last and B's first axis; no sharding rule names it.


@dataclasses.dataclass(frozen=True)
class Spec:
  """config.lora, read once."""
  rank: int
  alpha: float
  dropout: float
  targets: tuple[str, ...]
  train_also: tuple[str, ...]
  base_bits: int
  base_quant_type: str = "int"  # "nf4": QLoRA's NormalFloat in blocks (quant.quantize_nf4).

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  @classmethod
  def from_config(cls, config) -> Spec | None:
    """The spec of config.lora, or None when adapters are off (rank 0)."""
    lora = config.lora
    if not lora.rank:
      return None
    return cls(rank=int(lora.rank), alpha=float(lora.alpha), dropout=float(lora.dropout),
               targets=tuple(lora.targets), train_also=tuple(lora.train_also),
               base_bits=int(lora.base_bits), base_quant_type=str(lora.base_quant_type))


@flax.struct.dataclass
class Adapted:
  """An adapter run's parameters as the eval and decode programs take them."""
  frozen: Any
  trainable: Any


# ----------------------------------------------------------------- choosing kernels


def flat(tree: Any) -> dict[str, Any]:
  """{"a/b/c": leaf} of a nested dict (QTensors and boxes are leaves)."""
  return traverse_util.flatten_dict(tree, sep="/") if tree else {}


def nested(flat_tree: dict[str, Any]) -> dict:
  return traverse_util.unflatten_dict(flat_tree, sep="/")


def names_by_path(names_tree: Any) -> dict[str, tuple | None]:
  """{path: logical names} from a tree of PartitionSpecs (programs.param_names)."""
  return {k: (tuple(v) if v is not None else None) for k, v in flat(names_tree).items()}


def _core_names(names: tuple | None) -> tuple:
  names = tuple(names or ())
  return names[1:] if names[:1] == ("layers",) else names


def matches(pattern: str, path: str, names: tuple | None) -> bool:
  """A pattern is a regex searched in the path, or "names=a,b" equal to the logical names
  (a leading `layers` axis left out)."""
  if pattern.startswith("names="):
    return _core_names(names) == tuple(n.strip() for n in pattern[6:].split(","))
  return re.search(pattern, path) is not None


def _nearby(pattern: str, paths: list[str], names: dict[str, tuple | None]) -> str:
  if pattern.startswith("names="):
    seen = sorted({",".join(map(str, _core_names(n))) for n in names.values() if n})
    return "logical names here: " + "; ".join(seen[:12])
  bare = re.sub(r"[\\^$()|?*+\[\]{}.]", "", pattern)
  close = difflib.get_close_matches(bare, paths, n=5, cutoff=0.3)
  close = close or [p for p in paths if bare.split("/")[-1] in p][:5] or paths[:5]
  return "nearby paths: " + ", ".join(close)


def select(spec: Spec, names: dict[str, tuple | None],
           shapes: dict[str, tuple]) -> tuple[dict[str, tuple | None], list[str]]:
  """(the target kernels {path: names}, the train_also paths). A pattern that matches
  nothing, a target with fewer than two axes, or a path both targeted and trained in
  full is a ConfigError naming the pattern (and the paths near it)."""
  paths = sorted(names)
  chosen = {}
  for field, patterns in (("targets", spec.targets), ("train_also", spec.train_also)):
    found = []
    for pattern in patterns:
      hit = [p for p in paths if matches(pattern, p, names[p])]
      if not hit:
        raise ConfigError(f"config.lora.{field}: {pattern!r} matches no parameter; "
                          + _nearby(pattern, paths, names))
      found += [p for p in hit if p not in found]
    chosen[field] = found
  for p in chosen["targets"]:
    if len(shapes[p]) - int(_core_names(names[p]) != tuple(names[p] or ())) < 2:
      raise ConfigError(f"config.lora.targets: {p} (shape {shapes[p]}) is not a kernel; "
                        "adapters go on parameters with two axes or more")
  both = sorted(set(chosen["targets"]) & set(chosen["train_also"]))
  if both:
    raise ConfigError(f"config.lora: {', '.join(both)} matched by both targets and "
                      "train_also; a parameter is adapted or trained in full, not both")
  return {p: names[p] for p in chosen["targets"]}, chosen["train_also"]


# ----------------------------------------------------------------- shapes and init


def split_axes(names: tuple | None, ndim: int) -> tuple[int, int]:
  """(leading `layers` axes, input axes) of a kernel, from its logical names."""
  lead = 1 if tuple(names or ())[:1] == ("layers",) else 0
  core = _core_names(names)
  n_in = 2 if core[:2] == ("heads", "kv") and ndim - lead >= 3 else 1
  return lead, n_in


def adapter_shapes(shape: tuple, names: tuple | None, rank: int):
  """((A's shape, A's names), (B's shape, B's names)) for a kernel."""
  lead, n_in = split_axes(names, len(shape))
  names = tuple(names) if names else (None,) * len(shape)
  a = (shape[:lead + n_in] + (rank,), names[:lead + n_in] + (RANK_AXIS,))
  b = (shape[:lead] + (rank,) + shape[lead + n_in:],
       names[:lead] + (RANK_AXIS,) + names[lead + n_in:])
  return a, b


def init(params: dict[str, Any], targets: dict[str, tuple | None], train_also: list[str],
         rank: int, rng: jax.Array) -> dict:
  """The trainable tree (boxed with logical names): A uniform in +-1/sqrt(in), B zeros,
  and the train_also parameters as they are. `params`: {path: unboxed array}."""
  out = {}
  for i, (path, names) in enumerate(sorted(targets.items())):
    w = params[path]
    (a_shape, a_names), (b_shape, b_names) = adapter_shapes(w.shape, names, rank)
    lead, n_in = split_axes(names, w.ndim)
    bound = 1.0 / math.sqrt(math.prod(w.shape[lead:lead + n_in]))
    a = jax.random.uniform(jax.random.fold_in(rng, i), a_shape, jnp.float32, -bound, bound)
    out[f"lora/{path}/a"] = nn.LogicallyPartitioned(a, a_names)
    out[f"lora/{path}/b"] = nn.LogicallyPartitioned(jnp.zeros(b_shape, jnp.float32), b_names)
  for path in train_also:
    out[f"full/{path}"] = params[path]
  return nested(out)


def frozen_base(params: dict[str, Any], names: dict[str, tuple | None], train_also: list[str],
                bits: int, dtype, quant_type: str = "int") -> dict:
  """The frozen base (boxed where it shards): every parameter but train_also's, as
  `dtype`, or with `bits` its kernels and tables as quant.QTensor (int8 values shard like
  the floats; packed int4 values and the scales are replicated); `quant_type` "nf4" (bits
  4): QLoRA's NormalFloat in blocks of 64, replicated too."""
  out = {}
  for path, w in params.items():
    if path in train_also:
      continue
    n = names.get(path)
    box = (lambda x, n=n: nn.LogicallyPartitioned(x, n)) if n else (lambda x: x)
    if bits and quant.quantizable(n, w.shape):
      if quant_type == "nf4":
        out[path] = quant.quantize_nf4(w)
        continue
      q = quant.quantize(w, bits, quant.reduce_axes(n, w.ndim))
      out[path] = q.replace(qvalue=box(q.qvalue)) if bits == 8 else q
    else:
      out[path] = box(w.astype(dtype) if jnp.issubdtype(w.dtype, jnp.floating) else w)
  return nested(out)


# ----------------------------------------------------------------- merging


def delta(a: jax.Array, b: jax.Array, lead: int, shape: tuple) -> jax.Array:
  """A B as a kernel of `shape` (float32)."""
  a2 = a.reshape(a.shape[:lead] + (-1, a.shape[-1])).astype(jnp.float32)
  b2 = b.reshape(b.shape[:lead + 1] + (-1,)).astype(jnp.float32)
  return jnp.matmul(a2, b2).reshape(shape)


def merge(frozen: Any, trainable: Any, scale: float, names: dict[str, tuple | None],
          rng: jax.Array | None = None, dropout: float = 0.0) -> dict:
  """The model's parameters: the frozen base (QTensors as floats), the train_also
  parameters over it, and each adapted kernel W + scale A B. With `rng` and `dropout`,
  each rank component of each adapter is dropped with probability `dropout` (the rest
  scaled by 1 / (1 - dropout))."""
  params = {k: (v.dequantize() if isinstance(v, quant.QTensor) else v)
            for k, v in flat(frozen).items()}
  params.update(flat(trainable.get("full", {})))
  for i, (path, ab) in enumerate(sorted(flat_adapters(trainable).items())):
    w = params[path]
    lead, _ = split_axes(names.get(path), w.ndim)
    a = ab["a"]
    if rng is not None and dropout > 0:
      keep = jax.random.bernoulli(jax.random.fold_in(rng, i), 1.0 - dropout,
                                  a.shape[:lead] + (1,) * (a.ndim - lead - 1) + a.shape[-1:])
      a = jnp.where(keep, a / (1.0 - dropout), 0.0)
    params[path] = (w.astype(jnp.float32) + scale * delta(a, ab["b"], lead, w.shape)
                    ).astype(w.dtype)
  return nested(params)


def flat_adapters(trainable: Any) -> dict[str, dict[str, Any]]:
  """{path of W: {"a": A, "b": B}} of a trainable tree."""
  out: dict[str, dict[str, Any]] = {}
  for key, x in flat(trainable.get("lora", {})).items():
    path, _, which = key.rpartition("/")
    out.setdefault(path, {})[which] = x
  return out


# ----------------------------------------------------------------- the base's fingerprint


@jax.jit
def _leaf_sums(x: jax.Array) -> jax.Array:
  """Two wrapping integer sums of the leaf's bits (plain and position-weighted): exact
  and the same whatever the mesh, as integer addition does not depend on the order."""
  x = x.reshape(-1)
  if jnp.issubdtype(x.dtype, jnp.floating):
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
  else:
    bits = x.astype(jnp.uint32)
  weights = (jnp.arange(x.size, dtype=jnp.uint32) % 65521) + 1
  return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * weights, dtype=jnp.uint32)])


def fingerprint(params: Any) -> str:
  """A hash of a parameter tree's paths, shapes and values (16 hex digits)."""
  h = hashlib.sha256()
  for path, x in sorted(flat(nn.meta.unbox(params)).items()):
    sums = np.asarray(jax.device_get(_leaf_sums(x)))
    h.update(f"{path}:{tuple(x.shape)}:{x.dtype}:{sums[0]}:{sums[1]};".encode())
  return h.hexdigest()[:16]


def count(tree: Any) -> tuple[int, int]:
  """(values, bytes) held by a tree (QTensors as stored)."""
  leaves = jax.tree.leaves(tree)
  return (sum(int(np.prod(x.shape)) for x in leaves),
          sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves))
