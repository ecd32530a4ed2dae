"""What every process of a multi-host run must decide alike, agreed in one collective.

With one process each function returns its arguments. With several, each is a
collective: every process must call it at the same point of the loop, in the same
order (the loop's budget refit, then its stop and save-clock check, every step).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def any_process(*flags: bool) -> tuple[bool, ...]:
  """Each flag, true if any process raised it (a stop request, a save clock that ran out)."""
  if jax.process_count() == 1:
    return tuple(flags)
  gathered = multihost_utils.process_allgather(np.array(flags, np.int32))
  return tuple(bool(x) for x in np.asarray(gathered).reshape(-1, len(flags)).max(axis=0))


def primary_values(*values: int) -> tuple[int, ...]:
  """The primary process's integers, on every process (a count it fitted, a verdict)."""
  if jax.process_count() == 1:
    return tuple(values)
  got = multihost_utils.broadcast_one_to_all(np.array(values, np.int64))
  return tuple(int(x) for x in got)
