"""Tokens per second that the grain input pipeline delivers alone, next to what the step eats.

  python benchmarks/input_pipeline.py --config=configs/base.py [--workdir=runs/base] [--batches=200]

Builds the config's task exactly as train.py does (corpus, the run's tokenizer:
the one in --workdir, trained there on first use) and, after a warm-up of
num_packing_bins batches, pulls `--batches` global batches from the training stream: real (non-padding) source + target tokens per
second, counted as train.py's train/tokens_per_sec counts them. Then times
`--steps` train steps of the config's model on real batches from the same stream,
and prints how many times faster the pipeline is than the step.
"""

import os
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from transformer_jax import kinds
from transformer_jax.metrics import objectives
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Where the tokenizer is (or is trained); default: a temp dir.")
_BATCHES = flags.DEFINE_integer("batches", 200, "Global batches pulled from the pipeline.")
_STEPS = flags.DEFINE_integer("steps", 10, "Train steps timed (after 2 warm-up steps).")


def _tokens(batch: dict) -> int:
  """Real source + target tokens, as train/tokens_per_sec counts them."""
  return int(objectives.count_tokens("inputs", "targets")(batch))


def main(_):
  config = _CONFIG.value
  kinds.validate(config, jax.device_count())
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="input_pipeline_")
  os.makedirs(workdir, exist_ok=True)
  kind = kinds.get(config.model.kind)
  t0 = time.perf_counter()
  task = kind.task(config, workdir, True)
  print(f"task ready in {time.perf_counter() - t0:.1f} s (corpus, tokenizer)")
  progs = programs.build(config, sharding.make_mesh(config), task.vocab_size, task.num_classes)
  stream = task.train_stream(global_batch_size=progs.global_batch_size, rows=progs.rows,
                             seed=config.seed)
  it = iter(stream)
  # Warm-up: the first batch fills every row's packing bins, and the batches after it
  # come out of those bins nearly free; the pipeline is in its steady state after
  # num_packing_bins batches.
  for _ in range(config.data.num_packing_bins + 1):
    next(it)
  t0 = time.perf_counter()
  batches = [next(it) for _ in range(_BATCHES.value)]
  seconds = time.perf_counter() - t0
  tokens = sum(_tokens(b) for b in batches)
  pipeline_rate = tokens / seconds
  print(f"pipeline: {_BATCHES.value} batches of {progs.global_batch_size} rows in "
        f"{seconds:.2f} s: {pipeline_rate:,.0f} tokens/s, "
        f"{_BATCHES.value / seconds:,.1f} batches/s")

  state = progs.init_state(jax.random.key(0))
  device_batches = [progs.global_batch(b) for b in batches[:_STEPS.value + 2]]
  with progs.context():
    for b in device_batches[:2]:
      state, m = progs.train_step(state, b)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for b in device_batches[2:]:
      state, m = progs.train_step(state, b)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / len(device_batches[2:])
  step_rate = np.mean([_tokens(b) for b in batches[2:_STEPS.value + 2]]) / step_s
  print(f"train step ({config.model.dtype}): {step_s * 1e3:.0f} ms, {step_rate:,.0f} tokens/s")
  print(f"the pipeline delivers {pipeline_rate / step_rate:.1f}x what the step consumes")


if __name__ == "__main__":
  app.run(main)
