"""config.train_budget_seconds: the steps that fit are timed once and fixed in the workdir.

Real timings through train.py: the tiny encoder-decoder of conftest.TINY (the count
then rebuilds its sharded programs), and tests/toy_kind.py's throwaway kind (a
model fast enough that a timing would show).
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import excerpt, train_tiny, write_parallel_tsv
from transformer_jax import budget
from transformer_jax import config as config_lib
from transformer_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(REPO, "tests", "toy_kind.py")
QUIET = ["--config.eval_every_steps=100000", "--config.checkpoint_every_steps=100000",
         "--config.log_every_steps=10"]


def _train(workdir, *args):
  return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), f"--config={TOY}",
                         f"--workdir={workdir}", *QUIET, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600, env=dict(os.environ))


def _last_step(workdir) -> int:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return max(json.loads(line)["step"] for line in f)


def _record(workdir) -> dict:
  with open(os.path.join(workdir, budget.RECORD), encoding="utf-8") as f:
    return json.load(f)


def test_a_fresh_run_times_its_steps_once_and_a_rerun_keeps_the_count(tmp_path):
  workdir = str(tmp_path / "run")
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=40)
  args = [*QUIET, "--config.train_budget_seconds=1.5", "--config.num_train_steps=1000000"]
  first = train_tiny(workdir, tsv, *args)
  assert first.returncode == 0, excerpt(first.stderr)
  record = _record(workdir)
  fit = record["fit_steps"]
  assert fit == int(1.5 / record["step_seconds"]) and fit > 10, record
  assert f"Training budget 1.5 s: {fit} steps fit (" in first.stdout
  assert "timed now" in first.stdout
  assert _last_step(workdir) == fit  # trained exactly the steps that fit, not the cap.
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["num_train_steps"] == fit  # the run's record holds the count.
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    times = [json.loads(line) for line in f if "time/calibrate" in line]
  assert times and times[-1]["time/calibrate"] > 0

  again = train_tiny(workdir, tsv, *args)
  assert again.returncode == 0, excerpt(again.stderr)
  assert f"{fit} steps fit (fixed by {budget.RECORD})" in again.stdout
  assert f"complete at step {fit}" in again.stdout  # nothing timed again, nothing trained.
  assert _record(workdir) == record


def test_a_recorded_count_is_kept_and_num_train_steps_caps_it(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  # As a first run on another machine would have left it: 14 steps fit in 7 s there.
  (workdir / budget.RECORD).write_text(json.dumps(
      {"train_budget_seconds": 7.0, "step_seconds": 0.5, "fit_steps": 14}))
  capped = _train(str(workdir), "--config.train_budget_seconds=7",
                  "--config.num_train_steps=10")
  assert capped.returncode == 0, excerpt(capped.stderr)
  assert "14 steps fit (fixed by train_budget.json); capped at config.num_train_steps=10" in (
      capped.stdout)
  assert _last_step(str(workdir)) == 10
  # The cap raised: the run goes on to the recorded count (here the toy machine would fit
  # thousands of steps in 7 s, so a timing would show).
  more = _train(str(workdir), "--config.train_budget_seconds=7",
                "--config.num_train_steps=1000000")
  assert more.returncode == 0, excerpt(more.stderr)
  assert "Resuming from checkpoint at step 10" in more.stdout
  assert _last_step(str(workdir)) == 14


def test_a_budget_is_checked_with_the_config_and_a_damaged_record_is_named(tmp_path):
  c = config_lib.default_config()
  c.train_budget_seconds = -1.0
  with pytest.raises(ConfigError, match="train_budget_seconds"):
    config_lib.validate(c)
  c.train_budget_seconds = 60.0
  assert budget.recorded_steps(c, str(tmp_path)) is None  # no record yet.
  (tmp_path / budget.RECORD).write_text('{"train_budget_seconds": 30, "fit_steps": 5}')
  assert budget.recorded_steps(c, str(tmp_path)) is None  # made for another budget.
  (tmp_path / budget.RECORD).write_text('{"train_budget_seconds": 60, "fit_steps": 5}')
  assert budget.recorded_steps(c, str(tmp_path)) == 5
  (tmp_path / budget.RECORD).write_text("{not json")
  with pytest.raises(ConfigError, match=budget.RECORD):
    budget.recorded_steps(c, str(tmp_path))
  assert budget.fit_steps(10.0, 0.3) == 33 and budget.fit_steps(0.1, 1.0) == 1
