"""The server's compiled programs: one per (profile, batch rows, length) of a few buckets,
all compiled at start-up, so that no request waits for a compile.

A profile is one way of running the model (beam size 4, greedy, sampled, embed, classify);
a batch of requests is padded up to the smallest batch bucket that holds its rows and the
smallest length bucket that holds its longest row. Buckets are ladders (1, 4, 16, ... up to
the limit) rounded up to the mesh's batch axes, so that every batch shards.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax


def ladder(limit: int, *, first: int = 1, factor: int = 4, multiple: int = 1) -> tuple[int, ...]:
  """first, first*factor, ... below `limit`, then `limit`; each rounded up to `multiple`."""
  if limit < 1:
    raise ValueError(f"a bucket limit must be >= 1 (got {limit})")
  out, value = [], max(1, first)
  while value < limit:
    out.append(value)
    value *= factor
  out.append(limit)
  return tuple(sorted({-(-v // multiple) * multiple for v in out}))


@dataclasses.dataclass(frozen=True)
class Buckets:
  batch: tuple[int, ...]  # rows per program, ascending.
  length: tuple[int, ...]  # tokens (or frames) per row, ascending.

  @property
  def max_batch(self) -> int:
    return self.batch[-1]

  @property
  def max_length(self) -> int:
    return self.length[-1]

  def batch_for(self, rows: int) -> int:
    return next(b for b in self.batch if b >= rows)

  def length_for(self, length: int) -> int | None:
    """The smallest length bucket that holds `length`; None past the largest."""
    return next((n for n in self.length if n >= length), None)


class CompiledPrograms:
  """Programs compiled ahead of their first call (jit's lower + compile), by key.

  `make(profile, rows, length)` gives (the function to jit, its arguments: arrays or
  jax.ShapeDtypeStruct). A call with a key that was not compiled is an error, never a
  compile on a request's path."""

  def __init__(self, make: Callable[[Hashable, int, int], tuple[Callable, Sequence[Any]]]):
    self._make = make
    self._compiled: dict[tuple, Any] = {}
    self.compile_seconds = 0.0

  def compile_all(self, profiles: Sequence[Hashable], buckets: Buckets,
                  log: Callable[[str], None] = lambda _: None) -> None:
    t0 = time.perf_counter()
    for profile in profiles:
      for rows in buckets.batch:
        for length in buckets.length:
          fn, args = self._make(profile, rows, length)
          self._compiled[(profile, rows, length)] = jax.jit(fn).lower(*args).compile()
      log(f"compiled {profile!s}: {len(buckets.batch) * len(buckets.length)} programs")
    self.compile_seconds = time.perf_counter() - t0

  def __len__(self) -> int:
    return len(self._compiled)

  def __call__(self, profile: Hashable, rows: int, length: int, *args):
    program = self._compiled.get((profile, rows, length))
    if program is None:
      raise RuntimeError(f"no program was compiled for {profile!s} at {rows} rows x {length}")
    return program(*args)
