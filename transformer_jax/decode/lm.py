"""Decoder-only generation: prompts prefilled through the key/value cache in one pass, then
search.py's sampling loop (greedy or sampled; no beam search for LMs)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from transformer_jax.data.tokenizer import EOS_ID
from transformer_jax.decode.search import (DecodeOptions, decode_mode, sample_loop,
                                           sampling_args, start_state, unscanned, vocab_mask)
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.models.transformer import TransformerConfig

Array = jax.Array


def generate(params, prompt_BL: Array, rng: Array | None, *, config: TransformerConfig,
             options: DecodeOptions, max_length: int, vocab_limit: int | None = None,
             cached: bool = True, prefill: bool = True, start_from_prompt: bool = False,
             stop_ids: tuple[int, ...] = (EOS_ID,)) -> Array:
  """Continuations of left-aligned prompts [B, P] by a decoder-only LM: [B, max_length] ids
  (the prompt first). Beam search is not offered for LMs.

  With `prefill` (and the cache) the prompts go through the model in one pass of P
  positions (prefill_cache), and the loop starts at the shortest prompt's end; without
  it, it feeds them one token per step. `start_from_prompt`: position 0 is fed the
  prompt's first token, not the start token 0 (a pretrained model's own sequences, as
  transformers feeds them). A row stops at any of `stop_ids` (EOS; a chat model's end of
  turn)."""
  if options.method == "beam":
    raise ValueError("generate: method 'beam' is for translation; use greedy or sample")
  config, params = unscanned(config, params)
  b = prompt_BL.shape[0]
  start_B = None
  if start_from_prompt:
    start_B, prompt_BL, max_length = prompt_BL[:, 0], prompt_BL[:, 1:], max_length - 1
  step_fn, cache = start_state(config, params, b, max_length, None, cached)
  start_index = None
  if cached and prefill and prompt_BL.shape[1] > 1:
    cache, start_index = prefill_cache(config, params, cache, prompt_BL[:, :max_length],
                                       start_B)
  out_BL = sample_loop(step_fn, cache, batch_size=b, max_length=max_length, rng=rng,
                       prompt_BL=prompt_BL, mask_logits=vocab_mask(vocab_limit),
                       start_B=start_B, start_index=start_index, eos_id=tuple(stop_ids),
                       **sampling_args(options))
  return out_BL if start_B is None else jnp.concatenate([start_B[:, None], out_BL], axis=1)


def prefill_cache(config: TransformerConfig, params, cache, prompt_BP: Array,
                  start_B: Array | None = None) -> tuple[Any, Array]:
  """(the cache after one pass over every row's first positions, the loop's first position).

  Position i is fed the token before it (start_B, or the start token 0, at 0), so the
  pass takes [start, prompt[:P-1]] at positions 0..P-1. The loop then starts at n, the
  shortest non-empty prompt's length: the cache index is set back to n, and the entries
  past it (other rows' longer prompts, or padding) are overwritten before any query
  sees them (the cache masks keys after the query)."""
  b, p = prompt_BP.shape
  if start_B is None:
    start_B = jnp.zeros((b,), jnp.int32)
  inputs_BP = jnp.concatenate([start_B[:, None], prompt_BP[:, :p - 1]], axis=1)
  model = DecoderLM(decode_mode(config, cached=True))
  positions_BP = jnp.broadcast_to(jnp.arange(p), (b, p))
  _, mutated = model.apply({"params": params, "cache": cache}, inputs_BP, positions_BP,
                           method=DecoderLM.logits, mutable=["cache"])
  lengths_B = (prompt_BP > 0).sum(axis=1)
  n = jnp.min(jnp.where(lengths_B > 0, lengths_B, p)).astype(jnp.int32)
  n = jnp.where(jnp.any(lengths_B > 0), n, 0)

  def reset(path, x):
    return n if getattr(path[-1], "key", None) == "cache_index" else x
  return jax.tree_util.tree_map_with_path(reset, mutated["cache"]), n
