"""One trial: an ordinary `python train.py` run in its own workdir, its evaluations reported
to the study as they are logged, stopped (SIGTERM: train.py saves and stops) when the pruner
says so, and its failure turned into a one-line reason."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

import optuna

from transformer_jax.sweep import space as space_lib


class TrialFailed(Exception):
  """A trial's run ended without a finite objective; the message says why, in one line."""


@dataclasses.dataclass(frozen=True)
class Objective:
  metric: str  # a key of metrics.jsonl, "eval/bleu".
  direction: str  # "maximize" | "minimize".

  @classmethod
  def parse(cls, text: str, config) -> "Objective":
    """"eval/bleu:max"; "" takes config.best_checkpoint_metric and _mode."""
    from transformer_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
    if not text:
      text = f"{config.best_checkpoint_metric}:{config.best_checkpoint_mode}"
    metric, _, way = text.rpartition(":")
    if not metric or way not in ("min", "max"):
      raise ConfigError(f"--objective={text}: give METRIC:min or METRIC:max (eval/bleu:max)")
    return cls(metric, "maximize" if way == "max" else "minimize")


@dataclasses.dataclass
class TrialSetup:
  train_py: str  # the train.py that runs the trial.
  config_arg: str  # train.py's --config.
  fixed_args: tuple[str, ...]  # the sweep command's own --config.* overrides.
  params: tuple[space_lib.Param, ...]
  trials_dir: str
  budget_seconds: float
  objective: Objective
  poll_seconds: float = 0.5


def _evaluations(path: str, metric: str, seen: int) -> tuple[list[tuple[int, float]], int]:
  """(new (step, value) records of `metric` in metrics.jsonl past line `seen`, lines read)."""
  if not os.path.exists(path):
    return [], seen
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  complete = lines[:-1]  # the last piece may be a line still being written.
  out = []
  for line in complete[seen:]:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if metric in record and "step" in record:
      out.append((int(record["step"]), float(record[metric])))
  return out, len(complete)


def _reason(log_path: str, code: int) -> str:
  """The run's own error line (train.py prints `error: ...`), else its last line."""
  try:
    with open(log_path, encoding="utf-8", errors="replace") as f:
      lines = [l.strip() for l in f if l.strip()]
  except OSError:
    lines = []
  errors = [l for l in lines if l.startswith("error:")]
  if errors:
    return errors[-1][len("error:"):].strip()
  return f"train.py exited with code {code}" + (f": {lines[-1][:300]}" if lines else "")


def run_trial(trial: optuna.Trial, setup: TrialSetup) -> float:
  """Runs the trial's train.py; returns the objective's last logged value."""
  values = {p.name: p.suggest(trial) for p in setup.params}
  resumed = trial.user_attrs.get("workdir")
  workdir = resumed or os.path.join(setup.trials_dir,
                                                             f"{trial.number:04d}")
  args = [sys.executable, setup.train_py, f"--config={setup.config_arg}",
          f"--workdir={workdir}", *setup.fixed_args, *space_lib.override_args(values),
          f"--config.train_budget_seconds={setup.budget_seconds}", "--config.test_at_end=False"]
  trial.set_user_attr("workdir", workdir)
  trial.set_user_attr("overrides", space_lib.override_args(values))
  trial.set_user_attr("host", socket.gethostname())
  log_path = workdir.rstrip("/") + ".log"
  os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
  again = f" (again, resuming {os.path.basename(workdir)})" if resumed else ""
  print(f"trial {trial.number}{again}: {' '.join(space_lib.override_args(values))}", flush=True)
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"$ {shlex.join(args)}\n")
    log.flush()
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,  # pylint: disable=consider-using-with
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
  trial.set_user_attr("pid", proc.pid)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  seen, last = 0, None
  try:
    while True:
      running = proc.poll() is None
      records, seen = _evaluations(metrics_path, setup.objective.metric, seen)
      for step, value in records:
        last = value
        if not math.isfinite(value):
          continue
        trial.report(value, step)
        if running and trial.should_prune():
          proc.send_signal(signal.SIGTERM)  # train.py saves and stops.
          proc.wait()
          trial.set_user_attr("pruned_at", step)
          raise optuna.TrialPruned(f"pruned at step {step}: {setup.objective.metric}={value:.4g}")
      if not running:
        break
      time.sleep(setup.poll_seconds)
  except BaseException:
    if proc.poll() is None:  # the sweep itself stopped (Ctrl-C): so does its trial.
      proc.send_signal(signal.SIGTERM)
      proc.wait()
    raise
  if proc.returncode != 0:
    raise TrialFailed(_reason(log_path, proc.returncode))
  if last is None:
    raise TrialFailed(f"the run logged no {setup.objective.metric} (evaluations are every "
                      "config.eval_every_steps, and at the end)")
  if not math.isfinite(last):
    raise TrialFailed(f"{setup.objective.metric} is {last}")
  return last
