"""The train log: train/* metrics, throughput and the progress line, read one step late.

The loop hands over every step's metrics right after dispatching the step. A log
step's metrics are read (`jax.device_get`, which waits for the step) only after
the next step was dispatched, so the device never waits for the host in between;
before an evaluation or a save they are read at once (`settle`), and the steps
not logged yet are checked finite (guard.py), so that no unchecked step is saved.

Throughput: the clock holds when steps up to `clock_step` were known to be done. A
step's metrics are read after the next step was dispatched; on a backend that runs
steps synchronously (the CPU) that next step is then done too. Evaluating and saving
are not training time: the loop resets the clock after them (`reset_clock`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax

from transformer_jax.metrics import summaries
from transformer_jax.observe import writers as metric_writers
from transformer_jax.train.guard import Guard
from transformer_jax.train.run import sum_metrics


def _is_ready(tree) -> bool:
  return all(x.is_ready() for x in jax.tree.leaves(tree))


class TrainLog:
  """Writes train/* records and the progress line for log steps (read one step late)."""

  def __init__(self, *, writer: metric_writers.MetricWriter,
               progress: metric_writers.Progress, guard: Guard, start: int,
               learning_rate: Callable[[int, int], float], unit: str,
               extra: tuple[str, ...] = (), train_flops: float | None = None,
               peak_flops: float | None = None, final: dict | None = None,
               now: Callable[[], float] = time.monotonic):
    """`learning_rate(step, horizon)`: the schedule (optim.py); `extra`: summary keys
    logged as train/<key> where present (the kind's record's train_metrics);
    `train_flops` and `peak_flops`: a step's FLOPs and the devices' peak rate, for
    train/mfu; `final`: the dict that collects every record written."""
    self.writer, self.progress, self.guard = writer, progress, guard
    self.learning_rate, self.unit, self.extra = learning_rate, unit, tuple(extra)
    self.train_flops, self.peak_flops = train_flops, peak_flops
    self.final = {} if final is None else final
    self._now = now
    self.pending: list = []  # metrics of the steps dispatched since the last log step.
    self._due = None  # (step, metrics list) of a log step, read one step late.
    self.clock, self.clock_step = now(), start

  @classmethod
  def for_run(cls, run, writer, guard: Guard, start: int, total: int, final: dict):
    """The log of `run` (train.run.Run): its schedule, kind and FLOPs."""
    return cls(writer=writer, progress=metric_writers.Progress(total, start, enabled=run.primary),
               guard=guard, start=start, learning_rate=run.programs.schedule,
               unit=run.kind.unit, extra=run.kind.train_metrics,
               train_flops=run.programs.train_flops, peak_flops=run.peak_flops, final=final)

  @property
  def total(self) -> int:
    """The run's step count (the progress line's, and the learning rate's horizon)."""
    return self.progress.total

  @total.setter
  def total(self, value: int) -> None:
    self.progress.total = value

  def after_dispatch(self, metrics) -> None:
    """Takes a dispatched step's metrics; writes the log step before it, if one is due."""
    if self._due is not None:  # step n's metrics, read after step n+1 was dispatched.
      self._write(self._due, next_metrics=metrics)
      self._due = None
    self.pending.append(metrics)

  def mark(self, done: int) -> None:
    """Step `done` is a log step: its record is written after the next dispatch."""
    self._due, self.pending = (done, self.pending), []

  def flush(self) -> None:
    """Writes the log step due, now."""
    if self._due is not None:
      self._write(self._due)
      self._due = None

  def settle(self, done: int) -> None:
    """Before an evaluation or a save after step `done`: the log step due is written,
    and the steps not logged yet are checked finite (none may be saved unchecked)."""
    self.flush()
    if self.pending:
      self.guard.check(sum_metrics(jax.device_get(self.pending)),
                       done - len(self.pending) + 1, done, count=False)

  def reset_clock(self, done: int) -> None:
    """Steps up to `done` are done now (after an evaluation or a save: not training time)."""
    self.clock, self.clock_step = self._now(), done

  def _write(self, entry, next_metrics=None) -> None:
    log_step, metrics_list = entry
    # Fetched first (waits for step `log_step`), then summed on the host: one
    # transfer per step instead of a chain of small device additions.
    sums = sum_metrics(jax.device_get(metrics_list))
    now = self._now()
    done_through = log_step + int(next_metrics is not None and _is_ready(next_metrics))
    steps_timed, seconds = done_through - self.clock_step, now - self.clock
    self.clock, self.clock_step = now, done_through
    summary = summaries.summarize(sums, num_steps=len(metrics_list))
    self.guard.check(sums, log_step - len(metrics_list) + 1, log_step)
    record, rate = self._record(summary, float(sums["units_sum"]) / len(metrics_list),
                                log_step, steps_timed, seconds)
    self.writer.write(log_step, record)
    self.progress.update(log_step, summary["loss"], rate, self.unit)
    self.final.update(record)

  def _record(self, summary: dict, units_per_step: float, log_step: int, steps_timed: int,
              seconds: float) -> tuple[dict[str, float], float | None]:
    """(the train/* record of a log step, its units per second or None)."""
    record = {"train/loss": summary["loss"], "train/nll": summary["nll"],
              "train/accuracy": summary["accuracy"], "train/grad_norm": summary["grad_norm"],
              "train/learning_rate": float(self.learning_rate(log_step - 1, self.total))}
    record.update({f"train/{k}": summary[k] for k in self.extra if k in summary})
    if self.guard.config.max_skipped_nonfinite_steps:
      record["train/skipped_nonfinite_steps"] = self.guard.skipped
    rate = None
    if steps_timed > 0 and seconds > 0:  # else no step finished in between: no figure.
      steps_per_sec = steps_timed / seconds
      record["train/steps_per_sec"] = steps_per_sec
      rate = units_per_step * steps_per_sec
      record[f"train/{self.unit}_per_sec"] = rate
      if self.peak_flops:
        record["train/mfu"] = self.train_flops * steps_per_sec / self.peak_flops
    return record, rate
