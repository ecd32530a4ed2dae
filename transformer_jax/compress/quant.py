"""Integer weights: symmetric per-channel quantization, on the fly and stored.

A weight matrix becomes integers q in [-Q, Q] (Q = 127 for 8 bits, 7 for 4) and
one float32 scale per output channel, w ~ q * scale with scale = max|w| / Q over
the channel. Which axes form a channel follows the weight's logical axis names
(the model names every parameter, `models/layers.py`):

  - lookup tables (vocab, positions, token types: [rows, embed]) keep a scale per
    row, which is also the output channel of the tied output projection;
  - the attention output [heads, kv, embed] takes the max over heads and kv;
  - every other kernel [in, out...] takes it over its first (input) axis;
  - a leading `layers` axis (scanned layers) keeps one scale per layer.

This is weight-only quantization: the integers are turned back into floats
inside the compiled program, just before the matrix product, so any channel
choice is exact to reason about and the model code stays as it is. (qwix, the
JAX quantization library, intercepts `dot_general`/`einsum` calls whose operand
*is* a parameter; our layers cast and reshape each kernel before its one 2-D
product (`layers.project`), so qwix finds no parameter there to quantize.)

  - `QTensor`: stored integers and scales, a pytree; `dequantize` gives floats.
  - `fake_quant`: quantize-then-dequantize with a straight-through gradient, for
    quantization-aware training (`config.quantization.bits`).
  - `fake_quant_rows`: the same for activations, one scale per row.
  - 4-bit values are stored two to a byte (`pack_int4`).
  - `quantize_nf4`: QLoRA's 4-bit NormalFloat (Dettmers et al. 2023) for a frozen
    adapter base (`config.lora.base_quant_type='nf4'`): each block of 64 consecutive
    values of the flattened weight (our [in, out] kernels' order, so a block runs along
    the output axis where bitsandbytes' run along torch's input axis) keeps its absolute
    maximum as a float32 scale, and each value the nearest of 16 levels spaced as the quantiles
    of a normal distribution (NF4), which pretrained weights follow; 4.5 bits a value.
    (QLoRA's double quantization of the scales, 0.127 bits a value less, is not done.)
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

BITS = (4, 8)  # what `quantize` stores; config.quantization.bits takes 0 (off) or these.
LOOKUP_AXES = ("vocab", "pos_length", "token_types")  # tables read by row.
# NF4's 16 levels: quantiles of N(0, 1) (8 above zero, 7 below, and zero itself), scaled to
# [-1, 1]; the values of the QLoRA paper's Appendix E and bitsandbytes, which
# tests/test_compression_math.py derives again from that construction.
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)
NF4_BLOCK = 64  # values per scale (bitsandbytes' default block size).


def qmax(bits: int) -> int:
  if bits not in BITS:
    raise ValueError(f"bits={bits}: supported are {BITS}")
  return 2 ** (bits - 1) - 1


def quantizable(names: tuple | None, shape: tuple) -> bool:
  """Weights with at least two axes (kernels and tables); biases and norms stay float."""
  n = len(shape) - int(bool(names) and names[0] == "layers")
  return n >= 2


def reduce_axes(names: tuple | None, ndim: int) -> tuple[int, ...]:
  """The axes one scale spans (see the module docstring), from the logical names."""
  names = tuple(names) if names else (None,) * ndim
  lead = 1 if names[0] == "layers" else 0
  rest = names[lead:]
  if rest[0] in LOOKUP_AXES:
    return tuple(range(lead + 1, ndim))
  if rest[:2] == ("heads", "kv") and len(rest) >= 3:
    return (lead, lead + 1)
  return (lead,)


def scales(w: jax.Array, bits: int, axes: tuple[int, ...]) -> jax.Array:
  """float32 scale per channel (the reduced axes kept with size 1); 1 for all-zero channels."""
  amax = jnp.max(jnp.abs(w.astype(jnp.float32)), axis=axes, keepdims=True)
  return jnp.where(amax > 0, amax / qmax(bits), 1.0)


def to_int(w: jax.Array, scale: jax.Array, bits: int) -> jax.Array:
  q = qmax(bits)
  return jnp.clip(jnp.round(w.astype(jnp.float32) / scale), -q, q).astype(jnp.int8)


@flax.struct.dataclass
class QTensor:
  """Integer values (int8; for 4 bits two per uint8 byte) and float32 scales; with
  `block`, NF4 codes (two per byte) and one scale per `block` values of the flattened
  weight (`quantize_nf4`)."""
  qvalue: jax.Array
  scale: jax.Array
  bits: int = flax.struct.field(pytree_node=False, default=8)
  shape: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())
  block: int = flax.struct.field(pytree_node=False, default=0)  # > 0: NF4 in blocks.

  @property
  def nbytes(self) -> int:
    return int(self.qvalue.nbytes) + int(self.scale.nbytes)

  def dequantize(self, dtype=jnp.float32) -> jax.Array:
    if self.block:
      size = int(np.prod(self.shape))
      levels = jnp.asarray(NF4)[unpack_nibbles(self.qvalue, self.scale.size * self.block)]
      w = levels.reshape(-1, self.block) * self.scale[:, None]
      return w.reshape(-1)[:size].reshape(self.shape).astype(dtype)
    q = unpack_int4(self.qvalue, self.shape) if self.bits == 4 else self.qvalue
    return (q.astype(jnp.float32) * self.scale).astype(dtype)


def quantize(w, bits: int, axes: tuple[int, ...]) -> QTensor:
  """Per-channel symmetric quantization of one weight (numpy or jax in, jax out)."""
  w = jnp.asarray(w)
  s = scales(w, bits, axes)
  q = to_int(w, s, bits)
  if bits == 4:
    q = pack_int4(q)
  return QTensor(qvalue=q, scale=s, bits=bits, shape=tuple(w.shape))


def quantize_nf4(w, block: int = NF4_BLOCK) -> QTensor:
  """QLoRA's NF4 of one weight: per block of `block` values of the flattened weight, the
  absolute maximum as the scale and the nearest NF4 level of each value / scale."""
  w = jnp.asarray(w)
  flat = w.reshape(-1).astype(jnp.float32)
  flat = jnp.pad(flat, (0, -flat.size % block)).reshape(-1, block)
  amax = jnp.max(jnp.abs(flat), axis=1)
  scale = jnp.where(amax > 0, amax, 1.0)
  # The nearest level: how many of the midpoints between levels lie below the value.
  midpoints = jnp.asarray((NF4[1:] + NF4[:-1]) / 2)
  codes = jnp.searchsorted(midpoints, (flat / scale[:, None]).reshape(-1))
  return QTensor(qvalue=pack_int4(codes.astype(jnp.int8)), scale=scale, bits=4,
                 shape=tuple(w.shape), block=block)


def fake_quant(w: jax.Array, bits: int, axes: tuple[int, ...]) -> jax.Array:
  """w rounded to its quantized values; the gradient passes straight through."""
  s = jax.lax.stop_gradient(scales(w, bits, axes))
  wq = (to_int(w, s, bits).astype(jnp.float32) * s).astype(w.dtype)
  return w + jax.lax.stop_gradient(wq - w)


def fake_quant_rows(x: jax.Array, bits: int) -> jax.Array:
  """Activations rounded to `bits` with one scale per row (over the last axis)."""
  return fake_quant(x, bits, (x.ndim - 1,))


def pack_int4(q: jax.Array) -> jax.Array:
  """int8 values in [-8, 7] -> uint8, two per byte (low nibble first), flattened."""
  flat = q.reshape(-1).astype(jnp.uint8) & 0xF
  if flat.size % 2:
    flat = jnp.concatenate([flat, jnp.zeros((1,), jnp.uint8)])
  return flat[0::2] | (flat[1::2] << 4)


def unpack_nibbles(packed: jax.Array, size: int) -> jax.Array:
  """The first `size` 4-bit fields of `pack_int4`'s bytes, as int32 in [0, 15]."""
  lo = (packed & 0xF).astype(jnp.int32)
  hi = (packed >> 4).astype(jnp.int32)
  return jnp.stack([lo, hi], axis=-1).reshape(-1)[:size]


