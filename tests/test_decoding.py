"""Decoding: the KV cache against recomputation, beam search, sampling, a sharded mesh."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.decode import (beam as beam_search, lm as lm_decoding, phases,
                                    search as decoding)
from transformer_jax.decode.search import DecodeOptions
from transformer_jax.models import attention
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.models.transformer import EncoderDecoder, TransformerConfig
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

from conftest import tiny_config

CFG = TransformerConfig(vocab_size=12, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                        num_encoder_layers=2, num_decoder_layers=2, deterministic=True)
GREEDY = DecodeOptions(method="greedy")


def _init(cfg, seed, model_class=EncoderDecoder):
  model = model_class(cfg)
  ids = jnp.ones((2, 6), jnp.int32)
  args = (ids, ids) if model_class is EncoderDecoder else (ids,)
  return model, nn.meta.unbox(model.init(jax.random.key(seed), *args)["params"])


def _sources(seed, batch=3, length=7):
  src = np.random.default_rng(seed).integers(2, 12, (batch, length)).astype(np.int32)
  src[0, -3:] = 0  # padding
  return src


def _greedy_by_recompute(model, params, src, max_length):
  """An independent reference: the full model on the targets so far, argmax at position i."""
  apply = jax.jit(model.apply)
  out = np.zeros((src.shape[0], max_length), np.int32)
  done = np.zeros(src.shape[0], bool)
  for i in range(max_length):
    logits = np.array(apply({"params": params}, src, jnp.asarray(out))[:, i])
    logits[:, 0] = -np.inf  # the padding id is never produced.
    nxt = np.where(done, 0, logits.argmax(-1))
    out[:, i] = nxt
    done |= nxt == 1
  return out


@pytest.mark.parametrize("seed,max_length,variant", [
    (0, 6, {}), (1, 11, {"norm_position": "post"}),
    (2, 16, {"num_decoder_layers": 3, "num_heads": 2, "head_dim": 16}),
    (4, 40, {})])  # 40: the cache grows 32 -> 40 on the way (phases.py).
def test_cached_greedy_equals_recomputing_the_sequence(seed, max_length, variant):
  cfg = CFG.replace(**variant)
  model, params = _init(cfg, seed)
  src = _sources(seed)
  cached = jax.jit(functools.partial(decoding.translate, config=cfg, options=GREEDY,
                                     max_length=max_length))(params, src, None)
  expected = _greedy_by_recompute(model, params, src, max_length)
  np.testing.assert_array_equal(np.asarray(cached), expected)


@pytest.mark.parametrize("options", [DecodeOptions(method="beam", beam_size=3, alpha=0.6),
                                     DecodeOptions(method="sample", top_k=5, temperature=0.8)])
@pytest.mark.parametrize("max_length", [9, 37])
def test_cached_beam_search_and_sampling_equal_uncached(options, max_length):
  _, params = _init(CFG, 3)
  src = _sources(3)
  run = functools.partial(decoding.translate, config=CFG, options=options,
                          max_length=max_length)
  rng = jax.random.key(7)
  cached = jax.jit(functools.partial(run, cached=True))(params, src, rng)
  uncached = jax.jit(functools.partial(run, cached=False))(params, src, rng)
  np.testing.assert_array_equal(cached, uncached)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_the_cached_loop_runs_in_phases_of_growing_cache_length(method):
  _, params = _init(CFG, 5)
  options = DecodeOptions(method=method, beam_size=2)
  assert phases.lengths(40) == (32, 40) and phases.lengths(64) == (32, 64)
  assert phases.lengths(448) == (32, 128, 448) and phases.lengths(32) == (32,)
  assert phases.lengths(9) == (9,)
  loops = {}
  for cached in (True, False):
    jaxpr = jax.make_jaxpr(functools.partial(decoding.translate, config=CFG, options=options,
                                             max_length=40, cached=cached))(
        params, _sources(5), jax.random.key(0))
    loops[cached] = str(jaxpr).count("while[")
  assert loops == {True: 2, False: 1}, loops
  cache = decoding.init_cache(EncoderDecoder(decoding.decode_mode(CFG, True)), 2, 16, 7)
  grown = attention.grow_cache(cache, 32)
  for path, x in jax.tree_util.tree_leaves_with_path(grown):
    name = path[-1].key
    old = functools.reduce(lambda t, p: t[p.key], path, cache)
    if name == "cached_key":  # [B, N, K, S]
      assert x.shape == old.shape[:-1] + (32,)
    elif name == "cached_value":  # [B, N, S, K]
      assert x.shape == old.shape[:-2] + (32,) + old.shape[-1:]
    else:
      assert x.shape == old.shape


def test_lm_generation_with_prompts_cached_equals_uncached():
  model, params = _init(CFG, 4, DecoderLM)
  prompts = np.array([[5, 6, 7], [8, 0, 0], [9, 10, 0]], np.int32)
  run = functools.partial(lm_decoding.generate, config=CFG, options=GREEDY, max_length=10)
  cached = np.asarray(jax.jit(functools.partial(run, cached=True))(params, prompts, None))
  uncached = np.asarray(jax.jit(functools.partial(run, cached=False))(params, prompts, None))
  np.testing.assert_array_equal(cached, uncached)
  np.testing.assert_array_equal(cached[:, :3] * (prompts > 0), prompts)  # prompts kept.
  # Row 1's third token is generated from [8, x]: the model's own argmax after the prompt.
  logits = model.apply({"params": params}, jnp.asarray(cached[1:2, :2]))
  masked = np.asarray(logits[0, 1]).copy()
  masked[0] = -np.inf
  assert cached[1, 2] == masked.argmax() or cached[1, 1] == 1


@pytest.mark.parametrize("seed", [5, 6])
def test_beam_of_one_without_length_penalty_is_greedy(seed):
  _, params = _init(CFG, seed)
  src = _sources(seed, batch=4)
  run = functools.partial(decoding.translate, config=CFG, max_length=12)
  greedy = jax.jit(functools.partial(run, options=GREEDY))(params, src, None)
  beam = jax.jit(functools.partial(run, options=DecodeOptions("beam", beam_size=1, alpha=0.0)))(
      params, src, None)
  np.testing.assert_array_equal(greedy, beam)


# Tokens: 0 start/padding, 1 EOS, 2 "a", 3 "b", 4 "c". Each row: next-token probabilities
# given the last token. Greedy takes "a" (0.55), then "c", then EOS: 0.55 * 0.5 * 0.9 = 0.2475;
# "b" then EOS scores 0.45 * 0.97 = 0.4365.
_TABLE = np.array([
    [0.0, 0.00, 0.55, 0.45, 0.00],  # after the start token
    [0.0, 0.25, 0.25, 0.25, 0.25],  # after EOS (never used)
    [0.0, 0.20, 0.15, 0.15, 0.50],  # after "a"
    [0.0, 0.97, 0.01, 0.01, 0.01],  # after "b"
    [0.0, 0.90, 0.05, 0.05, 0.00],  # after "c"
])


def _table_step(tokens_B, i, cache):
  del i
  return jnp.log(jnp.asarray(_TABLE)[tokens_B] + 1e-9), cache + 1  # the cache is reordered too.


def test_beam_search_finds_the_higher_scoring_sequence_that_greedy_misses():
  mask = decoding.vocab_mask(None)
  greedy = decoding.sample_loop(_table_step, jnp.zeros((1,)), batch_size=1, max_length=5,
                                mask_logits=mask)
  np.testing.assert_array_equal(greedy, [[2, 4, 1, 0, 0]])
  seqs, scores = jax.jit(functools.partial(
      beam_search.beam_search, _table_step, batch_size=1, beam_size=2, max_length=5, alpha=0.0,
      eos_id=1, mask_logits=mask))(jnp.zeros((2,)))
  np.testing.assert_array_equal(seqs[0, 0], [3, 1, 0, 0, 0])
  np.testing.assert_allclose(scores[0, 0], np.log(0.45 * 0.97), rtol=1e-5)
  assert scores[0, 1] < scores[0, 0]
  np.testing.assert_allclose(scores[0, 1], np.log(0.55 * 0.5 * 0.9), rtol=1e-5)


def test_length_penalty_prefers_longer_finished_sequences():
  mask = decoding.vocab_mask(None)
  run = functools.partial(beam_search.beam_search, _table_step, batch_size=1, beam_size=2,
                          max_length=5, eos_id=1, mask_logits=mask)
  short, _ = run(jnp.zeros((2,)), alpha=0.0)
  long, _ = run(jnp.zeros((2,)), alpha=8.0)  # a huge alpha rewards length over probability
  assert (np.asarray(long[0, 0]) > 0).sum() > (np.asarray(short[0, 0]) > 0).sum()


def test_sampling_is_reproducible_and_top_k_of_one_is_greedy():
  _, params = _init(CFG, 8)
  src = _sources(8, batch=6)
  run = functools.partial(decoding.translate, config=CFG, max_length=10)
  sample = jax.jit(functools.partial(run, options=DecodeOptions("sample", temperature=1.0)))
  a = sample(params, src, jax.random.key(1))
  np.testing.assert_array_equal(a, sample(params, src, jax.random.key(1)))
  assert not np.array_equal(a, sample(params, src, jax.random.key(2)))
  greedy = jax.jit(functools.partial(run, options=GREEDY))(params, src, None)
  top1 = jax.jit(functools.partial(run, options=DecodeOptions("sample", top_k=1)))(
      params, src, jax.random.key(3))
  np.testing.assert_array_equal(top1, greedy)


def test_top_k_and_top_p_keep_only_the_likely_tokens():
  logits = jnp.log(jnp.tile(jnp.array([[0.5, 0.3, 0.15, 0.05]]), (4000, 1)))
  draw = jax.jit(decoding.choose_tokens, static_argnums=(2, 3, 4))
  seen = lambda *a: set(np.unique(draw(jax.random.key(0), logits, *a)).tolist())  # noqa: E731
  assert seen(1.0, 0, 1.0) == {0, 1, 2, 3}
  assert seen(1.0, 2, 1.0) == {0, 1}
  assert seen(1.0, 0, 0.7) == {0, 1}  # 0.5 < 0.7, then 0.8 >= 0.7: two tokens.
  assert seen(1.0, 0, 0.5) == {0}
  freq = np.bincount(np.asarray(draw(jax.random.key(1), logits, 1.0, 0, 1.0)), minlength=4)
  np.testing.assert_allclose(freq / freq.sum(), [0.5, 0.3, 0.15, 0.05], atol=0.03)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_decoding_on_a_sharded_mesh_equals_one_device(method):
  config = tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2,
                          "decoding.method": method, "decoding.beam_size": 2})
  progs = programs.build(config, sharding.make_mesh(config), vocab_size=400)
  src = _sources(9, batch=progs.global_batch_size, length=10)
  src = np.where(src > 0, src + 100, 0).astype(np.int32)
  with progs.context():
    state = progs.init_state(jax.random.key(0))
    inputs = sharding.global_batch({"inputs": src}, progs.batch_sharding)["inputs"]
    sharded = np.asarray(progs.decode(state.params, inputs, jax.random.key(0)))
  params = jax.device_get(state.params)
  single = jax.jit(functools.partial(
      decoding.translate, config=progs.model_config, max_length=config.max_predict_length,
      options=DecodeOptions.from_config(config.decoding), vocab_limit=400))(
          params, src, jax.random.key(0))
  np.testing.assert_array_equal(sharded, single)
  assert (sharded[:, 0] > 0).all()
