"""The report's pictures: one matplotlib figure per figure of merit, every run overlaid.

Each `*_figure` function returns a Figure whose lines hold exactly the values of
metrics.jsonl (tests read them back); `write_all` saves them as PNGs. Headless:
the Agg backend, no display needed.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402

from transformer_jax.report.runs import QUALITY, RunRecords  # noqa: E402

_STYLE = {"train": "-", "eval": "--"}


def _new(title: str, ylabel: str, panels: int = 1) -> tuple[Figure, list]:
  ncols = min(panels, 3)
  nrows = -(-panels // ncols)
  fig, grid = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 3.8 * nrows + 0.4),
                           squeeze=False)
  axes = list(grid.ravel())
  for ax in axes[panels:]:
    ax.remove()
  axes = axes[:panels]
  fig.suptitle(title)
  for ax in axes:
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
  return fig, axes


def _plot(ax, run: RunRecords, key: str, color, label: str, style: str = "-",
          marker: str | None = None) -> bool:
  steps, values = run.series(key)
  if not steps:
    return False
  ax.plot(steps, values, style, color=color, label=label, marker=marker,
          markersize=4 if marker else None)
  return True


def _colors(runs: list[RunRecords]) -> list:
  cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  return [cycle[i % len(cycle)] for i in range(len(runs))]


def _finish(fig: Figure, axes: list) -> Figure:
  for ax in axes:
    if ax.get_lines():
      ax.legend(fontsize="small")
  fig.tight_layout()
  return fig


def train_loss_key(run: RunRecords) -> str:
  """train/nll where logged (the cross-entropy that eval/loss is, without label
  smoothing), else train/loss."""
  return "train/nll" if "train/nll" in run.keys() else "train/loss"


def loss_figure(runs: list[RunRecords]) -> Figure:
  """Training loss (solid) and validation loss (dashed, marked) of every run."""
  fig, (ax,) = _new("Loss", "cross-entropy (nats per token or example)")
  for run, color in zip(runs, _colors(runs)):
    _plot(ax, run, train_loss_key(run), color, f"{run.name} train")
    _plot(ax, run, "eval/loss", color, f"{run.name} validation", _STYLE["eval"], "o")
  return _finish(fig, [ax])


def single_figure(runs: list[RunRecords], key: str, title: str, ylabel: str,
                  log: bool = False) -> Figure:
  fig, (ax,) = _new(title, ylabel)
  for run, color in zip(runs, _colors(runs)):
    _plot(ax, run, key, color, run.name)
  if log and ax.get_lines():
    ax.set_yscale("log")
  return _finish(fig, [ax])


def throughput_figure(runs: list[RunRecords]) -> Figure:
  """train/<unit>_per_sec of each run (its own unit: tokens or examples)."""
  units = sorted({r.unit for r in runs})
  fig, (ax,) = _new("Throughput", " or ".join(f"{u} per second" for u in units))
  for run, color in zip(runs, _colors(runs)):
    _plot(ax, run, f"train/{run.unit}_per_sec", color, run.name)
  return _finish(fig, [ax])


def quality_keys(runs: list[RunRecords]) -> list[str]:
  """The quality figures (QUALITY) that any run logs on validation."""
  keys = set().union(*(r.keys() for r in runs))
  return [q for q in QUALITY if f"eval/{q}" in keys]


def quality_figure(runs: list[RunRecords]) -> Figure | None:
  """One panel per quality figure (eval/bleu, eval/chrf, eval/perplexity, ...), with the
  test figure as a star at the run's last step."""
  keys = quality_keys(runs)
  if not keys:
    return None
  fig, axes = _new("Quality on validation (test: star)", "", panels=len(keys))
  for ax, q in zip(axes, keys):
    ax.set_title(q)
    ax.set_ylabel(q)
    for run, color in zip(runs, _colors(runs)):
      _plot(ax, run, f"eval/{q}", color, run.name, "-", "o")
      steps, values = run.series(f"test/{q}")
      if steps:
        ax.plot(steps[-1:], values[-1:], "*", color=color, markersize=12,
                label=f"{run.name} test")
  return _finish(fig, axes)


def figures(runs: list[RunRecords]) -> dict[str, Figure]:
  """file stem -> figure, for what the runs logged."""
  out = {"loss": loss_figure(runs),
         "learning_rate": single_figure(runs, "train/learning_rate", "Learning rate",
                                        "learning rate"),
         "throughput": throughput_figure(runs),
         "grad_norm": single_figure(runs, "train/grad_norm", "Gradient norm (before clipping)",
                                    "global L2 norm", log=True)}
  quality = quality_figure(runs)
  if quality is not None:
    out["quality"] = quality
  return out


def write_all(runs: list[RunRecords], output: str) -> list[str]:
  """Saves every figure as OUTPUT/<stem>.png; returns the file names."""
  os.makedirs(output, exist_ok=True)
  names = []
  for stem, fig in figures(runs).items():
    fig.savefig(os.path.join(output, f"{stem}.png"), dpi=100)
    plt.close(fig)
    names.append(f"{stem}.png")
  return names
