"""Multi-head attention, as in the paper, with rotary positions and a key/value cache.

Shapes are in the names, as in `layers`: B batch, L/S query/key length, D model
width, H heads, K head width.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.models.dropout import Dropout
from transformer_jax.models.layers import (ACT_BLD, ACT_BLHK, ACT_BLNK, Array, RMSNorm,
                                           combine_masks, constrain, param_with_names, project,
                                           rotary_embedding, rotary_frequencies)

Dtype = Any


QUERY_BLOCK = 256  # queries per block where self-attention is long (attention._xla_attention).


class MultiHeadAttention(nn.Module):
  """Scaled dot-product attention over H heads, as in the paper.

  `attention` picks the implementation: "xla" (einsums, float32 softmax,
  attention dropout) or "dot_product" (`jax.nn.dot_product_attention`, no
  attention dropout). With `rotary`, queries and keys are rotated by their
  positions (RoPE) before the dot product. With `decode=True` (self-attention
  only) the module keeps a key/value cache of `max_decode_length` positions in
  the "cache" collection and takes one query position per call; keys are
  rotated by their own position before they are cached. With `use_bias`, the
  projections add biases "query_bias", "key_bias", "value_bias" [H, K] and
  "out_bias" [D] (as BERT and GPT-2 do; `out_bias` False: none on the output, as Qwen2).

  The recipe of today's decoders: `num_kv_heads` < `num_heads` shares each key/value
  head among num_heads / num_kv_heads query heads (grouped-query attention; 1: MQA),
  and the key/value projections and the cache hold the key/value heads only (logical
  name "kv_heads"); `qk_norm` RMS-normalises queries and keys over the head width
  before the rotation ("query_norm", "key_norm": Gemma 3); `window` > 0 lets a query
  see only the `window` latest keys, itself included (sliding-window layers);
  `scale` replaces 1/sqrt(head_dim) (Gemma's query_pre_attn_scalar); `rotary_scaling`
  stretches RoPE's wavelengths (layers.rotary_frequencies).

  With `decode=True` a call may also bring L > 1 positions (a prompt's prefill): they
  are written into the cache at its index, each attending causally to the cache.

  With `heads_first` (and always with `decode`) keys and values are laid out heads
  first, [B, H, K, S] and [B, H, S, K], before the products, which then take them as
  they are. In a decode loop the self-attention cache is kept in that layout and
  the cross-attention's keys and values (the same at every step) are transposed
  once, before the loop: in the [B, S, H, K] layout XLA:CPU copied every cache and
  every cross-attention key and value transposed at every step (12 copies of 2.6-4.2
  MB per beam-search step of the base model; BUILD_NOTES).
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  deterministic: bool = True
  decode: bool = False
  rotary: bool = False
  rotary_base: float = 1e4  # RoPE's base (max_timescale): 1e4, Llama 3 5e5, Gemma 3 1e6.
  attention: str = "xla"
  use_bias: bool = False
  heads_first: bool = False
  out_bias: bool = True  # with use_bias: a bias on the output projection too.
  num_kv_heads: int = 0  # 0: num_heads.
  qk_norm: bool = False
  norm_epsilon: float = 1e-6  # qk_norm's.
  window: int = 0  # 0: no sliding window.
  scale: float = 0.0  # 0: 1 / sqrt(head_dim).
  rotary_scaling: tuple = ()  # layers.rotary_frequencies' `scaling`.

  @nn.compact
  def __call__(self, q_BLD: Array, kv_BSD: Array, mask_B1LS: Array | None,
               q_positions_BL: Array | None = None,
               kv_positions_BS: Array | None = None) -> Array:
    d = q_BLD.shape[-1]
    h, k, n = self.num_heads, self.head_dim, self.kv_heads
    if h % n:
      raise ValueError(f"num_heads={h} must be a multiple of num_kv_heads={n}")
    kv_names = ("embed", "heads" if n == h else "kv_heads", "kv")
    init = nn.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))
    wq = param_with_names(self, "query", init, (d, h, k), ("embed", "heads", "kv"))
    wk = param_with_names(self, "key", init, (d, n, k), kv_names)
    wv = param_with_names(self, "value", init, (d, n, k), kv_names)
    wo = param_with_names(self, "out", nn.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2),
                          (h, k, d), ("heads", "kv", "embed"))
    q_BLHK = project(q_BLD, wq.astype(self.dtype))
    k_BSHK = project(kv_BSD, wk.astype(self.dtype))
    v_BSHK = project(kv_BSD, wv.astype(self.dtype))
    if self.use_bias:
      q_BLHK, k_BSHK, v_BSHK = (
          x + param_with_names(self, f"{name}_bias", nn.initializers.zeros, x.shape[2:],
                               names).astype(self.dtype)
          for x, name, names in ((q_BLHK, "query", ("heads", "kv")),
                                 (k_BSHK, "key", kv_names[1:]),
                                 (v_BSHK, "value", kv_names[1:])))
    kv_act = ACT_BLHK if n == h else ACT_BLNK
    q_BLHK = constrain(q_BLHK, ACT_BLHK)
    k_BSHK = constrain(k_BSHK, kv_act)
    v_BSHK = constrain(v_BSHK, kv_act)
    if self.qk_norm:
      q_BLHK = RMSNorm(self.norm_epsilon, self.dtype, ("kv",), name="query_norm")(q_BLHK)
      k_BSHK = RMSNorm(self.norm_epsilon, self.dtype, ("kv",), name="key_norm")(k_BSHK)

    if self.rotary:
      if q_positions_BL is None or kv_positions_BS is None:
        raise ValueError("rotary attention needs the positions of its queries and keys")
      inv_freq = rotary_frequencies(k, self.rotary_base, self.rotary_scaling)
      q_BLHK = rotary_embedding(q_BLHK, q_positions_BL, self.rotary_base, inv_freq)
      k_BSHK = rotary_embedding(k_BSHK, kv_positions_BS, self.rotary_base, inv_freq)

    if self.decode or self.heads_first:
      out_BLHK = self._attend_heads_first(q_BLHK, k_BSHK, v_BSHK, mask_B1LS)
    else:
      mask_B1LS = self._windowed(mask_B1LS, q_BLHK.shape[1], k_BSHK.shape[1])
      out_BLHK = self._attend(q_BLHK, k_BSHK, v_BSHK, mask_B1LS)
    out_BLHK = constrain(out_BLHK, ACT_BLHK)
    out_BLD = project(out_BLHK, wo.astype(self.dtype), n_in=2)
    if self.use_bias and self.out_bias:
      out_BLD = out_BLD + param_with_names(self, "out_bias", nn.initializers.zeros, (d,),
                                           ("embed",)).astype(self.dtype)
    return constrain(out_BLD, ACT_BLD)

  @property
  def kv_heads(self) -> int:
    return self.num_kv_heads or self.num_heads

  def _attend(self, q_BLHK, k_BSHK, v_BSHK, mask_B1LS):
    """The attention core on [B, L, H, K] queries and [B, S, N, K] keys and values
    (N = num_kv_heads)."""
    if self.is_mutable_collection("intermediates"):  # attention maps (the report tool).
      self.sow("intermediates", "attention_weights", self._probs(q_BLHK, k_BSHK, mask_B1LS))
    if self.attention == "xla":
      return self._xla_attention(q_BLHK, k_BSHK, v_BSHK, mask_B1LS)
    if self.attention == "dot_product":
      return self._dot_product_attention(q_BLHK, k_BSHK, v_BSHK, mask_B1LS)
    raise ValueError(f"attention must be 'xla' or 'dot_product', got {self.attention!r}")

  def _attend_heads_first(self, q_BLHK, k_BSHK, v_BSHK, mask_B1LS):
    """The attention core with keys [B, H, K, S] and values [B, H, S, K] (the cache's
    layout in decode mode); the same numbers as `_attend`."""
    k_BHKS, v_BHSK = k_BSHK.transpose(0, 2, 3, 1), v_BSHK.transpose(0, 2, 1, 3)
    if self.decode:
      k_BHKS, v_BHSK, mask_B1LS = self._update_cache(k_BHKS, v_BHSK, mask_B1LS)
    else:
      mask_B1LS = self._windowed(mask_B1LS, q_BLHK.shape[1], k_BSHK.shape[1])
      # E.g. cross-attention in a decode loop: the same keys and values at every step.
      # The barrier keeps XLA from folding the transposes into the products, and so
      # from copying them afresh at every step; as they are, they leave the loop with
      # the projections (XLA's loop-invariant code motion).
      k_BHKS, v_BHSK = jax.lax.optimization_barrier((k_BHKS, v_BHSK))
    if self.attention != "xla" or self.is_mutable_collection("intermediates"):
      return self._attend(q_BLHK, k_BHKS.transpose(0, 3, 1, 2), v_BHSK.transpose(0, 2, 1, 3),
                          mask_B1LS)
    return self._xla_attention(q_BLHK, k_BHKS, v_BHSK, mask_B1LS, "BHKS", "BHSK")

  def _windowed(self, mask_B1LS, length: int, keys: int):
    """Self-attention's mask with the sliding window (query i sees keys i - window + 1..i)."""
    if not self.window:
      return mask_B1LS
    if length != keys:
      raise ValueError("a sliding window needs self-attention (as many queries as keys)")
    i = jnp.arange(length)
    return combine_masks(mask_B1LS, (i[:, None] - i[None, :] < self.window)[None, None])

  def _probs(self, q_BLHK, k, mask_B1LS, k_layout: str = "BSHK"):
    """Attention weights [B, H, L, S] in float32: each query's softmax over the keys it
    may see; zeros for a query that sees none (padding). `k_layout`: the keys' axes
    (its H: the key/value heads; with fewer of them, each serves a group of G queries)."""
    if self.scale:
      q_BLHK = q_BLHK * jnp.asarray(self.scale, self.dtype)
    else:
      q_BLHK = q_BLHK / jnp.sqrt(self.head_dim).astype(self.dtype)
    b, length, h, k_dim = q_BLHK.shape
    n = k.shape[k_layout.index("H")]
    if n == h and k_layout == "BSHK":
      # Heads first, both operands [B, H, rows, K]: XLA:CPU runs the batched product about
      # twice as fast as on [B, L, H, K] (Whisper's 1,500 positions; BUILD_NOTES).
      logits_BHLS = jnp.einsum("BHLK,BHSK->BHLS", q_BLHK.transpose(0, 2, 1, 3),
                               k.transpose(0, 2, 1, 3))
    elif n == h:
      logits_BHLS = jnp.einsum(f"BLHK,{k_layout}->BHLS", q_BLHK, k)
    else:
      q_BLHGK = q_BLHK.reshape(b, length, n, h // n, k_dim)
      logits_BHLS = jnp.einsum(f"BLHGK,{k_layout}->BHGLS", q_BLHGK, k).reshape(
          b, h, length, -1)
    return self._masked_softmax(logits_BHLS.astype(jnp.float32), mask_B1LS)

  @staticmethod
  def _masked_softmax(logits_BHLS, mask_B1LS):
    if mask_B1LS is not None:
      logits_BHLS = jnp.where(mask_B1LS, logits_BHLS, jnp.finfo(jnp.float32).min)
    probs_BHLS = jax.nn.softmax(logits_BHLS, axis=-1)
    if mask_B1LS is not None:  # rows with no visible key (padding) give zeros, not NaN.
      probs_BHLS = jnp.where(mask_B1LS, probs_BHLS, 0.0)
    return probs_BHLS

  def _xla_attention(self, q_BLHK, k, v, mask_B1LS, k_layout: str = "BSHK",
                     v_layout: str = "BSHK"):
    length = q_BLHK.shape[1]
    if self.deterministic and k_layout == v_layout == "BSHK" and length > 2 * QUERY_BLOCK:
      # Long queries at inference (Whisper's 1,500 encoder positions) in blocks: each
      # block's [B, H, QUERY_BLOCK, S] weights stay in cache, not a [B, H, L, S] tensor in
      # memory (tiny.en's encoder at batch 8: BUILD_NOTES). Training keeps one product.
      blocks = []
      for i in range(0, length, QUERY_BLOCK):
        mask = (mask_B1LS if mask_B1LS is None or mask_B1LS.shape[2] == 1
                else mask_B1LS[:, :, i:i + QUERY_BLOCK])
        blocks.append(self._xla_block(q_BLHK[:, i:i + QUERY_BLOCK], k, v, mask))
      return jnp.concatenate(blocks, axis=1)
    return self._xla_block(q_BLHK, k, v, mask_B1LS, k_layout, v_layout)

  def _xla_block(self, q_BLHK, k, v, mask_B1LS, k_layout: str = "BSHK",
                 v_layout: str = "BSHK"):
    probs_BHLS = self._probs(q_BLHK, k, mask_B1LS, k_layout)
    probs_BHLS = Dropout(self.dropout_rate)(probs_BHLS, deterministic=self.deterministic)
    b, h, length, s = probs_BHLS.shape
    n = v.shape[v_layout.index("H")]
    if n == h and v_layout == "BSHK":  # heads first, as in _probs.
      return jnp.einsum("BHLS,BHSK->BHLK", probs_BHLS.astype(self.dtype),
                        v.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    if n == h:
      return jnp.einsum(f"BHLS,{v_layout}->BLHK", probs_BHLS.astype(self.dtype), v)
    probs_BHGLS = probs_BHLS.astype(self.dtype).reshape(b, n, h // n, length, s)
    out_BLHGK = jnp.einsum(f"BHGLS,{v_layout}->BLHGK", probs_BHGLS, v)
    return out_BLHGK.reshape(b, length, h, -1)

  def _dot_product_attention(self, q_BLHK, k_BSHK, v_BSHK, mask_B1LS):
    if self.dropout_rate > 0 and not self.deterministic:
      raise ValueError("attention='dot_product' has no attention dropout: set "
                       f"attention_dropout_rate=0 (got {self.dropout_rate}) or use "
                       "attention='xla'")
    out_BLHK = jax.nn.dot_product_attention(q_BLHK, k_BSHK, v_BSHK, mask=mask_B1LS,
                                            scale=self.scale or 1.0 / np.sqrt(self.head_dim))
    if mask_B1LS is not None:  # as the xla path: zeros for queries that see no key.
      sees_key_BL11 = jnp.moveaxis(jnp.any(mask_B1LS, axis=-1), 1, 2)[..., None]
      out_BLHK = jnp.where(sees_key_BL11, out_BLHK, 0).astype(out_BLHK.dtype)
    return out_BLHK

  def _update_cache(self, k_BNKL, v_BNLK, mask_B1LS):
    """Writes this call's L keys [B, N, K, L] and values [B, N, L, K] at the cache index
    (the cache: keys [B, N, K, S], values [B, N, S, K], N the key/value heads); query l
    attends to cache positions 0..index + l (and, with a window, the latest `window`)."""
    is_initialized = self.has_variable("cache", "cached_key")
    # At init the caller passes the full-length dummy input to size the cache.
    cached_k = self.variable("cache", "cached_key", jnp.zeros, k_BNKL.shape, k_BNKL.dtype)
    cached_v = self.variable("cache", "cached_value", jnp.zeros, v_BNLK.shape, v_BNLK.dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not is_initialized:
      return k_BNKL, v_BNLK, mask_B1LS
    b, n, k, max_len = cached_k.value.shape
    length = k_BNKL.shape[-1]
    if k_BNKL.shape != (b, n, k, length) or length > max_len:
      raise ValueError(f"decode step expects keys [B={b}, N={n}, K={k}, L<={max_len}], "
                       f"got {k_BNKL.shape}")
    i = index.value
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k_BNKL, (0, 0, 0, i))
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v_BNLK, (0, 0, i, 0))
    index.value = i + length
    query_L1 = i + jnp.arange(length)[:, None]
    key_1S = jnp.arange(max_len)[None, :]
    visible_LS = key_1S <= query_L1
    if self.window:
      visible_LS = visible_LS & (query_L1 - key_1S < self.window)
    return cached_k.value, cached_v.value, combine_masks(mask_B1LS, visible_LS[None, None])


def grow_cache(cache: Any, length: int) -> Any:
  """A decode cache with room for `length` positions: each self-attention's cached keys
  [..., S] and values [..., S, K] (`_update_cache`'s layout) padded with zeros; the rest
  (indices, decode wrappers' own state) as it is. Decoding in phases (decode/phases.py)."""
  def grow(path, x):
    name = getattr(path[-1], "key", None)
    if name not in ("cached_key", "cached_value"):
      return x
    axis = x.ndim - 1 if name == "cached_key" else x.ndim - 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, length - x.shape[axis])
    return jnp.pad(x, pad)
  return jax.tree_util.tree_map_with_path(grow, cache)
