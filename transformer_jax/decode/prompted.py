"""Encoder-decoder decoding after a forced decoder prompt, with suppressed tokens: how a
pretrained Whisper transcribes.

Whisper's decoder is fed its own start token (<|startoftranscript|>) at position 0, then
the tokens that say what to do (a language and <|transcribe|> for multilingual models,
<|notimestamps|>); what it writes after them is the transcript, up to <|endoftext|>.
Some tokens are never written (`suppress_ids`: the model's config lists them), some
never first (`begin_suppress_ids`: a space, the end).

The prompt is run through the key/value cache first (one decoder step per prompt token,
inside the same jitted function); the search loops of search.py and beam.py then run
unchanged on a step function shifted past it: their position 0 is the prompt's last
position, fed the prompt's last token. So greedy, sampling and beam search all start
from the prompt. Unlike search.py's own loops, id 0 may be written (Whisper's "!": its
vocabulary has no padding id); after a row's end id come zeros, which the caller drops by
cutting at the end id.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from transformer_jax.data.tokenizer import EOS_ID, PAD_ID
from transformer_jax.decode import beam as beam_lib
from transformer_jax.decode import search
from transformer_jax.models.speech import SpeechToText
from transformer_jax.models.transformer import TransformerConfig

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Prompt:
  """What the decoder is fed before it writes, and what it may write."""
  start_id: int  # fed at position 0 (Whisper's <|startoftranscript|>).
  prompt_ids: tuple[int, ...]  # forced next: language, task, <|notimestamps|>.
  eos_id: int  # where a row stops (<|endoftext|>).
  suppress_ids: tuple[int, ...] = ()  # never written.
  begin_suppress_ids: tuple[int, ...] = ()  # never written first.


def decode_kwargs(config) -> dict:
  """{"prompt": ...} for a run whose decoder starts from its own token (a fine-tuned
  Whisper: model.decoder_start_id, then data.target_prefix; kinds/speech/record.py's
  decoder then runs `transcribe`); {} for the others. Such a run's ids are in the shifted
  layout (data/hf_tokenizer.py): it ends at our EOS and never writes the padding id."""
  if not config.model.decoder_start_id:
    return {}
  return {"prompt": Prompt(start_id=config.model.decoder_start_id,
                           prompt_ids=tuple(config.data.target_prefix), eos_id=EOS_ID,
                           suppress_ids=(PAD_ID,))}


def _masks(prompt: Prompt, vocab_size: int, vocab_limit: int | None):
  ids = jnp.arange(vocab_size)
  never = ids >= (vocab_limit if vocab_limit is not None else vocab_size)
  never = never | jnp.isin(ids, jnp.asarray(prompt.suppress_ids or (-1,)))
  first = never | jnp.isin(ids, jnp.asarray(prompt.begin_suppress_ids or (-1,)))
  return never, first


def shifted_step_fn(step_fn, prompt: Prompt, batch_rows: int, vocab_size: int,
                    vocab_limit: int | None):
  """A step function that runs `step_fn` P = len(prompt) positions later, with the
  suppressed ids' logits at -inf (and the first-position ones at the loop's position 0)."""
  never, first = _masks(prompt, vocab_size, vocab_limit)
  p = 1 + len(prompt.prompt_ids)
  last = (prompt.prompt_ids or (prompt.start_id,))[-1]

  def step(tokens_B, i, cache):
    tokens_B = jnp.where(i == 0, jnp.full((batch_rows,), last, jnp.int32), tokens_B)
    logits_BV, cache = step_fn(tokens_B, i + p - 1, cache)
    bad_V = jnp.where(i == 0, first, never)
    return jnp.where(bad_V[None, :], beam_lib.NEG_INF * 100, logits_BV), cache
  return step


def prefill(step_fn, cache, prompt: Prompt, batch_rows: int):
  """The cache after the start token and every prompt token but the last (whose step is
  the loop's first)."""
  fed = (prompt.start_id,) + tuple(prompt.prompt_ids)
  for i, token in enumerate(fed[:-1]):
    _, cache = step_fn(jnp.full((batch_rows,), token, jnp.int32), i, cache)
  return cache


def transcribe(params, features_BTF: Array, rng: Array | None, *, config: TransformerConfig,
               options: search.DecodeOptions, prompt: Prompt, max_length: int,
               vocab_limit: int | None = None) -> Array:
  """The ids written after the prompt [B, max_length] (the end id kept, zeros after it) for
  speech features with their frame mask [B, T, F + 1]; greedy, sampled or beam search
  (options.method) over the key/value cache; jit-able."""
  config, params = search.unscanned(config, params)
  b = features_BTF.shape[0]
  source = search.encode(config, params, features_BTF, SpeechToText)
  p = 1 + len(prompt.prompt_ids)
  total = p - 1 + max_length
  if options.method == "beam":
    k = options.beam_size
    step_fn, cache = search.start_state(config, params, b * k, total, source.repeat(k), True)
    cache = prefill(step_fn, cache, prompt, b * k)
    step = shifted_step_fn(step_fn, prompt, b * k, config.vocab_size, vocab_limit)
    seqs_BKL, _ = beam_lib.beam_search(step, cache, batch_size=b, beam_size=k,
                                       max_length=max_length, alpha=options.alpha,
                                       eos_id=prompt.eos_id)
    return seqs_BKL[:, 0]
  step_fn, cache = search.start_state(config, params, b, total, source, True)
  cache = prefill(step_fn, cache, prompt, b)
  step = shifted_step_fn(step_fn, prompt, b, config.vocab_size, vocab_limit)
  sampling = ({"temperature": 0.0} if options.method == "greedy" else
              {"temperature": options.temperature, "top_k": options.top_k,
               "top_p": options.top_p})
  return search.sample_loop(step, cache, batch_size=b, max_length=max_length, rng=rng,
                            eos_id=prompt.eos_id, **sampling)
