"""Building blocks: embeddings, positions, masks, attention (with KV cache), MLP.

Shapes are in the names: B batch, L/S query/key length, D model width,
H heads, K head width, F MLP width, V vocabulary. Every parameter carries
logical axis names; the config's rules map them to mesh axes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any

# Logical names of activations (distinct from the parameters' names, so one
# mesh axis can shard a weight dimension and the batch at the same time).
ACT_BLD = ("act_batch", "act_length", "act_embed")
ACT_BLHK = ("act_batch", "act_length", "act_heads", "act_kv")
ACT_BLF = ("act_batch", "act_length", "act_mlp")
ACT_BLV = ("act_batch", "act_length", "act_vocab")


def constrain(x: Array, names: tuple[str, ...]) -> Array:
  return nn.with_logical_constraint(x, names)


def param_with_names(module: nn.Module, name: str, init, shape, names, dtype=jnp.float32):
  if len(names) != len(shape):
    raise ValueError(f"{module.name}/{name}: logical names {names} do not match "
                     f"the rank of shape {shape}")
  return module.param(name, nn.with_logical_partitioning(init, names), shape, dtype)


# --------------------------------------------------------------------------- masks


def padding_mask(q_valid_BL: Array, k_valid_BS: Array) -> Array:
  """[B, 1, L, S] True where both query and key are real tokens."""
  return (q_valid_BL[:, None, :, None] & k_valid_BS[:, None, None, :])


def causal_mask(length: int) -> Array:
  """[1, 1, L, L] True where the key is not after the query."""
  idx = jnp.arange(length)
  return (idx[None, :] <= idx[:, None])[None, None]


def segment_mask(q_segments_BL: Array, k_segments_BS: Array) -> Array:
  """[B, 1, L, S] True where query and key belong to the same packed example."""
  return q_segments_BL[:, None, :, None] == k_segments_BS[:, None, None, :]


def combine_masks(*masks: Array | None) -> Array | None:
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    out = out & m
  return out


# --------------------------------------------------------------------------- positions


def sinusoidal_positions(positions_BL: Array, dim: int, max_timescale: float = 1e4) -> Array:
  """The paper's fixed sin/cos encodings for integer positions: [B, L, dim]."""
  half = dim // 2
  inv_freq = np.exp(-np.log(max_timescale) * np.arange(half) / max(half - 1, 1))
  angles = positions_BL[..., None].astype(jnp.float32) * inv_freq
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if dim % 2:
    enc = jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, 1)])
  return enc


# --------------------------------------------------------------------------- layers


class Embed(nn.Module):
  """Token embedding; `attend` reuses it as the output projection."""
  vocab_size: int
  features: int
  dtype: Dtype = jnp.float32

  def setup(self):
    self.embedding = param_with_names(
        self, "embedding", nn.initializers.normal(stddev=1.0),
        (self.vocab_size, self.features), ("vocab", "embed"))

  def __call__(self, ids_BL: Array) -> Array:
    # Look up in a table whose width is gathered (as FSDP gathers every weight):
    # the rows then come out split by batch, not by width.
    table = constrain(self.embedding, ("vocab", None))
    return jnp.take(table, ids_BL, axis=0).astype(self.dtype)

  def attend(self, x_BLD: Array) -> Array:
    return jnp.einsum("BLD,VD->BLV", x_BLD, self.embedding.astype(self.dtype))


class LayerNorm(nn.Module):
  """Layer norm with a logically named scale and bias, computed in float32."""
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    scale = param_with_names(self, "scale", nn.initializers.ones, (d,), ("embed",))
    bias = param_with_names(self, "bias", nn.initializers.zeros, (d,), ("embed",))
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype)


