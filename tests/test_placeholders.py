"""Decoding that keeps a source's printf placeholders (decoding.keep_placeholders)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import config as config_lib, kinds
from transformer_jax.data import tokenizer as tok
from transformer_jax.decode import beam as beam_search, placeholders, search as decoding
from transformer_jax.decode.search import DecodeOptions
from transformer_jax.models.transformer import EncoderDecoder, TransformerConfig

from conftest import tiny_config

# A toy vocabulary: 0 pad, 1 EOS, 2-4 words, 5 and 6 placeholders. The step function's
# preferences, best first: placeholder 5, EOS, placeholder 6, word 3, the rest.
PH = (5, 6)
PREFS = jnp.array([0.0, 4.0, 0.0, 2.0, 0.0, 5.0, 3.0], jnp.float32)


def _toy_step(tokens_B, i, cache):
  del i
  return jnp.broadcast_to(PREFS, (tokens_B.shape[0], PREFS.shape[0])), cache


def _decode(sources, method, keep=True, max_length=6):
  sources = jnp.asarray(sources, jnp.int32)
  b = sources.shape[0]
  k = 2 if method == "beam" else 1
  step_fn, cache = _toy_step, jnp.zeros((b * k,), jnp.int32)
  if keep:
    owed = jnp.repeat(placeholders.source_counts(sources, PH), k, axis=0)
    step_fn, cache = placeholders.step_fn(step_fn, PH, tok.EOS_ID), (cache, owed)
  if method == "beam":
    seqs, _ = beam_search.beam_search(step_fn, cache, batch_size=b, beam_size=k,
                                      max_length=max_length, alpha=0.0, eos_id=tok.EOS_ID)
    return np.asarray(seqs[:, 0])
  return np.asarray(decoding.sample_loop(step_fn, cache, batch_size=b, max_length=max_length,
                                         temperature=0.0))


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_each_placeholder_comes_out_as_often_as_it_went_in(method):
  sources = [[3, 5, 4, 6, 1, 0],   # one of each: 5, then 6 (EOS is owed until then), EOS.
             [5, 3, 5, 1, 0, 0],   # two of 5.
             [3, 4, 1, 0, 0, 0],   # none: EOS at once, though 5 is preferred to it.
             [6, 6, 6, 1, 0, 0]]   # three of 6, preferred below EOS and 5.
  want = [[5, 6, 1, 0, 0, 0], [5, 5, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [6, 6, 6, 1, 0, 0]]
  np.testing.assert_array_equal(_decode(sources, method), want)
  # Unconstrained, greedy repeats placeholder 5 to the end, and beam search (which scores
  # whole hypotheses) ends every row at once.
  free = _decode(sources, method, keep=False)
  if method == "greedy":
    np.testing.assert_array_equal(free, [[5] * 6] * 4)
  else:
    np.testing.assert_array_equal(free, [[1, 0, 0, 0, 0, 0]] * 4)


def test_a_translation_never_holds_more_placeholders_than_its_source():
  """The real model (random weights, 12 ids of which 4 are placeholder pieces), greedy
  and beam search: no row holds a placeholder piece more often than its source, and a row
  that ended holds each exactly as often; without the constraint some rows do not."""
  cfg = TransformerConfig(vocab_size=12, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                          num_encoder_layers=2, num_decoder_layers=2, deterministic=True)
  ids = (7, 8, 9, 10)
  model = EncoderDecoder(cfg)
  dummy = jnp.ones((2, 6), jnp.int32)
  src = np.random.default_rng(0).integers(2, 12, (6, 9)).astype(np.int32)
  src[:, -2:] = 0
  broken = 0
  for seed in range(2):
    params = nn.meta.unbox(model.init(jax.random.key(seed), dummy, dummy)["params"])
    for options in (DecodeOptions(method="greedy"), DecodeOptions(method="beam", beam_size=3)):
      def run(keep, params=params, options=options):
        return np.asarray(decoding.translate(params, jnp.asarray(src), None, config=cfg,
                                             options=options, max_length=16,
                                             placeholder_ids=ids if keep else ()))
      for row, (out, s) in enumerate(zip(run(True), src)):
        ended = tok.EOS_ID in out
        out = out[:list(out).index(tok.EOS_ID)] if ended else out
        for p in ids:
          assert (out == p).sum() <= (s == p).sum(), (seed, options.method, row, p)
          if ended:
            assert (out == p).sum() == (s == p).sum(), (seed, options.method, row, p)
      for out, s in zip(run(False), src):
        out = out[:list(out).index(tok.EOS_ID)] if tok.EOS_ID in out else out
        broken += any((out == p).sum() != (s == p).sum() for p in ids)
  assert broken > 0


def test_piece_ids_are_the_tokenizers_whole_placeholders():
  texts = ["Cannot open file %s: %d bytes", "Copied %1$d of %2$d files to %(dest)s",
           "Value {0} is out of range", "100%% done in %s"] * 20
  t = tok.Tokenizer(tok.train_tokenizer(texts, vocab_size=300,
                                        seed_symbols=tok.placeholders(texts, 5, 50)))
  ids = placeholders.piece_ids(t)
  pieces = t.id_pieces(ids)
  assert {"%s", "%d", "%1$d", "%2$d", "%(dest)s", "{0}", "%%"} <= set(pieces)
  assert all(tok.PLACEHOLDER_RE.fullmatch(p) for p in pieces)
  src = t.encode("Cannot open file %s: %d bytes")
  counts = np.asarray(placeholders.source_counts(jnp.asarray(src)[None], ids))[0]
  assert counts.sum() == 2 and counts[pieces.index("%s")] == 1


def test_only_translation_keeps_placeholders():
  with pytest.raises(config_lib.ConfigError, match="config.decoding.keep_placeholders=True"):
    kinds.validate(tiny_config(**{"model.kind": "decoder_lm", "data.source": "python_stdlib",
                                       "decoding.keep_placeholders": True}), 8)
  kinds.validate(tiny_config(**{"decoding.keep_placeholders": True}), 8)
