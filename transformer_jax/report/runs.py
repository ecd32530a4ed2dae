"""A run as the report sees it: its metrics.jsonl records (and config.json, where present).

Nothing here loads a checkpoint or a model, so a report can be drawn while the
run is still going, and for runs of every kind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

# The task's quality figures, in the order a report shows them (those a run logs).
QUALITY = ("bleu", "chrf", "placeholders", "wer", "cer", "perplexity", "accuracy", "f1")


class ReportError(ValueError):
  """A workdir the report cannot read; the message names it."""


@dataclasses.dataclass
class RunRecords:
  name: str  # the legend entry: the workdir's folder name (made unique).
  workdir: str
  records: list[dict]
  config: dict  # config.json as a nested dict ({} when absent).
  skipped_lines: int = 0

  def series(self, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of every record that holds `key` as a finite number, by step."""
    points = {}
    for r in self.records:
      v = r.get(key)
      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        points[r["step"]] = float(v)  # a step logged again (a resume): the last wins.
    steps = sorted(points)
    return steps, [points[s] for s in steps]

  def keys(self) -> set[str]:
    return {k for r in self.records for k in r if k != "step"}

  def last(self, key: str):
    steps, values = self.series(key)
    return values[-1] if values else None

  @property
  def unit(self) -> str:
    """What throughput counts: `tokens` or `examples` (train/<unit>_per_sec)."""
    for k in sorted(self.keys()):
      if k.startswith("train/") and k.endswith("_per_sec") and k != "train/steps_per_sec":
        return k[len("train/"):-len("_per_sec")]
    return "tokens"

  def units_seen(self) -> float | None:
    """Tokens (or examples) trained on: per logged interval, the units per step
    (throughput over steps per second) times the steps since the previous log."""
    per_sec = f"train/{self.unit}_per_sec"
    rates = {r["step"]: r for r in self.records if per_sec in r and "train/steps_per_sec" in r}
    if not rates:
      return None
    total, previous = 0.0, 0
    for step in sorted(rates):
      r = rates[step]
      if r["train/steps_per_sec"] > 0:
        total += r[per_sec] / r["train/steps_per_sec"] * (step - previous)
      previous = step
    return total

  def examples(self) -> list[dict]:
    """The example outputs the run logged last (`examples` records)."""
    for r in reversed(self.records):
      if isinstance(r.get("examples"), list):
        return r["examples"]
    return []


def read(workdir: str, name: str | None = None) -> RunRecords:
  """WORKDIR's metrics.jsonl (lines that do not parse are skipped and counted: a run
  may be writing its last line) and config.json."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isdir(workdir):
    raise ReportError(f"--workdir={workdir!r}: no such folder")
  if not os.path.isfile(path):
    raise ReportError(f"--workdir={workdir!r}: no metrics.jsonl (not a train.py workdir, or "
                      "its run has not logged yet)")
  records, skipped = [], 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        r = json.loads(line)
      except json.JSONDecodeError:
        skipped += 1
        continue
      if isinstance(r, dict) and isinstance(r.get("step"), int):
        records.append(r)
      else:
        skipped += 1
  if not records:
    raise ReportError(f"{path}: no records")
  config = {}
  try:
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError):
    pass
  name = name or os.path.basename(os.path.normpath(workdir)) or workdir
  return RunRecords(name, workdir, records, config if isinstance(config, dict) else {}, skipped)


def read_all(workdirs: list[str]) -> list[RunRecords]:
  """Every workdir, with legend names made unique (the parent folder added where two
  share a name)."""
  runs = [read(w) for w in workdirs]
  names = [r.name for r in runs]
  for r in runs:
    if names.count(r.name) > 1:
      r.name = os.path.relpath(os.path.normpath(r.workdir))
  return runs


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
  out = {}
  for k, v in config.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_differences(runs: list[RunRecords]) -> dict[str, list]:
  """Config fields whose values differ between the runs: field -> value per run."""
  flat = [flatten(r.config) for r in runs]
  fields = sorted(set().union(*flat)) if flat else []
  out = {}
  for f in fields:
    values = [c.get(f, "(absent)") for c in flat]
    if any(json.dumps(v, sort_keys=True) != json.dumps(values[0], sort_keys=True)
           for v in values):
      out[f] = values
  return out
