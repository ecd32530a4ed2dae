"""Training for a wall-clock budget: as many steps as fit, fixed once per run.

With `config.train_budget_seconds > 0`, a fresh run times a few train steps right
after compiling and trains `floor(budget / step time)` steps (at most
`config.num_train_steps`, which stays the cap). The count is fixed before the
first real step, because the learning-rate schedule decays to 0 at it, and is
written to WORKDIR/train_budget.json: a resumed run reads it back instead of
timing again, so the schedule, and with it the run, stays exactly the same
whatever the machine does on the second day. Another budget in the config times
the steps again.

The budget counts training steps only: corpus, tokenizer, compiles,
evaluations and the final test decode come on top (the run's `Time:` line
shows each).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from transformer_jax.errors import ConfigError

RECORD = "train_budget.json"
WARMUP_STEPS = 2  # untimed: the first runs of a compiled program are slower.
TIMED_STEPS = 8


def recorded_steps(config, workdir: str) -> int | None:
  """The step count that WORKDIR/train_budget.json fixed for this budget, or None
  (no record, or one made for another budget)."""
  path = os.path.join(workdir, RECORD)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
    budget, steps = float(record["train_budget_seconds"]), int(record["fit_steps"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"{path} is unreadable ({type(e).__name__}: {e}); it fixes the step "
                      "count of a run trained for config.train_budget_seconds: delete it to "
                      "time the steps again (the schedule then changes)") from None
  if budget != float(config.train_budget_seconds) or steps < 1:
    return None
  return steps


def time_step(run) -> float:
  """Median seconds of one train step, on a throwaway state and a batch of a second
  stream (the run's own stream and parameters are not touched). Every process gets
  the primary's figure, so all agree on the step count."""
  state = run.init_state()
  batch = run.global_batch(next(run.train_stream(run.config.seed + 1)))
  seconds = []
  for i in range(WARMUP_STEPS + TIMED_STEPS):
    t0 = time.perf_counter()
    state, metrics = run.train_step(state, batch)
    jax.block_until_ready(metrics)
    if i >= WARMUP_STEPS:
      seconds.append(time.perf_counter() - t0)
  del state
  step = statistics.median(seconds)
  if jax.process_count() > 1:
    step = float(multihost_utils.broadcast_one_to_all(np.float64(step)))
  return step


def fit_steps(budget_seconds: float, step_seconds: float) -> int:
  """Steps of `step_seconds` that fit in `budget_seconds` (at least one)."""
  return max(int(budget_seconds / step_seconds), 1)


def write_record(config, workdir: str, step_seconds: float, steps: int) -> None:
  record = {"train_budget_seconds": float(config.train_budget_seconds),
            "step_seconds": step_seconds, "fit_steps": steps,
            "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
            "note": "the step count that config.train_budget_seconds fixed for this run; "
                    "a resumed run keeps it"}
  path = os.path.join(workdir, RECORD)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)
