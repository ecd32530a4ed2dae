"""report.md: the runs side by side, in words and tables, with the PNGs linked."""

from __future__ import annotations

import datetime
import json

from transformer_jax.observe import timing
from transformer_jax.report.runs import QUALITY, RunRecords, config_differences

# The final figures a report lists, where a run logged them.
_FINAL = ([f"test/{q}" for q in QUALITY] + [f"eval/{q}" for q in QUALITY] +
          ["eval/loss", "train/nll", "train/loss", "train/mfu", "time/train_fraction"])


def _num(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
  return str(v)


def _duration(seconds: float | None) -> str:
  if seconds is None:
    return "-"
  return str(datetime.timedelta(seconds=int(round(seconds))))


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
  out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
  return out


def _cell(value, limit: int = 60) -> str:
  text = value if isinstance(value, str) else json.dumps(value)
  return text if len(text) <= limit else text[:limit - 3] + "..."


def report_markdown(runs: list[RunRecords], pictures: list[str], command: str = "") -> str:
  names = [r.name for r in runs]
  out = ["# Training report", ""]
  if command:
    out += [f"Made by `{command}` from each run's metrics.jsonl.", ""]
  overview = []
  for r in runs:
    steps = max(rec["step"] for rec in r.records)
    seen = r.units_seen()
    overview.append([r.name, r.config.get("model", {}).get("kind", "-"), str(steps),
                     str(r.config.get("num_train_steps", "-")),
                     f"{seen:,.0f} {r.unit}" if seen is not None else "-",
                     _duration(r.last("time/total")),
                     "done" if r.last("time/total") is not None else "running or stopped"])
  out += ["## Runs", ""]
  out += _table(["run", "kind", "last step", "of", "trained on", "wall time", "state"],
                overview)
  out += [""]
  for r in runs:
    if r.skipped_lines:
      out.append(f"{r.name}: {r.skipped_lines} line(s) of metrics.jsonl could not be read.")
  diff = config_differences(runs) if len(runs) > 1 else {}
  if len(runs) > 1:
    out += ["## Config differences", ""]
    if diff:
      out += _table(["field", *names], [[f, *(_cell(v) for v in vals)]
                                        for f, vals in diff.items()])
    else:
      out.append("The runs' config.json files are the same.")
    out.append("")
  keys = [k for k in _FINAL if any(r.last(k) is not None for r in runs)]
  if keys:
    out += ["## Final figures", "", "The last value each run logged.", ""]
    out += _table(["figure", *names], [[k, *(_num(r.last(k)) for r in runs)] for k in keys])
    out.append("")
  logged = {k for r in runs for k in r.keys()}
  time_keys = [f"time/{p}" for p in (*timing.PHASES, "other") if f"time/{p}" in logged]
  if time_keys:
    out += ["## Where the time went (seconds)", ""]
    out += _table(["phase", *names], [[k[5:], *(_num(r.last(k)) for r in runs)]
                                      for k in time_keys])
    out.append("")
  if pictures:
    out += ["## Pictures", ""]
    out += [f"![{p[:-4]}]({p})" for p in pictures]
    out.append("")
  for r in runs:
    examples = r.examples()
    if examples:
      out += [f"## Examples: {r.name}", ""]
      fields = list(examples[0])
      out += _table(fields, [[_cell(str(e.get(f, "")), 200) for f in fields] for e in examples])
      out.append("")
  return "\n".join(out)
