"""Autoregressive decoding: greedy, sampling and beam search over a key/value cache.

A decoder is driven through one function, `step_fn(tokens [B], position, cache)
-> (logits [B, V], cache)`: with the cache (`cached_step_fn`), each call feeds one
token and the attention layers append its keys and values; without it
(`uncached_step_fn`, the reference), each call reruns the decoder over the whole
sequence so far. The loops below (`sample_loop`, `beam_search.beam_search`)
work with either, inside `jax.jit`. The encoder runs once per source batch.

Sequence convention: position i is fed the previous token (the start token 0
at i = 0) and its logits pick token i. Outputs are [B, max_length] ids with the
EOS kept and zeros after it. Ids the tokenizer does not have (the model's
vocabulary is padded) and the padding id are never produced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.data.tokenizer import EOS_ID, PAD_ID
from transformer_jax.decode import (beam as beam_lib, ctc_prefix, lexicon as lexicon_lib,
                                    phases, placeholders)
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.models.speech import SpeechToText
from transformer_jax.models.transformer import EncoderDecoder, TransformerConfig, unstack_layers

Array = jax.Array


class Source(NamedTuple):
  """What an encoder-decoder's decoder attends to: the encoder's output, which of its
  positions count (> 0), and the model class (EncoderDecoder, SpeechToText)."""
  encoded_BSD: Array
  valid_BS: Array
  model_type: type = EncoderDecoder

  def repeat(self, k: int) -> "Source":
    """Each row k times (beam search)."""
    return Source(jnp.repeat(self.encoded_BSD, k, axis=0), jnp.repeat(self.valid_BS, k, axis=0),
                  self.model_type)


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to pick tokens; `config.decoding` holds the same fields."""
  method: str = "greedy"  # greedy | beam | sample | ctc (speech_to_text's CTC head).
  beam_size: int = 4
  alpha: float = 0.6  # beam search length penalty ((5 + len) / 6) ** alpha.
  temperature: float = 1.0  # sampling: logits / temperature.
  top_k: int = 0  # sampling: keep the k most likely tokens (0: all).
  top_p: float = 1.0  # sampling: keep the smallest set with this much probability.
  ctc_weight: float = 0.0  # beam search of a speech model with a CTC head: the weight of
  # its prefix scores against the decoder's (ctc_prefix.py); 0: the decoder alone.
  oov_penalty: float = 0.0  # beam search of a letter model: the cost of a word outside
  # the run's word list (lexicon.py); 0: no list.

  @classmethod
  def from_config(cls, decoding) -> "DecodeOptions":
    return cls(**{f.name: decoding[f.name] for f in dataclasses.fields(cls)})


def vocab_mask(vocab_limit: int | None):
  """Logits with the padding id and ids >= vocab_limit (the padded rows) made impossible."""
  def mask(logits_BV: Array) -> Array:
    ids = jnp.arange(logits_BV.shape[-1])
    bad = ids == PAD_ID
    if vocab_limit is not None:
      bad = bad | (ids >= vocab_limit)
    return jnp.where(bad, beam_lib.NEG_INF * 100, logits_BV)
  return mask


def choose_tokens(rng: Array | None, logits_BV: Array, temperature: float = 0.0,
                  top_k: int = 0, top_p: float = 1.0) -> Array:
  """Greedy (temperature 0) or a sample after temperature, top-k and top-p filtering.

  `temperature` and `top_p` may also be arrays [B], one value per row (the server's
  requests): a row of temperature 0 is greedy, one of top_p 1 keeps every token."""
  logits_BV = logits_BV.astype(jnp.float32)
  per_row = not isinstance(temperature, (int, float))
  if not per_row and temperature == 0.0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  greedy_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32) if per_row else None
  if per_row:
    sampled_rows_B = temperature > 0
    temperature = jnp.where(sampled_rows_B, temperature, 1.0)[:, None]
  logits_BV = logits_BV / temperature
  if top_k > 0:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if not isinstance(top_p, (int, float)):
    top_p = jnp.asarray(top_p, jnp.float32)[:, None]
  if not isinstance(top_p, (int, float)) or top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1)
    # Keep a token while the mass before it is below top_p (so at least one).
    before_BV = cum_BV - jax.nn.softmax(sorted_BV, axis=-1)
    keep_BV = (before_BV < top_p) | (top_p >= 1.0)
    cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), axis=-1, keepdims=True)
    logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
  sampled_B = jax.random.categorical(rng, logits_BV, axis=-1).astype(jnp.int32)
  return sampled_B if greedy_B is None else jnp.where(sampled_rows_B, sampled_B, greedy_B)


