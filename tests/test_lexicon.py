"""lexicon.py: the word trie's states and penalties, and beam search that pays for
words outside the list."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.decode import beam as beam_search, lexicon, search as decoding
from transformer_jax.models import speech
from transformer_jax.models.transformer import TransformerConfig

EOS, SPACE, VOCAB = 1, 3, 10
LETTERS = {ch: 4 + i for i, ch in enumerate("abcdef")}


def _ids(word):
  return [LETTERS[ch] for ch in word]


def _tables(words, penalty=5.0):
  return lexicon.build(words, _ids, SPACE, EOS, VOCAB, penalty)


def _walk(tables, tokens):
  state, paid = lexicon.ROOT, 0.0
  for t in tokens:
    paid += tables.penalty[state, t]
    state = tables.next_state[state, t]
  return state, paid


@pytest.mark.parametrize("text,paid", [
    ("bad cab", 0.0),      # both listed
    ("ba cab", -5.0),      # "ba" is a prefix of a listed word, not a word
    ("bed cab", -5.0),     # "bed" leaves the trie at "e": paid once
    ("bed fee", -10.0),    # two unlisted words: paid twice
    ("bad", 0.0),
])
def test_a_word_outside_the_list_is_paid_for_once(text, paid):
  tables = _tables(["bad", "cab", "ad"])
  tokens = [t for w in text.split() for t in [SPACE] + _ids(w)] + [EOS]
  state, total = _walk(tables, tokens)
  assert state == lexicon.ROOT and total == paid


def _fixed_decoder(preferred, second):
  """A decoder sure of `preferred`, with `second` a close second at each step (0: none)."""
  def step_fn(tokens_N, i, cache):
    want = jnp.asarray(preferred + [EOS] * 8)[i]
    alt = jnp.asarray(second + [0] * 8)[i]
    logits = jax.nn.one_hot(want, VOCAB) * 6.0 + jax.nn.one_hot(alt, VOCAB) * 5.0
    return jnp.broadcast_to(logits, tokens_N.shape + (VOCAB,)), cache
  return step_fn


def _mask(logits):
  return logits.at[:, 0].set(-1e9)


@pytest.mark.parametrize("penalty,expected", [(0.0, "bed"), (20.0, "bad")])
def test_the_beam_trades_what_it_hears_for_listed_words(penalty, expected):
  heard = [SPACE] + _ids("bed") + [EOS]  # "bad" a close second: "a" for "e"
  decoder = _fixed_decoder(heard, [0, 0, LETTERS["a"], 0, 0])
  step = lexicon.step_fn(lexicon.log_scores(decoder, _mask),
                         _tables(["bad", "cab"], penalty))
  k = 4
  seqs, _ = beam_search.beam_search(step, (jnp.zeros(()), jnp.zeros(k, jnp.int32)), batch_size=1,
                                    beam_size=k, max_length=6, alpha=0.0, eos_id=EOS,
                                    mask_logits=_mask, normalized=True)
  assert list(seqs[0, 0]) == [SPACE] + _ids(expected) + [EOS, 0]


def test_a_speech_models_beam_keeps_to_the_list_and_decodes_cached_as_uncached():
  cfg = TransformerConfig(vocab_size=16, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                          num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0,
                          attention_dropout_rate=0.0, deterministic=True, num_mel_bins=8,
                          subsample=2, ctc_weight=0.5)
  x = np.random.default_rng(0).standard_normal((2, 16, 9)).astype(np.float32)
  x[..., -1] = 1.0
  model = speech.SpeechToText(cfg)
  params = model.init(jax.random.key(0), jnp.asarray(x), jnp.ones((2, 5), jnp.int32))["params"]
  params = {**params, "ctc_head": nn.meta.unbox(params["ctc_head"]) * 4.0}
  tables = lexicon.build(["abc", "fed", "e"], _ids, SPACE, EOS, 16, 1e4)
  for weight in (0.0, 0.3):
    options = decoding.DecodeOptions(method="beam", beam_size=3, ctc_weight=weight,
                                     oov_penalty=1e4)
    out = {cached: np.asarray(jax.jit(lambda p, f, c=cached: decoding.transcribe(
        p, f, None, config=cfg, options=options, max_length=10, vocab_limit=10, cached=c,
        lexicon=tables))(params, jnp.asarray(x))) for cached in (True, False)}
    np.testing.assert_array_equal(out[True], out[False])
    for row in out[True]:
      ids = list(row[:list(row).index(EOS)] if EOS in row else row)
      words, word = [], []
      for t in ids:
        if t == SPACE:
          words, word = words + ["".join(word)] if word else words, []
        else:
          word.append({v: k for k, v in LETTERS.items()}.get(int(t), "?"))
      words += ["".join(word)] if word else []
      finished = EOS in row
      listed = words if finished else words[:-1]  # a cut-off last word may be a prefix
      assert all(w in ("abc", "fed", "e") for w in listed), (row, words)
