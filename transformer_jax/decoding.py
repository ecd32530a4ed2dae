"""Autoregressive decoding over the decoder's key/value cache.

The encoder runs once per source batch; each decoder call then takes one new
token and appends its keys and values to the cache.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from transformer_jax.data.tokenizer import EOS_ID
from transformer_jax.models.transformer import EncoderDecoder, TransformerConfig


def decode_model(config: TransformerConfig) -> EncoderDecoder:
  return EncoderDecoder(config.replace(deterministic=True, decode=True))


def init_cache(model: EncoderDecoder, batch_size: int, source_length: int, max_length: int):
  """A zeroed cache sized for `max_length` target positions."""
  def init():
    return model.init(jax.random.key(0), jnp.ones((batch_size, source_length), jnp.int32),
                      jnp.ones((batch_size, max_length), jnp.int32))["cache"]
  shapes = jax.eval_shape(init)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def greedy_decode(params: Any, inputs_BS: jax.Array, *, config: TransformerConfig,
                  max_length: int, eos_id: int = EOS_ID) -> jax.Array:
  """Most likely next token at every step. Returns [B, max_length] ids.

  Rows stop at their first EOS (kept in the output, zeros after it); the loop
  ends early when every row has finished. Meant to run inside `jax.jit`.
  """
  model = decode_model(config)
  batch_size = inputs_BS.shape[0]
  encoded_BSD = model.apply({"params": params}, inputs_BS, method=EncoderDecoder.encode)
  cache = init_cache(model, batch_size, inputs_BS.shape[1], max_length)

  def step(carry):
    i, cache, token_B, out_BL, done_B = carry
    positions_B1 = jnp.full((batch_size, 1), i, jnp.int32)
    logits_B1V, mutated = model.apply(
        {"params": params, "cache": cache}, encoded_BSD, inputs_BS, token_B[:, None],
        positions_B1, method=EncoderDecoder.decode, mutable=["cache"])
    next_B = jnp.argmax(logits_B1V[:, 0], axis=-1).astype(jnp.int32)
    next_B = jnp.where(done_B, 0, next_B)
    out_BL = out_BL.at[:, i].set(next_B)
    return i + 1, mutated["cache"], next_B, out_BL, done_B | (next_B == eos_id)

  def not_finished(carry):
    i, _, _, _, done_B = carry
    return (i < max_length) & ~jnp.all(done_B)

  carry = (jnp.array(0, jnp.int32), cache, jnp.zeros((batch_size,), jnp.int32),
           jnp.zeros((batch_size, max_length), jnp.int32), jnp.zeros((batch_size,), bool))
  return jax.lax.while_loop(not_finished, step, carry)[3]
