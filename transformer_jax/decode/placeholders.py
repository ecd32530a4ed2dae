"""Decoding that keeps a source's printf placeholders: each comes out as often as it went in.

Program messages carry format placeholders (`%s`, `%1$d`, `%(name)s`, `{0}`), and a
translation that drops, doubles or invents one breaks the program that prints it. The
tokenizer holds the corpus's frequent placeholders as single pieces (user-defined
symbols, data/tokenizer.py); `piece_ids` lists them. With `decoding.keep_placeholders`
each source's count of every such piece is the budget of its translation: while
decoding, a placeholder piece may be chosen only while the hypothesis has fewer of it
than its source, and EOS only once it has them all. A wrapper around a decoder step
function keeps the counts still owed in its cache, so beam search reorders them with
the beams. Placeholders the tokenizer splits into several pieces (rare ones) are not
counted.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from transformer_jax.data.tokenizer import PLACEHOLDER_RE, Tokenizer
from transformer_jax.decode.beam import NEG_INF

Array = jax.Array


def piece_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
  """The ids of the tokenizer's pieces that are one whole placeholder."""
  pieces = tokenizer.id_pieces(range(tokenizer.vocab_size))
  return tuple(i for i, p in enumerate(pieces) if PLACEHOLDER_RE.fullmatch(p))


def decode_kwargs(config, tokenizer: Tokenizer) -> dict:
  """What the translation decoder takes for config.decoding.keep_placeholders: the ids
  of the pieces it counts, or nothing."""
  if not config.decoding.keep_placeholders:
    return {}
  return {"placeholder_ids": piece_ids(tokenizer)}


def source_counts(inputs_BS: Array, ids: Sequence[int]) -> Array:
  """[B, P] int32: how often each placeholder piece of `ids` occurs in each source row."""
  ids_P = jnp.asarray(ids, jnp.int32)
  return (inputs_BS[:, :, None] == ids_P).sum(axis=1).astype(jnp.int32)


def constrain_logits(logits_BV: Array, owed_BP: Array, ids: Sequence[int], eos_id: int) -> Array:
  """Placeholder pieces that are not owed, and EOS while any is, made impossible."""
  ids_P = jnp.asarray(ids, jnp.int32)
  logits_BV = logits_BV.at[:, ids_P].set(
      jnp.where(owed_BP > 0, logits_BV[:, ids_P], NEG_INF))
  return logits_BV.at[:, eos_id].set(
      jnp.where(owed_BP.sum(axis=1) > 0, NEG_INF, logits_BV[:, eos_id]))


def step_fn(inner, ids: Sequence[int], eos_id: int):
  """`inner(tokens_B, i, cache) -> (logits_BV, cache)` with its cache paired with the
  counts still owed [B, P] (start: `source_counts`): the token fed in (the one chosen
  last) pays its count, then the logits are constrained."""
  ids_P = jnp.asarray(ids, jnp.int32)

  def step(tokens_B, i, state):
    cache, owed_BP = state
    owed_BP = owed_BP - (tokens_B[:, None] == ids_P).astype(jnp.int32)
    logits_BV, cache = inner(tokens_B, i, cache)
    return constrain_logits(logits_BV, owed_BP, ids, eos_id), (cache, owed_BP)

  return step