def unpack_int4(packed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """The inverse of `pack_int4`: int8 values of `shape`."""
  both = unpack_nibbles(packed, int(np.prod(shape)))
  return jnp.where(both > 7, both - 16, both).astype(jnp.int8).reshape(shape)


# ------------------------------------------------------------------ trees of weights


def _leaves_with_names(params: Any, names: Any):
  """(params leaf, its logical names) pairs; `names` is a tree of PartitionSpecs or None."""
  flat, treedef = jax.tree.flatten(params, is_leaf=lambda x: isinstance(x, QTensor))
  if names is None:
    return flat, [None] * len(flat), treedef
  name_leaves = jax.tree.leaves(names, is_leaf=lambda x: x is None or
                                isinstance(x, jax.sharding.PartitionSpec))
  if len(name_leaves) != len(flat):
    raise ValueError(f"{len(name_leaves)} logical names for {len(flat)} parameters")
  return flat, [tuple(n) if n is not None else None for n in name_leaves], treedef


def fake_quant_tree(params: Any, names: Any, bits: int) -> Any:
  """Every quantizable weight of `params` fake-quantized (QAT; straight-through gradient)."""
  flat, name_list, treedef = _leaves_with_names(params, names)
  out = [fake_quant(x, bits, reduce_axes(n, x.ndim)) if quantizable(n, x.shape) else x
         for x, n in zip(flat, name_list)]
  return jax.tree.unflatten(treedef, out)


def quantize_tree(params: Any, names: Any, bits: int) -> Any:
  """Every quantizable weight as a QTensor; the rest as it is."""
  flat, name_list, treedef = _leaves_with_names(params, names)
  out = [quantize(x, bits, reduce_axes(n, np.ndim(x))) if quantizable(n, np.shape(x)) else x
         for x, n in zip(flat, name_list)]
  return jax.tree.unflatten(treedef, out)


def materialize(params: Any, dtype=jnp.float32) -> Any:
  """QTensors turned back into float arrays (inside a jitted program: on the fly)."""
  return jax.tree.map(lambda x: x.dequantize(dtype) if isinstance(x, QTensor) else x, params,
                      is_leaf=lambda x: isinstance(x, QTensor))


def has_quantized(params: Any) -> bool:
  return any(isinstance(x, QTensor) for x in
             jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, QTensor)))


def num_values(params: Any) -> int:
  """The values a tree holds, a QTensor's by the shape it stands for (not its bytes)."""
  return sum(int(np.prod(x.shape)) for x in
             jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, QTensor)))


def tree_nbytes(params: Any) -> int:
  return sum(int(x.nbytes) for x in
             jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, QTensor)))
