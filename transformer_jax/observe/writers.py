"""Where metrics go: WORKDIR/metrics.jsonl, TensorBoard events, and a progress line.

Only the primary process writes; the others get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from tensorboardX import SummaryWriter


class MetricWriter:
  """Appends `{"step": int, "<split>/<name>": number, ...}` lines and TB scalars."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = SummaryWriter(logdir=workdir) if enabled else None

  def truncate_after(self, step: int) -> None:
    """Drops records after `step` (a resumed run logs those steps again)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path, encoding="utf-8") as f:
      lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
      tmp = self.path + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
      os.replace(tmp, self.path)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step)}
    record.update({k: float(v) for k, v in sorted(metrics.items())})
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in record.items():
      if k != "step" and math.isfinite(v):
        self._tb.add_scalar(k, v, int(step))
    self._tb.flush()

  def write_examples(self, step: int, examples: list[dict]) -> None:
    """`{"step": N, "examples": [{field: text, ...}, ...]}`: a run's example outputs (the
    report shows them), and a TensorBoard text summary."""
    if not self.enabled or not examples:
      return
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": int(step), "examples": examples}, ensure_ascii=False) + "\n")
    fields = list(examples[0])
    table = ["| " + " | ".join(fields) + " |", "|" + " --- |" * len(fields)]
    table += ["| " + " | ".join(str(e.get(k, "")).replace("|", "\\|") for k in fields) + " |"
              for e in examples]
    self._tb.add_text("examples", "\n".join(table), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """One line per log step: a bar, step, loss, tokens (or examples) per second, the ETA."""

  def __init__(self, total_steps: int, start_step: int, enabled: bool = True, width: int = 24):
    self.total, self.start, self.enabled, self.width = total_steps, start_step, enabled, width
    self._t0 = time.monotonic()

  def update(self, step: int, loss: float, rate: float | None, unit: str = "tokens") -> None:
    if not self.enabled:
      return
    done = step / max(self.total, 1)
    filled = int(round(self.width * done))
    elapsed = time.monotonic() - self._t0
    steps_rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / steps_rate if steps_rate > 0 else float("nan")
    bar = "#" * filled + "." * (self.width - filled)
    eta_text = _duration(eta) if math.isfinite(eta) else "?"
    rate_text = f"{rate:,.0f}" if rate is not None else "?"
    print(f"[{bar}] step {step}/{self.total} | loss {loss:.4f} | "
          f"{rate_text} {unit}/s | ETA {eta_text}", file=sys.stdout, flush=True)
