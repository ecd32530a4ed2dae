"""Where a run's wall time goes: named phases, summed, printed and logged at the end.

The trainer wraps each part of a run in `phases.time(name)`; at the end the
sums are written to metrics.jsonl as `time/<name>` (seconds) with `time/total`
(since the process started, when train.py passes its start time) and
`time/train_fraction`, the share of the wall time spent in training steps (their
compile included).
"""

from __future__ import annotations

import collections
import contextlib
import time

# Phases in the order a run meets them, with what each holds.
PHASES = {
    "startup": "imports and config, before the trainer starts",
    "data": "the task: corpus, tokenizer, input pipelines, evaluation batches",
    "build": "model, optimizer and shardings; the programs are traced lazily",
    "init": "fresh or restored parameters (and pretrained weights)",
    "compile": "the train step's compile (checked against the device's memory)",
    "first_step": "the first train step",
    "train": "every later train step, logging included",
    "eval": "interim evaluations (and their compiles)",
    "checkpoint": "saving checkpoints, and waiting for the last to finish",
    "test": "the final test: its evaluation and decoding",
}


class Phases:
  """Accumulates wall time per phase name (see PHASES)."""

  def __init__(self, started: float | None = None):
    self.started = time.monotonic() if started is None else started
    self.seconds: dict[str, float] = collections.defaultdict(float)
    self.seconds["startup"] = time.monotonic() - self.started

  @contextlib.contextmanager
  def time(self, name: str):
    if name not in PHASES:
      raise ValueError(f"unknown phase {name!r}; known: {list(PHASES)}")
    t0 = time.monotonic()
    try:
      yield
    finally:
      self.seconds[name] += time.monotonic() - t0

  def record(self) -> dict[str, float]:
    """`time/<phase>` seconds, `time/other` (the rest), `time/total`, `time/train_fraction`."""
    total = time.monotonic() - self.started
    out = {f"time/{k}": self.seconds[k] for k in PHASES if k in self.seconds}
    out["time/other"] = max(total - sum(self.seconds.values()), 0.0)
    out["time/total"] = total
    # The train step's compile counts as training (as it did before it was timed apart).
    training = sum(self.seconds.get(k, 0.0) for k in ("compile", "first_step", "train"))
    out["time/train_fraction"] = training / total if total > 0 else 0.0
    return out

  def summary(self) -> str:
    """One line: each phase's seconds and share of the total."""
    rec = self.record()
    total = rec["time/total"]
    parts = [f"{k[5:]} {v:.1f} s ({v / total:.0%})" for k, v in rec.items()
             if k not in ("time/total", "time/train_fraction") and v >= 0.05]
    return f"Time: {total:.1f} s in all; " + ", ".join(parts)
