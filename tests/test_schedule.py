"""schedule.Schedule: the step count without a budget, a recorded budget's count, a count
fitted while training and fixed once most of the budget is spent, the schedule's end
moved in the optimizer state, and the training seconds kept in a checkpoint's metadata."""

import jax
import jax.numpy as jnp
import pytest

from conftest import tiny_config
from transformer_jax.observe.timing import Phases
from transformer_jax.train import budget, optim
from transformer_jax.train.schedule import Schedule
from transformer_jax.train.steps import TrainState


class Clock:
  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


def _state(config, horizon=None):
  """A real train state: parameters and AdamW state whose schedule ends at `horizon`."""
  params = {"w": jnp.ones((2, 2))}
  opt_state = optim.make_optimizer(config).init(params)
  if horizon is not None:
    opt_state = optim.with_horizon(opt_state, horizon)
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=opt_state,
                    rng=jax.random.key_data(jax.random.key(0)))


def _metrics():
  return {"loss_sum": jnp.ones([])}


def test_without_a_budget_the_count_is_num_train_steps(tmp_path):
  config = tiny_config(num_train_steps=20, train_budget_seconds=0.0)
  schedule = Schedule(config, str(tmp_path), True, Phases())
  assert schedule.total == 20 and not schedule.is_complete(19)
  state = schedule.settle(_state(config, horizon=10), 10, {})  # resumed, num_train_steps raised.
  assert optim.horizon_of(state.opt_state) == 20
  assert schedule.maybe_refit(state, 11, _metrics()) is state
  assert schedule.metadata({"model": "m"}) == {"model": "m"}


def test_a_complete_run_names_what_to_raise(tmp_path, capsys):
  config = tiny_config(num_train_steps=6, train_budget_seconds=0.0)
  assert Schedule(config, str(tmp_path), True, Phases()).is_complete(6)
  assert (f"The run in {tmp_path} is complete at step 6; raise config.num_train_steps to "
          "train longer.") in capsys.readouterr().out


def test_a_recorded_count_is_fixed(tmp_path, capsys):
  config = tiny_config(num_train_steps=1000, train_budget_seconds=10.0)
  budget.write_record(config, str(tmp_path), 15, 0.1, 9.5)
  schedule = Schedule(config, str(tmp_path), True, Phases())
  assert "Training budget 10 s: 15 steps fit (fixed by train_budget.json)" in \
      capsys.readouterr().out
  assert schedule.total == 15
  state = schedule.settle(_state(config), 0, {})
  assert optim.horizon_of(state.opt_state) == 15 and schedule.fitter.fixed
  assert schedule.maybe_refit(state, 1, _metrics()) is state
  assert schedule.is_complete(15)
  assert "raise config.train_budget_seconds to train longer" in capsys.readouterr().out


def test_the_count_is_fitted_moved_and_fixed(tmp_path, capsys):
  config = tiny_config(num_train_steps=1000, train_budget_seconds=10.0)
  clock = Clock()
  schedule = Schedule(config, str(tmp_path), True, Phases(), now=clock)
  state = schedule.settle(_state(config), 0, {})
  assert schedule.total == 1000  # no step timed yet: the cap.
  schedule.start_clock()
  for done in range(1, 22):  # 0.125 s a step.
    clock.t = 0.125 * done
    state = schedule.maybe_refit(state, done, _metrics())
    if done == 11:  # the second fit times steps 2-11: 80 steps fit in 10 s.
      assert schedule.total == 80 and optim.horizon_of(state.opt_state) == 80
  assert budget.recorded_steps(config, str(tmp_path)) is None  # 2.6 s of 10: not fixed yet.
  # The machine slows down: step 31 is reached after 9.5 s (over 90% of the budget).
  clock.t = 9.5
  state = schedule.maybe_refit(state, 31, _metrics())
  step_seconds = (9.5 - 0.125) / 30
  assert schedule.fitter.step_seconds == pytest.approx(step_seconds)
  assert schedule.total == 31 + int(0.5 / step_seconds) == 32
  assert optim.horizon_of(state.opt_state) == 32
  assert schedule.fitter.fixed and budget.recorded_steps(config, str(tmp_path)) == 32
  assert "Training budget 10 s: 32 steps fit (312.5 ms per step lately; fixed in " \
      "train_budget.json)" in capsys.readouterr().out
  assert schedule.maybe_refit(state, 41, _metrics()) is state  # fixed: no more fits.


def test_a_count_reached_early_is_fixed_at_the_end_but_the_cap_stays_open(tmp_path):
  config = tiny_config(num_train_steps=1000, train_budget_seconds=10.0)
  resumed = {budget.SPENT_KEY: 5.0, budget.STEP_KEY: 0.125}
  schedule = Schedule(config, str(tmp_path), True, Phases(), now=Clock())
  state = schedule.settle(_state(config), 40, resumed)
  assert schedule.total == 40 + 40 and optim.horizon_of(state.opt_state) == 80
  schedule.finish()
  assert budget.recorded_steps(config, str(tmp_path)) == 80
  capped = tiny_config(num_train_steps=50, train_budget_seconds=10.0)
  schedule = Schedule(capped, str(tmp_path / "capped"), True, Phases(), now=Clock())
  schedule.settle(_state(capped), 40, resumed)
  assert schedule.total == 50
  schedule.finish()
  assert budget.recorded_steps(capped, str(tmp_path / "capped")) is None


def test_training_seconds_leave_out_eval_saving_and_the_first_step(tmp_path):
  config = tiny_config(num_train_steps=1000, train_budget_seconds=100.0)
  clock, phases = Clock(), Phases()
  schedule = Schedule(config, str(tmp_path), True, phases, now=clock)
  schedule.settle(_state(config), 0, {budget.SPENT_KEY: 20.0, budget.STEP_KEY: 0.5})
  clock.t = 3.0
  schedule.start_clock()
  phases.seconds["eval"] += 4.0
  phases.seconds["checkpoint"] += 1.0
  phases.seconds["first_step"] += 2.0
  clock.t = 13.0
  assert schedule.train_seconds() == 3.0
  assert schedule.metadata({"model": "m"}) == {
      "model": "m", budget.SPENT_KEY: 23.0, budget.STEP_KEY: 0.5}
  schedule.stop_clock()
  assert phases.seconds["train"] == 3.0