def sample_loop(step_fn, cache, *, batch_size: int, max_length: int, rng: Array | None = None,
                temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                prompt_BL: Array | None = None, eos_id: int | tuple[int, ...] = EOS_ID,
                mask_logits=lambda x: x, start_B: Array | None = None,
                start_index: Array | None = None, phase_lengths: Sequence[int] = ()) -> Array:
  """Greedy (temperature 0) or sampled decoding; returns [B, max_length] ids.

  `prompt_BL` (left-aligned, zero-padded) forces each row's first tokens; the
  output starts with them. A row stops at its first generated EOS (any of `eos_id`);
  the loop ends when every row has stopped or at `max_length`. `start_B`: what
  position 0 is fed (default the start token 0). `start_index`: the first position the
  loop computes, the cache already holding the earlier ones (a prefill); the prompt fills
  the output before it. `phase_lengths`: the cache's length in each phase of the loop
  (phases.py), the first the length it comes with; empty: one loop.
  """
  b = batch_size
  if prompt_BL is None:
    prompt_BL = jnp.zeros((b, max_length), jnp.int32)
  elif prompt_BL.shape[1] < max_length:
    prompt_BL = jnp.pad(prompt_BL, ((0, 0), (0, max_length - prompt_BL.shape[1])))
  prompt_BL = prompt_BL[:, :max_length]
  prompt_len_B = (prompt_BL > 0).sum(axis=1)
  if rng is None:
    rng = jax.random.key(0)
  stops = jnp.asarray((eos_id,) if isinstance(eos_id, int) else eos_id, jnp.int32)
  if start_B is None:
    start_B = jnp.zeros((b,), jnp.int32)
  first = jnp.array(0, jnp.int32) if start_index is None else start_index.astype(jnp.int32)

  def step(carry):
    i, cache, token_B, out_BL, done_B = carry
    logits_BV, cache = step_fn(token_B, i, cache)
    next_B = choose_tokens(jax.random.fold_in(rng, i), mask_logits(logits_BV),
                           temperature, top_k, top_p)
    forced_B = i < prompt_len_B
    next_B = jnp.where(forced_B, prompt_BL[:, i], next_B)
    next_B = jnp.where(done_B, 0, next_B)
    out_BL = out_BL.at[:, i].set(next_B)
    stopped_B = jnp.any(next_B[:, None] == stops[None, :], axis=1)
    return i + 1, cache, next_B, out_BL, done_B | (stopped_B & ~forced_B)

  def not_done(carry):
    i, _, _, _, done_B = carry
    return (i < max_length) & ~jnp.all(done_B)

  before_B = jax.lax.dynamic_index_in_dim(prompt_BL, jnp.maximum(first - 1, 0), axis=1,
                                          keepdims=False)
  token_B = jnp.where(first > 0, before_B, start_B)
  out_BL = jnp.where(jnp.arange(max_length)[None, :] < first, prompt_BL, 0)
  carry = (first, cache, token_B, out_BL, jnp.zeros((b,), bool))
  return phases.while_loop(not_done, step, carry, phase_lengths or (max_length,))[3]


# --------------------------------------------------------------------------- model steps


def decode_mode(config: TransformerConfig, cached: bool) -> TransformerConfig:
  return config.replace(deterministic=True, decode=cached)


def init_cache(model: nn.Module, batch_size: int, max_length: int, source_length: int = 0):
  """A zeroed key/value cache for `max_length` target positions."""
  def init():
    targets = jnp.ones((batch_size, max_length), jnp.int32)
    if hasattr(model, "dummy_source"):  # an encoder-decoder: its inputs, of this length.
      source = model.dummy_source(batch_size, source_length, model.config)
      return model.init(jax.random.key(0), source, targets)["cache"]
    return model.init(jax.random.key(0), targets)["cache"]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(init))


def _model_logits(model: nn.Module, variables, tokens_BL, positions_BL, source, mutable):
  """Decoder logits for the model kind; `source` is a Source or None (a decoder-only LM)."""
  if source is not None:
    return model.apply(variables, source.encoded_BSD, source.valid_BS, tokens_BL, positions_BL,
                       method=source.model_type.decode, mutable=mutable)
  return model.apply(variables, tokens_BL, positions_BL, method=DecoderLM.logits,
                     mutable=mutable)


def cached_step_fn(config: TransformerConfig, params, source=None):
  """(step_fn, model) feeding one token per call through the key/value cache."""
  model = type_for(source)(decode_mode(config, cached=True))

  def step_fn(tokens_B, i, cache):
    positions_B1 = jnp.full((tokens_B.shape[0], 1), i, jnp.int32)
    logits_B1V, mutated = _model_logits(model, {"params": params, "cache": cache},
                                        tokens_B[:, None], positions_B1, source, ["cache"])
    return logits_B1V[:, 0], mutated["cache"]
  return step_fn, model


