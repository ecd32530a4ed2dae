"""config.train_budget_seconds: the step count is fitted while training, then fixed.

Real runs through train.py: the tiny encoder-decoder of conftest.TINY (sharded
programs) and tests/toy_kind.py's throwaway kind (a step fast enough to run
thousands); the fitting rule and the schedule's end on their own.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import config as config_lib, kinds
from transformer_jax.checkpoint import manager as checkpoint
from transformer_jax.errors import ConfigError
from transformer_jax.train import budget, optim

from conftest import excerpt, tiny_config, train_tiny, write_parallel_tsv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(REPO, "tests", "toy_kind.py")
QUIET = ["--config.eval_every_steps=100000", "--config.checkpoint_every_steps=100000",
         "--config.log_every_steps=10"]
COSINE = ["--config.lr_schedule=cosine", "--config.warmup_steps=3"]


def _train(workdir, *args):
  return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), f"--config={TOY}",
                         f"--workdir={workdir}", *QUIET, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600, env=dict(os.environ))


def _metrics(workdir) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _last_step(workdir) -> int:
  return max(m["step"] for m in _metrics(workdir))


def _train_log(workdir) -> list[tuple]:
  return [(m["step"], m["train/loss"], m["train/learning_rate"])
          for m in _metrics(workdir) if "train/loss" in m]


def _record(workdir) -> dict:
  with open(os.path.join(workdir, budget.RECORD), encoding="utf-8") as f:
    return json.load(f)


def test_a_fresh_run_fits_its_count_to_the_budget_and_a_rerun_keeps_it(tmp_path):
  workdir = str(tmp_path / "run")
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=40)
  args = [*QUIET, "--config.train_budget_seconds=2", "--config.num_train_steps=1000000"]
  first = train_tiny(workdir, tsv, *args)
  assert first.returncode == 0, excerpt(first.stderr)
  record = _record(workdir)
  fit = record["fit_steps"]
  assert fit > budget.REFIT_EVERY and record["step_seconds"] > 0, record
  assert "the step count is fitted while training" in first.stdout
  assert f"Training budget 2 s: {fit} steps fit (" in first.stdout
  assert _last_step(workdir) == fit  # trained exactly the steps that fit, not the cap.
  timed = [m for m in _metrics(workdir) if "time/train" in m][-1]
  assert 1.0 < timed["time/train"] < 4.0, timed  # the budget, give or take a slow machine.
  # The schedule ended where the run did: the last step's rate is the cosine's last
  # before 0 with the fitted count as its end (small, or large where a slow machine fits
  # few steps), not the cap's (about the peak).
  step, _, rate = _train_log(workdir)[-1]
  schedule = optim.learning_rate_schedule(
      config_lib.from_json(os.path.join(workdir, "config.json")))
  assert step == fit and rate == pytest.approx(float(schedule(fit - 1, horizon=fit)), rel=1e-4)
  assert float(schedule(fit, horizon=fit)) == pytest.approx(0.0, abs=1e-9)

  again = train_tiny(workdir, tsv, *args)
  assert again.returncode == 0, excerpt(again.stderr)
  assert f"{fit} steps fit (fixed by {budget.RECORD})" in again.stdout
  assert f"complete at step {fit}" in again.stdout  # nothing fitted again, nothing trained.
  assert "raise config.train_budget_seconds to train longer" in again.stdout
  assert _record(workdir) == record


@pytest.mark.long
def test_a_recorded_count_trains_exactly_like_a_run_of_that_many_steps(tmp_path):
  plain, fixed = tmp_path / "plain", tmp_path / "fixed"
  fixed.mkdir()
  # As a first run on another machine would have left it: 24 steps fit in 7 s there.
  (fixed / budget.RECORD).write_text(json.dumps({"train_budget_seconds": 7.0, "fit_steps": 24}))
  one = _train(str(fixed), *COSINE, "--config.train_budget_seconds=7",
               "--config.num_train_steps=1000000", "--config.log_every_steps=1")
  two = _train(str(plain), *COSINE, "--config.num_train_steps=24", "--config.log_every_steps=1")
  assert one.returncode == 0 and two.returncode == 0, excerpt(one.stderr + two.stderr)
  assert "24 steps fit (fixed by train_budget.json)" in one.stdout
  # The schedule's end is set from the host into the optimizer state; the compiled step
  # then computes the same losses as one built for 24 steps.
  assert _train_log(str(fixed)) == _train_log(str(plain))
  assert len(_train_log(str(plain))) == 24


def test_num_train_steps_caps_the_count_and_a_resume_goes_on_fitting(tmp_path):
  workdir = str(tmp_path / "run")
  capped = _train(workdir, "--config.train_budget_seconds=3", "--config.num_train_steps=30")
  assert capped.returncode == 0, excerpt(capped.stderr)
  assert _last_step(workdir) == 30
  assert not os.path.exists(os.path.join(workdir, budget.RECORD))  # not fixed: a raise trains on.
  spent = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), 3).metadata(30)
  assert 0 < spent[budget.SPENT_KEY] < 3.0  # the budget's seconds, kept for a resume.

  more = _train(workdir, "--config.train_budget_seconds=3", "--config.num_train_steps=1000000")
  assert more.returncode == 0, excerpt(more.stderr)
  assert "Resuming from checkpoint at step 30" in more.stdout
  fit = _record(workdir)["fit_steps"]
  assert fit > 30 + budget.REFIT_EVERY and _last_step(workdir) == fit

  fewer = _train(workdir, "--config.train_budget_seconds=3", "--config.num_train_steps=20")
  assert fewer.returncode == 0, excerpt(fewer.stderr)
  assert f"{fit} steps fit (fixed by train_budget.json); capped at config.num_train_steps=20" \
      in fewer.stdout and f"complete at step {fit}" in fewer.stdout
  assert "raise config.num_train_steps to train longer" in fewer.stdout


def test_the_fit_follows_the_recent_steps_and_fixes_the_count_late():
  fitter = budget.Fitter(10.0, cap=1000)
  assert fitter.fit(1, 0.0) == (None, False)  # nothing timed yet.
  assert fitter.fit(11, 1.0) == (11 + 90, False)  # 0.1 s per step: 90 more fit in 9 s.
  assert fitter.fit(21, 3.0) == (21 + 46, False)  # slower: 0.15 s per step over 20 steps.
  # Only the last WINDOW steps count: a run that slowed down long ago is not held back.
  for done in range(31, 31 + budget.WINDOW + 1, budget.REFIT_EVERY):
    steps, final = fitter.fit(done, 3.0 + (done - 21) * 0.01)
  assert fitter.step_seconds == pytest.approx(0.01) and not final
  assert fitter.fit(done + 10, 9.5) == (done + 19, True)  # 90% spent: fixed.
  assert fitter.fit(done + 20, 10.5) == (done + 21, True)  # overspent: one more step.
  assert budget.Fitter(10.0, cap=50).count(5, 0.0) == 50  # nothing timed: the cap.
  resumed = budget.Fitter(10.0, cap=1000, step_seconds=0.5)  # a checkpoint's figure.
  assert resumed.count(30, 4.0) == 42 and resumed.fit(31, 4.0) == (43, False)
  assert budget.Fitter(10.0, cap=50).fit(1, 0.0) == (None, False)
  capped = budget.Fitter(10.0, cap=50)
  capped.fit(1, 0.0)
  assert capped.fit(11, 0.1) == (50, False)
  assert [d for d in range(1, 40) if budget.is_refit_step(d, start=7)] == [8, 18, 28, 38]


def test_the_schedules_end_moves_in_the_optimizer_state():
  c = tiny_config(lr_schedule="cosine", learning_rate=1.0, warmup_steps=2, num_train_steps=100)
  tx = optim.make_optimizer(c)
  params = {"w": jnp.ones((2, 3))}
  state = tx.init(params)
  assert optim.horizon_of(state) == 100
  moved = optim.with_horizon(state, 10)
  assert optim.horizon_of(moved) == 10
  c.num_train_steps = 10
  reference = optim.make_optimizer(c)
  ref_state = reference.init(params)
  update = jax.jit(tx.update)
  grads = {"w": jnp.full((2, 3), 0.5)}
  for _ in range(12):  # through the warmup, the decay and past its end.
    ours, moved = update(grads, moved, params)
    theirs, ref_state = jax.jit(reference.update)(grads, ref_state, params)
    np.testing.assert_array_equal(ours["w"], theirs["w"])
  assert not np.any(ours["w"])  # past the end: learning rate 0.
  lr = optim.learning_rate_schedule(c)
  assert float(lr(7, 100)) > 0.9 and float(lr(7, 10)) < 0.4


def test_a_budget_is_checked_with_the_config_and_a_damaged_record_is_named(tmp_path):
  c = config_lib.default_config()
  c.train_budget_seconds = -1.0
  with pytest.raises(ConfigError, match="train_budget_seconds"):
    kinds.validate(c)
  c.train_budget_seconds = 60.0
  assert budget.recorded_steps(c, str(tmp_path)) is None  # no record yet.
  (tmp_path / budget.RECORD).write_text('{"train_budget_seconds": 30, "fit_steps": 5}')
  assert budget.recorded_steps(c, str(tmp_path)) is None  # made for another budget.
  (tmp_path / budget.RECORD).write_text('{"train_budget_seconds": 60, "fit_steps": 5}')
  assert budget.recorded_steps(c, str(tmp_path)) == 5
  (tmp_path / budget.RECORD).write_text("{not json")
  with pytest.raises(ConfigError, match=budget.RECORD):
    budget.recorded_steps(c, str(tmp_path))
