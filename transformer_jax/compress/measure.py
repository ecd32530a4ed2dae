"""What a run costs and how good it is: parameter bytes, decode speed, the task's test figures.

`measure(workdir)` loads the run as train.py would (its config.json, data and
tokenizer), restores its latest checkpoint (compressed or not) and runs the task's
own test evaluation: test BLEU/chrF for translation, perplexity for a language
model, accuracy/F1 for classifiers. Decoding (or evaluating) is timed, and the
tokens the decoder wrote counted.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from transformer_jax import config as config_lib
from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax.compress import quant
from transformer_jax.train import run as run_lib


def folder_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total


def _warm_up(run: run_lib.Run, params) -> None:
  """Compiles the eval program, and the decoder at the batch shape that tasks decode."""
  p = run.programs
  jax.block_until_ready(p.eval_step(params, p.global_batch(p.empty_batch())))
  if p.decode is not None:
    ids = np.ones((p.global_batch_size, run.config.max_target_length), np.int32)
    run.decode(params, ids, jax.random.key(0))


def measure(workdir: str, step: int = -1) -> dict:
  """{"step", "float32_bytes", "params_bytes_in_memory", "checkpoint_folder_bytes",
  "seconds", "tokens_per_sec" (decoding kinds), "test/...": the task's figures}."""
  config = config_lib.from_json(os.path.join(workdir, "config.json"))
  config.distributed.coordinator_address = ""
  run = run_lib.Run(config, workdir)
  with run.programs.context():
    params, step = checkpoint_params.restore_params(workdir, step, run.programs.abstract_state.params)
    run.programs = run.programs.for_params(params)
    counted = {"tokens": 0, "seconds": 0.0}
    decode, eval_sums = run.decode, run.eval_sums
    _warm_up(run, params)  # compiles outside the timing.

    def timed_decode(p, ids, rng):
      t0 = time.perf_counter()
      out = decode(p, ids, rng)
      counted["seconds"] += time.perf_counter() - t0
      counted["tokens"] += int(np.count_nonzero(np.asarray(out) > 0))
      return out

    def timed_eval(p, batches):
      t0 = time.perf_counter()
      out = eval_sums(p, batches)
      counted["seconds"] += time.perf_counter() - t0
      return out

    run.decode, run.eval_sums = timed_decode, timed_eval
    figures = run.task.final_test(run, params, step)
  out = {"step": step,
         "float32_bytes": sum(4 * x.size for x in jax.tree.leaves(run.programs.abstract_state.params)),
         "params_bytes_in_memory": quant.tree_nbytes(params),
         "checkpoint_folder_bytes": folder_bytes(os.path.join(workdir, "checkpoints", str(step))),
         "seconds": counted["seconds"]}
  if counted["tokens"]:
    out["tokens_per_sec"] = counted["tokens"] / max(counted["seconds"], 1e-9)
  out.update({k: float(v) for k, v in figures.items() if k.startswith("test/")})
  return out
