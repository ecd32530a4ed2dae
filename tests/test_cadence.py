"""cadence.due: what a step makes due (log, evaluate, save, stop), as the loop asks it."""

from conftest import tiny_config
from transformer_jax.train import cadence


def _config():
  return tiny_config(log_every_steps=2, eval_every_steps=3, checkpoint_every_steps=4,
                     num_train_steps=10, checkpoint_every_seconds=60.0)


def _due(done, total=10, time_due=False, stopping=False):
  return cadence.due(_config(), done, total, time_due=time_due, stopping=stopping)


def test_each_is_due_at_its_multiples():
  steps = range(1, 10)
  assert [d for d in steps if _due(d).log] == [2, 4, 6, 8]
  assert [d for d in steps if _due(d).eval] == [3, 6, 9]
  assert [d for d in steps if _due(d).save] == [4, 8]
  assert not any(_due(d).stop for d in steps)
  assert _due(1) == cadence.Due(log=False, eval=False, save=False, stop=False)


def test_the_last_step_logs_evaluates_and_saves():
  assert _due(10) == cadence.Due(log=True, eval=True, save=True, stop=False)
  # The last step is the count of the moment (a budget moves it).
  assert _due(7, total=7) == cadence.Due(log=True, eval=True, save=True, stop=False)


def test_stopping_logs_saves_and_stops_but_evaluates_only_when_due():
  assert _due(5, stopping=True) == cadence.Due(log=True, eval=False, save=True, stop=True)
  assert _due(3, stopping=True) == cadence.Due(log=True, eval=True, save=True, stop=True)


def test_the_save_clock_saves_only():
  assert _due(5, time_due=True) == cadence.Due(log=False, eval=False, save=True, stop=False)


def test_the_save_clock_is_due_after_checkpoint_every_seconds():
  config = _config()
  assert not cadence.save_clock_due(config, last_save=100.0, now=159.9)
  assert cadence.save_clock_due(config, last_save=100.0, now=160.0)
  config.checkpoint_every_seconds = 0.0  # off.
  assert not cadence.save_clock_due(config, last_save=0.0, now=1e9)
