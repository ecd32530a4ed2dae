"""What is due after a train step: log, evaluate, save, stop. Pure functions of the step.

The loop asks `due(...)` after every step, once the processes have agreed on the
stop request and the save clock (parallel/agreement.py): every process then gets the
same answer, so all of them evaluate and save the same steps.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Due:
  """What the loop does after a step."""
  log: bool  # write the train metrics of the steps since the last log.
  eval: bool  # evaluate on the validation batches.
  save: bool  # save a checkpoint.
  stop: bool  # stop after saving (a stop request).


def due(config, done: int, total: int, *, time_due: bool, stopping: bool) -> Due:
  """After `done` of `total` steps: evaluate every config.eval_every_steps and at the
  last step; save every config.checkpoint_every_steps, at the last step, when the save
  clock is due (`time_due`) and when stopping; log every config.log_every_steps, at
  the last step and when stopping."""
  last = done == total
  return Due(log=done % config.log_every_steps == 0 or last or stopping,
             eval=done % config.eval_every_steps == 0 or last,
             save=done % config.checkpoint_every_steps == 0 or last or time_due or stopping,
             stop=stopping)


def save_clock_due(config, last_save: float, now: float) -> bool:
  """Whether config.checkpoint_every_seconds (> 0) have passed since `last_save`."""
  return (config.checkpoint_every_seconds > 0 and
          now - last_save >= config.checkpoint_every_seconds)