def uncached_step_fn(config: TransformerConfig, params, source=None):
  """(step_fn, model) rerunning the decoder over the whole prefix (the "cache" is the ids)."""
  model = type_for(source)(decode_mode(config, cached=False))

  def step_fn(tokens_B, i, inputs_BL):
    inputs_BL = inputs_BL.at[:, i].set(tokens_B)
    logits_BLV = _model_logits(model, {"params": params}, inputs_BL, None, source, False)
    return jax.lax.dynamic_index_in_dim(logits_BLV, i, axis=1, keepdims=False), inputs_BL
  return step_fn, model


def type_for(source) -> type:
  return source.model_type if source is not None else DecoderLM


def encode(config: TransformerConfig, params, inputs: Array,
           model_type: type = EncoderDecoder) -> Source:
  """The encoder's output for `inputs` (source ids, or speech features) as a Source."""
  model = model_type(decode_mode(config, cached=False))
  encoded_BSD = model.apply({"params": params}, inputs, method=model_type.encode)
  return Source(encoded_BSD, model_type.source_valid(inputs, config), model_type)


def start_state(config: TransformerConfig, params, batch_size: int, max_length: int, source,
                cached: bool):
  """(step_fn, its initial cache) for `batch_size` rows; `source` is a Source or None."""
  if cached:
    step_fn, model = cached_step_fn(config, params, source)
    source_length = source.valid_BS.shape[1] if source is not None else 0
    return step_fn, init_cache(model, batch_size, max_length, source_length)
  step_fn, _ = uncached_step_fn(config, params, source)
  return step_fn, jnp.zeros((batch_size, max_length), jnp.int32)


# --------------------------------------------------------------------------- entry points


def unscanned(config: TransformerConfig, params) -> tuple[TransformerConfig, Any]:
  """A model trained with scanned layers decodes layer by layer (each with its own
  key/value cache): the config without scan_layers and the parameters unstacked."""
  if not config.scan_layers:
    return config, params
  return config.replace(scan_layers=False), unstack_layers(params)


def translate(params, inputs_BS: Array, rng: Array | None, *, config: TransformerConfig,
              options: DecodeOptions, max_length: int, vocab_limit: int | None = None,
              cached: bool = True, placeholder_ids: tuple[int, ...] = ()) -> Array:
  """Target ids [B, max_length] for source ids [B, S] (zero-padded); jit-able. With
  `placeholder_ids` (placeholders.piece_ids) each of those pieces comes out exactly as
  often as it is in the source (where the translation ends within max_length)."""
  return _encode_decode(EncoderDecoder, params, inputs_BS, rng, config=config,
                        options=options, max_length=max_length, vocab_limit=vocab_limit,
                        cached=cached, placeholder_ids=placeholder_ids)


def transcribe(params, features_BTF: Array, rng: Array | None, *, config: TransformerConfig,
               options: DecodeOptions, max_length: int, vocab_limit: int | None = None,
               cached: bool = True, lexicon: lexicon_lib.Tables | None = None) -> Array:
  """Transcript ids [B, max_length] for speech features with their frame mask
  [B, T, F + 1] (models/speech.py); jit-able. Method "ctc" reads the encoder's CTC
  head (ctc_greedy); the others run the decoder. `lexicon`: the word trie that beam
  search charges options.oov_penalty against (lexicon.py)."""
  if options.method == "ctc":
    return ctc_greedy(params, features_BTF, config=config, max_length=max_length,
                      vocab_limit=vocab_limit)
  return _encode_decode(SpeechToText, params, features_BTF, rng, config=config,
                        options=options, max_length=max_length, vocab_limit=vocab_limit,
                        cached=cached, lexicon=lexicon)


def ctc_greedy(params, features_BTF: Array, *, config: TransformerConfig, max_length: int,
               vocab_limit: int | None = None) -> Array:
  """Greedy CTC decoding: the most likely id at every encoder position, repeats merged,
  then blanks (id 0) dropped; [B, max_length] ids, EOS after the last (where it fits).
  One encoder pass, no decoder loop."""
  config, params = unscanned(config, params)
  model = SpeechToText(decode_mode(config, cached=False))
  logits_BSV = model.apply({"params": params}, features_BTF,
                           method=lambda m, x: m.ctc_logits(m.encode(x)))
  if vocab_limit is not None:
    logits_BSV = jnp.where(jnp.arange(logits_BSV.shape[-1]) >= vocab_limit,
                           beam_lib.NEG_INF, logits_BSV)
  best_BS = jnp.argmax(logits_BSV, axis=-1).astype(jnp.int32)
  valid_BS = SpeechToText.source_valid(features_BTF, config) > 0
  previous_BS = jnp.pad(best_BS[:, :-1], ((0, 0), (1, 0)))
  keep_BS = valid_BS & (best_BS != PAD_ID) & (best_BS != previous_BS)
  # Each kept id's place in the output; the rest (and any past max_length) go to a last
  # column that is dropped.
  slot_BS = jnp.where(keep_BS, jnp.minimum(jnp.cumsum(keep_BS, axis=1) - 1, max_length),
                      max_length)
  rows_B1 = jnp.arange(best_BS.shape[0])[:, None]
  out_BL = jnp.zeros((best_BS.shape[0], max_length + 1), jnp.int32)
  out_BL = out_BL.at[rows_B1, slot_BS].set(jnp.where(keep_BS, best_BS, 0))
  end_B = jnp.minimum(keep_BS.sum(axis=1), max_length)  # max_length: no room for EOS.
  out_BL = out_BL.at[rows_B1[:, 0], end_B].set(EOS_ID)
  return out_BL[:, :max_length]


