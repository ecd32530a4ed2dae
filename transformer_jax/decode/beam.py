"""Beam search with a length penalty, as in the Flax WMT example and GNMT.

The search keeps, for every batch row, `beam_size` alive hypotheses (no EOS
yet) and `beam_size` finished ones (ended by EOS), scored by

  log P(y) / ((5 + |y|) / 6) ** alpha

(Wu et al. 2016). Each step expands the alive beams by one token through
`step_fn`, keeps the 2K best candidates (at most K of them end in EOS, so K
alive ones always remain), finishes those of the top K that end in EOS, and
stops early once no alive hypothesis can beat the worst finished one, even at
full length. With one beam and no length penalty this is exactly greedy
decoding. Runs inside `jax.jit`.

`step_fn(tokens [B*K], position, cache) -> (logits [B*K, V], cache)` is the
model's one-token step; rows are beam-minor (row b*K + k is beam k of batch
row b), and every cache array with a leading B*K axis is reordered with the
beams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from transformer_jax.decode import phases

Array = jax.Array
StepFn = Callable[[Array, Array, Any], tuple[Array, Any]]

NEG_INF = -1.0e7  # "impossible" score; finite, so sums and comparisons stay NaN-free.


def length_penalty(length, alpha: float):
  """GNMT's ((5 + length) / 6) ** alpha; 1 when alpha is 0."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def gather_beams(tree: Any, beam_indices_BK: Array, batch_size: int, old_beams: int) -> Any:
  """Reorders every [B * old_beams, ...] array of `tree` to the chosen beams [B * K, ...]."""
  new_beams = beam_indices_BK.shape[1]

  def gather(x):
    if x.ndim == 0 or x.shape[0] != batch_size * old_beams:
      return x  # e.g. the cache's shared position index.
    x = x.reshape((batch_size, old_beams) + x.shape[1:])
    idx = beam_indices_BK.reshape(beam_indices_BK.shape + (1,) * (x.ndim - 2))
    x = jnp.take_along_axis(x, idx, axis=1)
    return x.reshape((batch_size * new_beams,) + x.shape[2:])

  return jax.tree.map(gather, tree)


def _take(x_BN, idx_BK):
  """x[b, idx[b, k], ...] for arrays with (batch, beam) leading axes."""
  idx = idx_BK.reshape(idx_BK.shape + (1,) * (x_BN.ndim - 2))
  return jnp.take_along_axis(x_BN, idx, axis=1)


def beam_search(step_fn: StepFn, cache: Any, *, batch_size: int, beam_size: int,
                max_length: int, alpha: float, eos_id: int,
                mask_logits: Callable[[Array], Array] = lambda x: x,
                normalized: bool = False,
                phase_lengths: Sequence[int] = ()) -> tuple[Array, Array]:
  """Returns (sequences [B, K, max_length], scores [B, K]), best first.

  `normalized`: step_fn returns log-scores to add as they are (ctc_prefix's joint
  scores), not logits to turn into log-probabilities. `phase_lengths`: the cache's
  length in each phase of the loop (phases.py), the first the length it comes with;
  empty: one loop over the cache as it is.

  Sequences hold the generated tokens, EOS included, then zeros. A row with no
  finished hypothesis returns its alive ones, scored at full length. With
  beam_size=1 and alpha=0 the result is the greedy decode.
  """
  b, k, length = batch_size, beam_size, max_length
  max_penalty = length_penalty(length, alpha)

  def step(carry):
    i, cache, last_BK, alive_BKL, alive_logp_BK, fin_BKL, fin_score_BK, fin_flag_BK = carry
    logits, cache = step_fn(last_BK.reshape(b * k), i, cache)
    logp_BKV = mask_logits(logits.astype(jnp.float32))
    if not normalized:
      logp_BKV = jax.nn.log_softmax(logp_BKV)
    logp_BKV = logp_BKV.reshape(b, k, -1)
    vocab = logp_BKV.shape[-1]
    cand_BN = (alive_logp_BK[:, :, None] + logp_BKV).reshape(b, k * vocab)
    top_logp_B2K, top_idx_B2K = jax.lax.top_k(cand_BN, 2 * k)
    from_beam_B2K = top_idx_B2K // vocab
    token_B2K = (top_idx_B2K % vocab).astype(jnp.int32)
    seqs_B2KL = _take(alive_BKL, from_beam_B2K).at[:, :, i].set(token_B2K)
    is_eos_B2K = token_B2K == eos_id

    # Alive: the K best candidates that did not end.
    alive_logp_BK, pick_BK = jax.lax.top_k(jnp.where(is_eos_B2K, NEG_INF, top_logp_B2K), k)
    alive_BKL = _take(seqs_B2KL, pick_BK)
    last_BK = _take(token_B2K, pick_BK)
    cache = gather_beams(cache, _take(from_beam_B2K, pick_BK), b, k)

    # Finished: the candidates that ended here *within the top K* (as in fairseq:
    # an EOS outranked by K continuations is not a hypothesis of the beam),
    # merged into the K best so far.
    ends_B2K = is_eos_B2K & (jnp.arange(2 * k) < k)
    new_score_B2K = jnp.where(ends_B2K, top_logp_B2K / length_penalty(i + 1, alpha), NEG_INF)
    all_scores = jnp.concatenate([fin_score_BK, new_score_B2K], axis=1)
    all_seqs = jnp.concatenate([fin_BKL, seqs_B2KL], axis=1)
    all_flags = jnp.concatenate([fin_flag_BK, ends_B2K], axis=1)
    fin_score_BK, pick_BK = jax.lax.top_k(all_scores, k)
    fin_BKL = _take(all_seqs, pick_BK)
    fin_flag_BK = _take(all_flags, pick_BK)
    return (i + 1, cache, last_BK, alive_BKL, alive_logp_BK, fin_BKL, fin_score_BK, fin_flag_BK)

  def not_done(carry):
    i, _, _, _, alive_logp_BK, _, fin_score_BK, fin_flag_BK = carry
    # The best an alive hypothesis can still score: its log-prob only falls,
    # and the penalty is largest at full length.
    best_alive_B = alive_logp_BK[:, 0] / max_penalty
    worst_finished_B = jnp.where(fin_flag_BK, fin_score_BK, NEG_INF).min(axis=1)
    can_improve = best_alive_B > worst_finished_B
    return (i < length) & jnp.any(can_improve)

  alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1))
  carry = (jnp.array(0, jnp.int32), cache, jnp.zeros((b, k), jnp.int32),
           jnp.zeros((b, k, length), jnp.int32), alive_logp,
           jnp.zeros((b, k, length), jnp.int32), jnp.full((b, k), NEG_INF, jnp.float32),
           jnp.zeros((b, k), bool))
  _, _, _, alive_BKL, alive_logp_BK, fin_BKL, fin_score_BK, fin_flag_BK = phases.while_loop(
      not_done, step, carry, phase_lengths or (length,))
  any_finished_B = fin_flag_BK.any(axis=1)
  seqs = jnp.where(any_finished_B[:, None, None], fin_BKL, alive_BKL)
  scores = jnp.where(any_finished_B[:, None], fin_score_BK, alive_logp_BK / max_penalty)
  return seqs, scores
