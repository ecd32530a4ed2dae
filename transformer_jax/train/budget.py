"""Training for a wall-clock budget: as many steps as fit, fitted while training.

With `config.train_budget_seconds > 0` the run's step count is not fixed up front.
Every REFIT_EVERY steps the loop tells a `Fitter` how many steps are done and how
many seconds training has taken (evaluation, saving and the first step's compile
left out); the fitter times the recent steps (the last WINDOW of them) and sets the
count to the steps done plus the steps that fit in the rest of the budget, at most
`config.num_train_steps`. The count is where the learning-rate schedule ends
(cosine and linear decay reach 0 there): a number in the optimizer state that the
host sets (`optim.with_horizon`), so nothing is compiled again. A machine that
slows down or speeds up in the middle of the run moves the end with it.

Once FREEZE of the budget is spent, the count is fixed and written to
WORKDIR/train_budget.json: a resumed run reads it back, so from there on the
schedule, and with it the run, stays exactly the same whatever the machine does.
A run stopped before that resumes fitting, the seconds it had spent (kept in each
checkpoint's metadata) counted. Another budget fits anew.

The budget counts training steps only: corpus, tokenizer, compiles, evaluations
and the final test decode come on top (the run's `Time:` line shows each).
"""

from __future__ import annotations

import collections
import json
import os

import jax

from transformer_jax.errors import ConfigError
from transformer_jax.parallel import agreement

RECORD = "train_budget.json"
REFIT_EVERY = 10  # steps between two fits.
WINDOW = 120  # the steps whose time gives the step time (about half a minute at 0.3 s).
FREEZE = 0.9  # the share of the budget after which the count is fixed and recorded.
SPENT_KEY = "train_budget_spent_seconds"  # in a checkpoint's metadata, with:
STEP_KEY = "train_budget_step_seconds"  # the step time of the last fit.


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
                      "fit the count again (the schedule then changes)") from None
  if budget != float(config.train_budget_seconds) or steps < 1:
    return None
  return steps


def is_refit_step(done: int, start: int) -> bool:
  """Whether the loop fits after `done` steps (the same steps on every process)."""
  return done > start and (done - start - 1) % REFIT_EVERY == 0


class Fitter:
  """The steps that fit in a budget, from the time the recent steps took."""

  def __init__(self, budget_seconds: float, cap: int, step_seconds: float | None = None):
    """`step_seconds`: a resumed run's last figure, used until its own steps are timed."""
    self.budget, self.cap = float(budget_seconds), int(cap)
    self._points: collections.deque = collections.deque(maxlen=WINDOW // REFIT_EVERY + 1)
    self.step_seconds = step_seconds
    self.fixed = False  # set once the count is recorded: no more fits.

  def fit(self, done: int, spent: float) -> tuple[int | None, bool]:
    """(the step count, or None while no step has been timed; whether it is final)
    after `done` steps and `spent` seconds of training."""
    self._points.append((done, spent))
    final = spent >= FREEZE * self.budget
    (d0, s0), (d1, s1) = self._points[0], self._points[-1]
    if d1 > d0 and s1 > s0:
      self.step_seconds = (s1 - s0) / (d1 - d0)
    if self.step_seconds is None:
      return (min(done + 1, self.cap) if final else None), final
    return self.count(done, spent), final

  def count(self, done: int, spent: float) -> int:
    """`done` and the steps of `step_seconds` that fit in the rest of the budget (at
    least one more, at most the cap; the cap while no step has been timed)."""
    if self.step_seconds is None:
      return self.cap
    fit = done + int(max(self.budget - spent, 0.0) / self.step_seconds)
    return min(max(fit, done + 1), self.cap)


def agree(steps: int | None, final: bool) -> tuple[int | None, bool]:
  """The primary process's count and verdict, on every process (a collective)."""
  got, due = agreement.primary_values(-1 if steps is None else steps, int(final))
  return (None if got < 0 else got), bool(due)


def write_record(config, workdir: str, steps: int, step_seconds: float | None,
                 spent: float) -> None:
  record = {"train_budget_seconds": float(config.train_budget_seconds), "fit_steps": steps,
            "step_seconds": step_seconds, "spent_seconds": round(spent, 3),
            "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
            "note": "the step count fitted to config.train_budget_seconds while training, "
                    "fixed once 90% of it was spent; a resumed run keeps it"}
  path = os.path.join(workdir, RECORD)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)