def _encode_decode(model_type: type, params, inputs: Array, rng: Array | None, *,
                   config: TransformerConfig, options: DecodeOptions, max_length: int,
                   vocab_limit: int | None, cached: bool,
                   lexicon: lexicon_lib.Tables | None = None,
                   placeholder_ids: tuple[int, ...] = ()) -> Array:
  """An encoder-decoder's output ids: the encoder once, then the decoder's loop."""
  config, params = unscanned(config, params)
  b = inputs.shape[0]
  source = encode(config, params, inputs, model_type)
  mask = vocab_mask(vocab_limit)
  # With the cache, the loop runs in phases of growing cache length (phases.py).
  phase_lengths = phases.lengths(max_length) if cached else (max_length,)

  def keeping_placeholders(step_fn, cache, rows: int):
    if not placeholder_ids:
      return step_fn, cache
    owed = jnp.repeat(placeholders.source_counts(inputs, placeholder_ids), rows // b, axis=0)
    return placeholders.step_fn(step_fn, placeholder_ids, EOS_ID), (cache, owed)

  if options.method == "beam":
    k = options.beam_size
    step_fn, cache = start_state(config, params, b * k, phase_lengths[0], source.repeat(k),
                                 cached)
    step_fn, cache = keeping_placeholders(step_fn, cache, b * k)
    normalized = options.ctc_weight > 0 or lexicon is not None
    if options.ctc_weight > 0:
      step_fn, cache = _joint_ctc(step_fn, cache, config, params, source, options, mask)
    elif lexicon is not None:
      step_fn = lexicon_lib.log_scores(step_fn, mask)
    if lexicon is not None:
      step_fn, cache = lexicon_lib.step_fn(step_fn, lexicon), (cache, jnp.zeros(b * k, jnp.int32))
    seqs_BKL, _ = beam_lib.beam_search(step_fn, cache, batch_size=b, beam_size=k,
                                       max_length=max_length, alpha=options.alpha,
                                       eos_id=EOS_ID, mask_logits=mask, normalized=normalized,
                                       phase_lengths=phase_lengths)
    return seqs_BKL[:, 0]
  step_fn, cache = start_state(config, params, b, phase_lengths[0], source, cached)
  step_fn, cache = keeping_placeholders(step_fn, cache, b)
  return sample_loop(step_fn, cache, batch_size=b, max_length=max_length, rng=rng,
                     mask_logits=mask, phase_lengths=phase_lengths, **sampling_args(options))


def _joint_ctc(step_fn, cache, config: TransformerConfig, params, source: Source,
               options: DecodeOptions, mask):
  """The beam step and cache of joint CTC/attention decoding (ctc_prefix.py), with the CTC
  head's prefix scores weighted by options.ctc_weight; pre-beam: the decoder's 2K best.
  `source` is one row per utterance: the head runs once, its logits repeat for the beams."""
  k = options.beam_size
  model = SpeechToText(decode_mode(config, cached=False))
  ctc_logits_BSV = model.apply({"params": params}, source.encoded_BSD, method=model.ctc_logits)
  pre_beam = min(2 * k, ctc_logits_BSV.shape[-1])
  joint = ctc_prefix.joint_step_fn(step_fn, jnp.repeat(ctc_logits_BSV, k, axis=0),
                                   jnp.repeat(source.valid_BS > 0, k, axis=0),
                                   weight=options.ctc_weight, pre_beam=pre_beam, eos_id=EOS_ID,
                                   mask_logits=mask)
  b, s = source.valid_BS.shape
  return joint, (cache, ctc_prefix.init_state(b * k, pre_beam, s))


def sampling_args(options: DecodeOptions) -> dict[str, Any]:
  if options.method == "greedy":
    return {"temperature": 0.0}
  return {"temperature": options.temperature, "top_k": options.top_k, "top_p": options.top_p}
