"""The run's step count and where the learning-rate schedule ends, with a budget fitted.

Without config.train_budget_seconds the count is config.num_train_steps (a raised one
moves the end on a resume). With a budget (budget.py) it is the count that the
workdir's record fixed, or one fitted while training: every budget.REFIT_EVERY steps
`maybe_refit` times the steps and moves the count, and the schedule's end in the
optimizer state with it; once most of the budget is spent the count is fixed and
recorded. The seconds counted are training seconds only (`train_seconds`: the loop's
time less its first step, evaluations and saves); a checkpoint keeps them in its
metadata (`metadata`), so that a resumed run goes on from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax

from transformer_jax.observe import timing
from transformer_jax.train import budget, optim

# The phases inside the loop that are not training time.
NOT_TRAINING = ("eval", "checkpoint", "first_step")


def recorded_budget(config, workdir: str, primary: bool) -> int | None:
  """With config.train_budget_seconds > 0: the step count that the workdir's record
  fixed for it, or None while it is still to be fitted (printed either way)."""
  if config.train_budget_seconds <= 0:
    return None
  fit = budget.recorded_steps(config, workdir)
  if primary:
    head = f"Training budget {config.train_budget_seconds:g} s: "
    if fit is None:
      print(head + "the step count is fitted while training (at most "
            f"config.num_train_steps={config.num_train_steps})", flush=True)
    else:
      cap = (f"; capped at config.num_train_steps={config.num_train_steps}"
             if config.num_train_steps < fit else "")
      print(head + f"{fit} steps fit (fixed by {budget.RECORD}){cap}", flush=True)
  return fit


class Schedule:
  """The step count (`total`), the budget's fit, and the training seconds spent."""

  def __init__(self, config, workdir: str, primary: bool, phases: timing.Phases,
               now: Callable[[], float] = time.monotonic):
    """Reads (and prints) the workdir's budget record, if any."""
    self.config, self.workdir, self.primary, self.phases = config, workdir, primary, phases
    self._now = now
    self.recorded = recorded_budget(config, workdir, primary)
    self.total = (config.num_train_steps if self.recorded is None
                  else min(self.recorded, config.num_train_steps))
    self.fitter: budget.Fitter | None = None
    self.spent_before = 0.0  # the budget's seconds spent before this process's run.
    self.start = 0
    self._loop_start = now()
    self._before = {k: phases.seconds[k] for k in NOT_TRAINING}

  def is_complete(self, start: int, fresh: bool = False) -> bool:
    """Whether a run at step `start` is done (then says what to raise to train longer). A
    `fresh` run (no checkpoint yet) of 0 steps is not: it evaluates, saves and tests its
    starting weights (a pretrained model's zero-shot figures)."""
    if start < self.total or (fresh and start == self.total == 0):
      return False
    # What stopped it: the budget's recorded count, or the step count (the cap).
    longer = ("config.train_budget_seconds" if self.recorded is not None
              and self.recorded <= self.config.num_train_steps else "config.num_train_steps")
    print(f"The run in {self.workdir} is complete at step {start}; raise {longer} to train "
          "longer.", flush=True)
    return True

  def settle(self, state, start: int, metadata: dict):
    """`state` with the schedule ending at the run's step count, from step `start` of a
    checkpoint with `metadata` (a fresh run's is empty): with a budget still to fit, the
    count fitted from where the checkpoint left it (seconds spent, step time)."""
    config = self.config
    self.start = start
    self.spent_before = float(metadata.get(budget.SPENT_KEY, 0.0))
    if config.train_budget_seconds > 0:
      self.fitter = budget.Fitter(config.train_budget_seconds, config.num_train_steps,
                                  metadata.get(budget.STEP_KEY))
      if self.recorded is None:
        self.total = self.fitter.count(start, self.spent_before)
      else:
        self.fitter.fixed = True
    if optim.horizon_of(state.opt_state) != self.total:
      state = state.replace(opt_state=optim.with_horizon(state.opt_state, self.total))
    return state

  def start_clock(self) -> None:
    """The loop starts: training seconds count from now."""
    self._loop_start = self._now()
    self._before = {k: self.phases.seconds[k] for k in NOT_TRAINING}

  def train_seconds(self) -> float:
    """The loop's time so far not spent in its first step, evaluating or saving."""
    elsewhere = sum(self.phases.seconds[k] - self._before[k] for k in self._before)
    return max(self._now() - self._loop_start - elsewhere, 0.0)

  def stop_clock(self) -> None:
    """The loop ends: its training seconds go to the "train" phase."""
    self.phases.seconds["train"] += self.train_seconds()

  def maybe_refit(self, state, done: int, metrics):
    """After `done` steps, on a refit step of a budget not fixed yet: moves `total`, and
    the schedule's end in `state` with it, to the steps that fit (the primary process's
    figure, on every process); fixes the count once it is due. Waits for the step's
    `metrics` first: dispatch runs ahead of the device (on a CPU too), and the time
    must count the steps done, not the steps dispatched."""
    fitter = self.fitter
    if fitter is None or fitter.fixed or not budget.is_refit_step(done, self.start):
      return state
    jax.block_until_ready(metrics)
    spent = self.spent_before + self.train_seconds()
    count, due = budget.agree(*fitter.fit(done, spent))
    if count is not None and count != self.total:
      self.total = count
      state = state.replace(opt_state=optim.with_horizon(state.opt_state, count))
    if due:  # the count is fixed now.
      self._fix(spent)
    return state

  def finish(self) -> None:
    """After the last step: a count reached before the record was due (a machine that
    sped up) is fixed now, so the same command finds the run complete. (At the cap it
    stays open to a raise.)"""
    fitter = self.fitter
    if fitter is not None and not fitter.fixed and self.total < self.config.num_train_steps:
      self._fix(self.spent_before + self.train_seconds())

  def _fix(self, spent: float) -> None:
    """Records the count: from here on a resume is exact."""
    config, fitter = self.config, self.fitter
    if self.primary:
      budget.write_record(config, self.workdir, self.total, fitter.step_seconds, spent)
      timed = (f"{fitter.step_seconds * 1e3:.1f} ms per step lately"
               if fitter.step_seconds else "no step timed")
      print(f"Training budget {config.train_budget_seconds:g} s: {self.total} steps fit "
            f"({timed}; fixed in {budget.RECORD})", flush=True)
    fitter.fixed = True

  def metadata(self, run_metadata: dict) -> dict:
    """A checkpoint's metadata: the run's, and with a budget its seconds spent and the
    last step time (which outlives the fit: another budget on a resume starts from it)."""
    if self.config.train_budget_seconds <= 0:
      return run_metadata
    return {**run_metadata, budget.SPENT_KEY: self.spent_before + self.train_seconds(),
            budget.STEP_KEY: self.fitter.step_seconds if self.fitter is not None else None}