class Mlp(nn.Module):
  """Position-wise feed-forward: Dense(F) -> activation -> dropout -> Dense(D)."""
  mlp_dim: int
  dropout_rate: float = 0.0
  activation: str = "relu"
  dtype: Dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BLD: Array) -> Array:
    d = x_BLD.shape[-1]
    init = nn.initializers.xavier_uniform()
    wi = param_with_names(self, "wi", init, (d, self.mlp_dim), ("embed", "mlp"))
    bi = param_with_names(self, "bi", nn.initializers.zeros, (self.mlp_dim,), ("mlp",))
    wo = param_with_names(self, "wo", init, (self.mlp_dim, d), ("mlp", "embed"))
    bo = param_with_names(self, "bo", nn.initializers.zeros, (d,), ("embed",))
    h_BLF = jnp.einsum("BLD,DF->BLF", x_BLD, wi.astype(self.dtype)) + bi.astype(self.dtype)
    h_BLF = getattr(jax.nn, self.activation)(h_BLF)
    h_BLF = constrain(h_BLF, ACT_BLF)
    h_BLF = nn.Dropout(self.dropout_rate)(h_BLF, deterministic=self.deterministic)
    y_BLD = jnp.einsum("BLF,FD->BLD", h_BLF, wo.astype(self.dtype)) + bo.astype(self.dtype)
    return constrain(y_BLD, ACT_BLD)


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention over H heads, as in the paper.

  With `decode=True` (self-attention only) the module keeps a key/value cache
  of `max_decode_length` positions in the "cache" collection and takes one
  query position per call.
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, q_BLD: Array, kv_BSD: Array, mask_B1LS: Array | None) -> Array:
    d = q_BLD.shape[-1]
    h, k = self.num_heads, self.head_dim
    init = nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
    wq = param_with_names(self, "query", init, (d, h, k), ("embed", "heads", "kv"))
    wk = param_with_names(self, "key", init, (d, h, k), ("embed", "heads", "kv"))
    wv = param_with_names(self, "value", init, (d, h, k), ("embed", "heads", "kv"))
    wo = param_with_names(self, "out", nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2),
                          (h, k, d), ("heads", "kv", "embed"))
    q_BLHK = constrain(jnp.einsum("BLD,DHK->BLHK", q_BLD, wq.astype(self.dtype)), ACT_BLHK)
    k_BSHK = constrain(jnp.einsum("BSD,DHK->BSHK", kv_BSD, wk.astype(self.dtype)), ACT_BLHK)
    v_BSHK = constrain(jnp.einsum("BSD,DHK->BSHK", kv_BSD, wv.astype(self.dtype)), ACT_BLHK)

    if self.decode:
      k_BSHK, v_BSHK, mask_B1LS = self._update_cache(k_BSHK, v_BSHK, mask_B1LS)

    q_BLHK = q_BLHK / jnp.sqrt(k).astype(self.dtype)
    logits_BHLS = jnp.einsum("BLHK,BSHK->BHLS", q_BLHK, k_BSHK).astype(jnp.float32)
    if mask_B1LS is not None:
      logits_BHLS = jnp.where(mask_B1LS, logits_BHLS, jnp.finfo(jnp.float32).min)
    probs_BHLS = jax.nn.softmax(logits_BHLS, axis=-1)
    if mask_B1LS is not None:  # rows with no visible key (padding) give zeros, not NaN.
      probs_BHLS = jnp.where(mask_B1LS, probs_BHLS, 0.0)
    probs_BHLS = nn.Dropout(self.dropout_rate)(probs_BHLS, deterministic=self.deterministic)
    out_BLHK = jnp.einsum("BHLS,BSHK->BLHK", probs_BHLS.astype(self.dtype), v_BSHK)
    out_BLHK = constrain(out_BLHK, ACT_BLHK)
    out_BLD = jnp.einsum("BLHK,HKD->BLD", out_BLHK, wo.astype(self.dtype))
    return constrain(out_BLD, ACT_BLD)

  def _update_cache(self, k_B1HK, v_B1HK, mask_B11S):
    """Writes this step's key/value at the cache index; attends to 0..index."""
    is_initialized = self.has_variable("cache", "cached_key")
    # At init the caller passes the full-length dummy input to size the cache.
    cached_k = self.variable("cache", "cached_key", jnp.zeros, k_B1HK.shape, k_B1HK.dtype)
    cached_v = self.variable("cache", "cached_value", jnp.zeros, v_B1HK.shape, v_B1HK.dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not is_initialized:
      return k_B1HK, v_B1HK, mask_B11S
    b, max_len, h, k = cached_k.value.shape
    if k_B1HK.shape != (b, 1, h, k):
      raise ValueError(f"decode step expects one position, got keys {k_B1HK.shape}")
    i = index.value
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_B1HK, (0, i, 0, 0))
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_B1HK, (0, i, 0, 0))
    index.value = i + 1
    visible_11S = (jnp.arange(max_len) <= i)[None, None, None, :]
    mask = visible_11S if mask_B11S is None else (mask_B11S & visible_11S)
    return cached_k.value, cached_v.value, mask
