"""Joint CTC/attention beam search: the CTC head's prefix scores next to the decoder's.

Hybrid CTC/attention decoding (Watanabe et al. 2017, as in ESPnet) ranks a
hypothesis h by

  (1 - w) log p_att(h | x) + w log p_ctc(h... | x)

where p_ctc(h... | x) is the CTC prefix probability: the total probability of
every frame alignment whose label sequence starts with h. The decoder alone may
skip or repeat words it does not hear; the prefix score ties each hypothesis to
the frames. For a hypothesis g and each candidate label c the search needs
psi(g + c) - psi(g), computed here for the `pre_beam` best candidates of the
decoder (the others are not extended), from two arrays per hypothesis over the
T encoder positions: r_n[t] and r_b[t], the probability that g has been emitted
by frame t with the last frame on a label or on a blank. In log space, with
y[t, c] the CTC head's log-probabilities (blank: id 0):

  phi[t]   = logaddexp(r_b(g)[t], r_n(g)[t] if c != last(g) else -inf)
  r_n(h)[t] = logaddexp(r_n(h)[t-1], phi[t-1]) + y[t, c]
  r_b(h)[t] = logaddexp(r_n(h)[t-1], r_b(h)[t-1]) + y[t, blank]
  psi(h)   = logsumexp_t (phi[t-1] + y[t, c])        (phi[-1] = 0 for the empty g)

Both recurrences are linear in probability space, so they are solved with
cumulative sums and `cumlogsumexp` over t instead of a loop over frames. The
model's CTC targets end with EOS (a label like the others), so a hypothesis that
ends is scored with the probability of its whole label sequence, EOS included:
logaddexp(r_n(g + EOS), r_b(g + EOS)) at its last real frame.

`joint_step_fn` wraps a decoder step for `beam_search.beam_search(...,
normalized=True)`: the cache becomes (decoder cache, CTC state), and the CTC state
holds, for each beam, the arrays of its `pre_beam` candidates; the next step
picks the one that was chosen, by the token it is fed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
FLOOR = -1.0e10  # log(0), finite: differences of impossible scores stay NaN-free.
# The most a step's CTC term may cost: an extension the frames cannot produce, or one
# outside the pre-beam. Far below any real score, and far above the -1e9 that masks
# ids decoding never produces (decoding.vocab_mask), so those stay last.
MAX_COST = 1.0e5


class CtcState(NamedTuple):
  """Per beam row N: the candidates [N, P] scored last step, their r_n, r_b [N, P, T]
  and prefix log-probabilities psi [N, P]."""
  candidates: Array
  r_n: Array
  r_b: Array
  psi: Array


def _shift(x_NPT: Array, first: Array) -> Array:
  """x[..., t - 1] along the last axis, `first` at t = 0."""
  first = jnp.broadcast_to(first, x_NPT.shape[:-1] + (1,)).astype(x_NPT.dtype)
  return jnp.concatenate([first, x_NPT[..., :-1]], axis=-1)


def extend(r_n_NT: Array, r_b_NT: Array, empty_N: Array, last_N: Array, cand_NP: Array,
           logp_NTV: Array, valid_NT: Array) -> tuple[Array, Array, Array]:
  """(r_n, r_b [N, P, T], psi [N, P]) of g + c for each candidate c of each prefix g.

  `empty_N`: g is the empty prefix (no frame emitted anything yet); `last_N`: g's
  last label (never equal to a candidate when g is empty); `valid_NT`: the real
  frames (the arrays are FLOOR past a row's end, and psi sums over real frames)."""
  y_NPT = jnp.take_along_axis(logp_NTV, cand_NP[:, None, :], axis=2).transpose(0, 2, 1)
  differs_NP1 = (cand_NP != last_N[:, None])[..., None]
  phi_NPT = jnp.logaddexp(r_b_NT[:, None, :], jnp.where(differs_NP1, r_n_NT[:, None, :], FLOOR))
  phi_prev_NPT = _shift(phi_NPT, jnp.where(empty_N, 0.0, FLOOR)[:, None, None])
  c_NPT = jnp.cumsum(y_NPT, axis=-1)
  r_n_NPT = c_NPT + jax.lax.cumlogsumexp(phi_prev_NPT - _shift(c_NPT, 0.0), axis=2)
  valid_N1T = valid_NT[:, None, :]
  psi_NP = jax.nn.logsumexp(jnp.where(valid_N1T, phi_prev_NPT + y_NPT, FLOOR), axis=-1)
  b_NPT = jnp.broadcast_to(jnp.cumsum(logp_NTV[..., 0], axis=-1)[:, None, :], r_n_NPT.shape)
  r_b_NPT = b_NPT + jax.lax.cumlogsumexp(_shift(r_n_NPT, FLOOR) - _shift(b_NPT, 0.0), axis=2)
  real = lambda x: jnp.where(valid_N1T, jnp.maximum(x, FLOOR), FLOOR)
  return real(r_n_NPT), real(r_b_NPT), jnp.maximum(psi_NP, FLOOR)


def init_state(n: int, pre_beam: int, t: int) -> CtcState:
  """A placeholder state: the first step starts from the empty prefix whatever it holds."""
  return CtcState(jnp.zeros((n, pre_beam), jnp.int32), jnp.full((n, pre_beam, t), FLOOR),
                  jnp.full((n, pre_beam, t), FLOOR), jnp.zeros((n, pre_beam)))


def joint_step_fn(step_fn, ctc_logits_NTV: Array, valid_NT: Array, *, weight: float,
                  pre_beam: int, eos_id: int, mask_logits):
  """A beam step scoring (1 - weight) log p_att + weight (psi(g + c) - psi(g)).

  `step_fn(tokens [N], i, cache) -> (logits [N, V], cache)` is the decoder's and
  `ctc_logits_NTV` the CTC head's, `valid_NT` its real frames (rows beam-minor, as
  the decoder's). The returned step takes and gives (decoder cache, CtcState) and
  returns log-scores, not logits: labels outside the decoder's `pre_beam` best
  cost weight * MAX_COST."""
  logp_NTV = jax.nn.log_softmax(ctc_logits_NTV.astype(jnp.float32), axis=-1)
  n, _, vocab = logp_NTV.shape
  blank_cum_NT = jnp.where(valid_NT, jnp.cumsum(logp_NTV[..., 0], axis=-1), FLOOR)
  last_frame_N = jnp.maximum(valid_NT.sum(axis=1) - 1, 0)
  rows_N, slots_P = jnp.arange(n), jnp.arange(pre_beam)

  def step(tokens_N: Array, i: Array, cache: tuple[Any, CtcState]):
    att_cache, ctc = cache
    logits_NV, att_cache = step_fn(tokens_N, i, att_cache)
    att_NV = jax.nn.log_softmax(mask_logits(logits_NV.astype(jnp.float32)), axis=-1)
    # The prefix g of each row: the candidate it was extended by (the token it is fed).
    slot_N = jnp.argmax(ctc.candidates == tokens_N[:, None], axis=1)
    empty = i == 0
    r_n_NT = jnp.where(empty, FLOOR, ctc.r_n[rows_N, slot_N])
    r_b_NT = jnp.where(empty, blank_cum_NT, ctc.r_b[rows_N, slot_N])
    psi_N = jnp.where(empty, 0.0, ctc.psi[rows_N, slot_N])
    _, cand_NP = jax.lax.top_k(att_NV, pre_beam)
    r_n, r_b, psi = extend(r_n_NT, r_b_NT, jnp.full((n,), empty), tokens_N, cand_NP,
                           logp_NTV, valid_NT)
    # A candidate EOS ends the hypothesis: the probability of the whole label sequence.
    at_end = (rows_N[:, None], slots_P[None, :], last_frame_N[:, None])
    psi = jnp.where(cand_NP == eos_id, jnp.logaddexp(r_n[at_end], r_b[at_end]), psi)
    ctc_NV = jnp.full((n, vocab), FLOOR).at[rows_N[:, None], cand_NP].set(psi - psi_N[:, None])
    scores_NV = (1.0 - weight) * att_NV + weight * jnp.maximum(ctc_NV, -MAX_COST)
    return scores_NV, (att_cache, CtcState(cand_NP, r_n, r_b, psi))

  return step
