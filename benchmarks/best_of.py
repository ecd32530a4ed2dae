"""The best time of a jitted call, for the benchmarks that time one piece of a step alone."""

import time

import jax


def best_seconds(fn, args, rounds: int, calls: int = 20) -> float:
  """Seconds per call of fn(*args): the best of `rounds` rounds of `calls` calls, after
  one call that compiles and warms up."""
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(rounds):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - t0) / calls)
  return best
