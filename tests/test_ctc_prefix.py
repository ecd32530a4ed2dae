"""ctc_prefix.py: CTC prefix scores against brute force over every alignment, and joint
CTC/attention beam search."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer_jax.decode import beam as beam_search, ctc_prefix


def _collapse(path):
  out, prev = [], None
  for a in path:
    if a != prev and a != 0:
      out.append(a)
    prev = a
  return tuple(out)


def _brute(logp_TV: np.ndarray):
  """{label sequence: probability} over every alignment of the T frames."""
  probs = {}
  t, v = logp_TV.shape
  for path in itertools.product(range(v), repeat=t):
    p = np.exp(sum(logp_TV[i, a] for i, a in enumerate(path)))
    key = _collapse(path)
    probs[key] = probs.get(key, 0.0) + p
  return probs


def _prefix_prob(probs, prefix):
  return sum(p for seq, p in probs.items() if seq[:len(prefix)] == prefix)


@pytest.mark.parametrize("frames", [5, 4])  # 4: the last of the 5 frames is padding.
def test_prefix_scores_equal_the_sum_over_alignments(frames):
  t, v = 5, 4
  logits = np.random.default_rng(0).normal(size=(1, t, v)) * 2.0
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  valid = jnp.arange(t)[None, :] < frames
  probs = _brute(np.asarray(logp[0, :frames], np.float64))
  cand = jnp.array([[1, 2, 3]])
  r_n, r_b = jnp.full((1, t), ctc_prefix.FLOOR), jnp.cumsum(logp[..., 0], axis=-1)
  prefix, empty, last = (), True, 0
  for label in (2, 2, 3):  # a repeated label needs a blank between
    new_n, new_b, psi = ctc_prefix.extend(r_n, r_b, jnp.array([empty]), jnp.array([last]), cand,
                                          logp, valid)
    for j, c in enumerate((1, 2, 3)):
      want = _prefix_prob(probs, prefix + (c,))
      np.testing.assert_allclose(np.exp(psi[0, j]), want, rtol=2e-4, atol=1e-9)
      # The whole sequence's probability, read at the last real frame.
      full = np.exp(np.logaddexp(new_n[0, j, frames - 1], new_b[0, j, frames - 1]))
      np.testing.assert_allclose(full, probs.get(prefix + (c,), 0.0), rtol=2e-4, atol=1e-9)
    j = label - 1
    r_n, r_b, prefix, empty, last = new_n[:, j], new_b[:, j], prefix + (label,), False, label


def test_a_whole_sequence_matches_optax_ctc_loss():
  t, v = 12, 6
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(1, t, v)), jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  valid = jnp.ones((1, t), bool)
  labels = (3, 1, 1, 5)
  r_n, r_b = jnp.full((1, t), ctc_prefix.FLOOR), jnp.cumsum(logp[..., 0], axis=-1)
  last = 0
  for i, label in enumerate(labels):
    r_n, r_b, _ = ctc_prefix.extend(r_n, r_b, jnp.array([i == 0]), jnp.array([last]),
                                    jnp.array([[label]]), logp, valid)
    r_n, r_b, last = r_n[:, 0], r_b[:, 0], label
  loss = optax.ctc_loss(logits, jnp.zeros((1, t)), jnp.array([labels]), jnp.zeros((1, 4)))
  np.testing.assert_allclose(np.logaddexp(r_n[0, -1], r_b[0, -1]), -loss[0], rtol=1e-5)


def _uniform_decoder(vocab):
  def step_fn(tokens_N, i, cache):
    return jnp.zeros((tokens_N.shape[0], vocab)), cache
  return step_fn


def _mask(logits):
  return logits.at[:, 0].set(-1e9)  # the padding id (the CTC blank) is never produced


def test_joint_beam_follows_the_ctc_head_where_the_decoder_cannot_tell():
  """A decoder with no opinion and a CTC head that hears 3, 4, EOS: the beam spells it."""
  eos, vocab, k = 1, 6, 3
  frames = [3, 3, 0, 4, 4, 0, eos, 0]
  ctc_logits = jax.nn.one_hot(jnp.array([frames]), vocab) * 8.0
  ctc_logits = jnp.repeat(ctc_logits, k, axis=0)  # the rows of one batch row's beams
  valid = jnp.ones((k, len(frames)), bool)
  pre_beam = 2 * k
  step = ctc_prefix.joint_step_fn(_uniform_decoder(vocab), ctc_logits, valid, weight=0.5,
                                  pre_beam=pre_beam, eos_id=eos, mask_logits=_mask)
  cache = (jnp.zeros(()), ctc_prefix.init_state(k, pre_beam, len(frames)))
  seqs, _ = beam_search.beam_search(step, cache, batch_size=1, beam_size=k, max_length=6,
                                    alpha=0.0, eos_id=eos, mask_logits=_mask, normalized=True)
  np.testing.assert_array_equal(seqs[0, 0], [3, 4, eos, 0, 0, 0])


def test_weight_zero_is_the_decoders_own_beam_search():
  vocab, k, b, length = 7, 3, 2, 5
  table = jax.random.normal(jax.random.key(0), (length, vocab)) * 3.0

  def step_fn(tokens_N, i, cache):  # logits that depend on the step and the last token
    return table[i][None, :] + 0.5 * jax.nn.one_hot(tokens_N, vocab), cache

  ctc_logits = jax.random.normal(jax.random.key(1), (b * k, 9, vocab))
  step = ctc_prefix.joint_step_fn(step_fn, ctc_logits, jnp.ones((b * k, 9), bool), weight=0.0,
                                  pre_beam=vocab, eos_id=1, mask_logits=_mask)
  cache = (jnp.zeros(()), ctc_prefix.init_state(b * k, vocab, 9))
  kwargs = dict(batch_size=b, beam_size=k, max_length=length, alpha=0.6, eos_id=1,
                mask_logits=_mask)
  joint, joint_scores = beam_search.beam_search(step, cache, normalized=True, **kwargs)
  plain, plain_scores = beam_search.beam_search(step_fn, jnp.zeros(()), **kwargs)
  np.testing.assert_array_equal(joint, plain)
  np.testing.assert_allclose(joint_scores, plain_scores, rtol=1e-6)
