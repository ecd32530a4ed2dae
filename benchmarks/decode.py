"""Decode throughput with and without the key/value cache.

  python benchmarks/decode.py --config=configs/base.py [--length=128] [--batch_size=32]

Builds the config's encoder-decoder (random weights, the tokenizer's 8k
vocabulary padded as in training) and decodes a batch of random sources for
exactly `--length` target tokens (EOS is ignored, so every variant does the same
work): greedy with the cache, greedy recomputing the decoder over the whole
prefix at each step, and beam search (4 beams) with the cache. Prints generated
tokens per second (batch x length / wall time, compile excluded, median of
`--repeats`) and the cache's speed-up.
"""

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from transformer_jax.decode import beam as beam_search, search as decoding
from transformer_jax.models import config as models_config
from transformer_jax.models.transformer import EncoderDecoder

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_LENGTH = flags.DEFINE_integer("length", 128, "Target tokens decoded per sequence.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sequences decoded together.")
_SOURCE = flags.DEFINE_integer("source_length", 64, "Source tokens per sequence.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per variant (the median is shown).")
_BEAM = flags.DEFINE_integer("beam_size", 4, "Beams of the beam-search variant (0: skip).")


def _decode_fn(model_config, *, cached: bool, beam: int, length: int):
  def run(params, inputs_BS):
    b = inputs_BS.shape[0]
    k = max(beam, 1)
    source = decoding.encode(model_config, params, inputs_BS).repeat(k)
    step_fn, cache = decoding.start_state(
        model_config, params, b * k, length, source, cached)
    if beam:  # eos_id=-1: never stop early.
      return beam_search.beam_search(step_fn, cache, batch_size=b, beam_size=k,
                                     max_length=length, alpha=0.6, eos_id=-1)[0][:, 0]
    return decoding.sample_loop(step_fn, cache, batch_size=b, max_length=length, eos_id=-1)
  return jax.jit(run)


def _time(fn, *args) -> float:
  jax.block_until_ready(fn(*args))  # compile
  runs = []
  for _ in range(_REPEATS.value):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    runs.append(time.perf_counter() - t0)
  return float(np.median(runs))


def main(_):
  config = _CONFIG.value
  model_config = models_config.model_config(config, config.data.vocab_size).replace(
      deterministic=True)
  b, length = _BATCH.value, _LENGTH.value
  rng = np.random.default_rng(0)
  inputs = rng.integers(3, config.data.vocab_size, (b, _SOURCE.value)).astype(np.int32)
  params = nn.meta.unbox(EncoderDecoder(model_config).init(
      jax.random.key(0), jnp.ones((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32))["params"])
  tokens = b * length
  make = functools.partial(_decode_fn, model_config, length=length)
  cached = _time(make(cached=True, beam=0), params, inputs)
  uncached = _time(make(cached=False, beam=0), params, inputs)
  print(f"{jax.device_count()} {jax.devices()[0].platform} device(s); batch {b}, source "
        f"{_SOURCE.value} tokens, {length} target tokens per sequence")
  print(f"greedy with KV cache:    {tokens / cached:9.0f} tokens/s ({cached:.2f} s)")
  print(f"greedy, no cache:        {tokens / uncached:9.0f} tokens/s ({uncached:.2f} s)")
  print(f"cache speed-up:          {uncached / cached:9.1f}x")
  if _BEAM.value:
    beam = _time(make(cached=True, beam=_BEAM.value), params, inputs)
    print(f"beam {_BEAM.value} with KV cache:    {tokens / beam:9.0f} tokens/s ({beam:.2f} s; "
          "output tokens, not hypotheses)")


if __name__ == "__main__":
  app.run(main)
