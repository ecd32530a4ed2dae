"""A study read back: report.md with the trials sorted by the objective, the best trial as a
ready command line, parameter importances (Optuna's fANOVA), and plots: the objective
against each parameter, the optimisation history, and the best runs' curves overlaid (the
report tool's plots, transformer_jax/report/)."""

from __future__ import annotations

import math
import os
import shlex
import warnings

import optuna
from optuna.trial import TrialState

from transformer_jax.report import plots as run_plots, runs as run_records
from transformer_jax.sweep import study as study_lib

BEST_CURVES = 3  # the best runs whose curves are overlaid.


def _value(t) -> str:
  return "" if t.value is None or not math.isfinite(t.value) else f"{t.value:.4f}"


def _note(t) -> str:
  if t.state == TrialState.PRUNED:
    step = t.user_attrs.get("pruned_at", t.last_step)
    return f"pruned at step {step}"
  if t.state == TrialState.FAIL:
    return str(t.user_attrs.get("error", "")) or "failed"
  return t.state.name.lower() if t.state != TrialState.COMPLETE else ""


def _sorted(study: optuna.Study) -> list:
  trials = study.get_trials(deepcopy=False)
  sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0

  def key(t):
    done = t.state == TrialState.COMPLETE and t.value is not None
    last = t.intermediate_values.get(t.last_step) if t.last_step is not None else None
    value = t.value if done else last
    return (0 if done else 1 if t.state == TrialState.PRUNED else 2,
            sign * value if value is not None else math.inf, t.number)
  return sorted(trials, key=key)


def _command(best) -> str:
  """The best trial as a train.py command of its own (its workdir's config file, the
  sweep's overrides, and the trial's values), from the trial's log's first line."""
  log = best.user_attrs.get("workdir", "").rstrip("/") + ".log"
  try:
    with open(log, encoding="utf-8") as f:
      first = f.readline()
  except OSError:
    return " ".join(best.user_attrs.get("overrides", []))
  args = shlex.split(first[2:]) if first.startswith("$ ") else []
  keep = [a for a in args[1:] if not a.startswith(("--workdir=", "--config.test_at_end=",
                                                  "--config.train_budget_seconds="))]
  return shlex.join(["python", os.path.basename(keep[0]) if keep else "train.py", *keep[1:]])


def _plots(study: optuna.Study, output: str) -> list[str]:
  """history.png (Optuna's optimisation history) and parameters.png: the objective of
  every complete trial (and a pruned trial's last evaluation, hollow) against each
  parameter, a log axis for log ranges."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from optuna.visualization import matplotlib as optuna_plots  # pylint: disable=import-outside-toplevel
  names = []
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental".
    try:
      ax = optuna_plots.plot_optimization_history(study)
    except (ValueError, RuntimeError):
      ax = None
  if ax is not None:
    ax.figure.set_size_inches(7, 4.5)
    ax.figure.tight_layout()
    ax.figure.savefig(os.path.join(output, "history.png"), dpi=100)
    plt.close(ax.figure)
    names.append("history.png")
  trials = [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.params]
  params = sorted({n for t in trials for n in t.params})
  if not params:
    return names
  fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params) + 0.6, 3.6),
                           squeeze=False, sharey=True)
  for ax, name in zip(axes[0], params):
    for pruned in (False, True):
      points = [(t.params[name], t.value if not pruned else t.intermediate_values.get(t.last_step))
                for t in trials if name in t.params
                and (t.state == TrialState.PRUNED) == pruned]
      points = [(x, y) for x, y in points if y is not None]
      if points:
        ax.scatter(*zip(*points), s=28, label="pruned (last evaluation)" if pruned else "complete",
                   facecolors="none" if pruned else "C0", edgecolors="C7" if pruned else "C0")
    dist = next(t.distributions[name] for t in trials if name in t.distributions)
    if getattr(dist, "log", False):
      ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel(_objective_name(study))
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(output, "parameters.png"), dpi=100)
  plt.close(fig)
  return names + ["parameters.png"]


def _objective_name(study: optuna.Study) -> str:
  return study.user_attrs.get("objective", "objective")


def write_report(study_arg: str, output: str | None = None) -> str:
  """Writes the report; returns a one-line summary."""
  study = study_lib.open_study(study_arg, create=False)
  output = output or os.path.join(study_arg, "report")
  if study_lib.is_url(study_arg) and output == os.path.join(study_arg, "report"):
    from transformer_jax.errors import BadInput  # pylint: disable=import-outside-toplevel
    raise BadInput("--study is a database URL: give --output=DIR for the report")
  os.makedirs(output, exist_ok=True)
  trials = _sorted(study)
  complete = [t for t in trials if t.state == TrialState.COMPLETE]
  lines = [f"# Study {study_arg}", "",
           f"{len(trials)} trials: {len(complete)} complete, "
           f"{sum(t.state == TrialState.PRUNED for t in trials)} pruned, "
           f"{sum(t.state == TrialState.FAIL for t in trials)} failed; the objective is "
           f"{study.direction.name.lower()}d.", ""]
  lines += _table(trials)
  if complete:
    lines += _best(study)
  pictures = _plots(study, output)
  best_dirs = [t.user_attrs["workdir"] for t in complete[:BEST_CURVES]
               if os.path.exists(os.path.join(t.user_attrs.get("workdir", ""), "metrics.jsonl"))]
  if best_dirs:
    pictures += run_plots.write_all(run_records.read_all(best_dirs), output)
  lines += ["", "## Plots", ""] + [f"![{p[:-4]}]({p})" for p in pictures]
  with open(os.path.join(output, "report.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return f"wrote {output}/report.md and {len(pictures)} plots ({len(trials)} trials)"


def _table(trials) -> list[str]:
  """Markdown rows, one per trial in the order given: value, parameters, seconds, note."""
  names = sorted({n for t in trials for n in t.params})
  head = ["trial", "value", *names, "seconds", "note"]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for t in trials:
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() if (
        t.datetime_complete and t.datetime_start) else None
    cells = [str(t.number), _value(t), *[_param(t.params.get(n)) for n in names],
             f"{seconds:.0f}" if seconds is not None else "", _note(t).replace("|", "/")]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _best(study) -> list[str]:
  """The best trial's command line and the parameters' fANOVA importances."""
  best = study.best_trial
  lines = ["", f"## Best: trial {best.number}, {best.value:.4f}", "", "```bash",
           _command(best), "```"]
  try:
    importances = optuna.importance.get_param_importances(study)
  except (ValueError, RuntimeError) as e:
    return lines + ["", f"Parameter importances: not computed ({e})."]
  lines += ["", "## Parameter importances (fANOVA)", "", "| parameter | importance |",
            "| --- | --- |"]
  return lines + [f"| {k} | {v:.3f} |" for k, v in importances.items()]


def _param(value) -> str:
  if value is None:
    return ""
  return f"{value:.4g}" if isinstance(value, float) else str(value)
