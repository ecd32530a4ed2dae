"""guard.Guard: non-finite steps are skipped up to config.max_skipped_nonfinite_steps, then the
run stops naming the last good checkpoint; a check before a save marks the steps it found finite."""

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from transformer_jax.checkpoint.manager import Checkpointer
from transformer_jax.errors import NumericalError
from transformer_jax.train.guard import Guard


@pytest.fixture
def ckpt(tmp_path):
  c = Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=2)
  yield c
  c.close()


def _sums(bad: int) -> dict:
  return {"nonfinite_sum": np.float32(bad), "loss_sum": np.float32(np.nan if bad else 1.0)}


def test_skips_up_to_the_limit_then_stops_naming_the_last_good_checkpoint(ckpt, capsys):
  ckpt.save(2, {"w": jnp.ones(3)}, {}, {})
  guard = Guard(tiny_config(max_skipped_nonfinite_steps=2, learning_rate=0.5), ckpt, start=0)
  guard.check(_sums(0), 1, 2)
  guard.check(_sums(1), 3, 4)
  assert guard.skipped == 1
  guard.check(_sums(1), 5, 6)
  assert guard.skipped == 2
  out = capsys.readouterr().out
  assert ("warning: skipped 1 step(s) with a non-finite loss or gradient between steps 3 and 4 "
          "(1 of at most 2)") in out
  assert "between steps 5 and 6 (2 of at most 2)" in out
  with pytest.raises(NumericalError) as e:
    guard.check(_sums(1), 7, 8)
  message = str(e.value)
  assert message.startswith("the training loss or gradient became non-finite (NaN or inf) "
                            "between steps 7 and 8; stopped without saving it.")
  assert (f"The last good checkpoint is step 2 in {ckpt.directory} (kept; running the same "
          "command resumes from it)") in message
  assert "config.learning_rate=0.5 too high" in message
  assert "model.dtype" not in message  # float32 does not overflow.
  assert guard.skipped == 2


def test_without_skipping_the_first_bad_step_stops_and_names_no_checkpoint(ckpt):
  guard = Guard(tiny_config(max_skipped_nonfinite_steps=0, **{"model.dtype": "bfloat16"}),
                ckpt, start=0)
  with pytest.raises(NumericalError) as e:
    guard.check(_sums(1), 1, 2)
  assert "No checkpoint was saved." in str(e.value)
  assert "model.dtype='bfloat16' overflowing (try float32)" in str(e.value)


def test_a_pre_save_check_marks_its_steps_checked(ckpt):
  guard = Guard(tiny_config(max_skipped_nonfinite_steps=0), ckpt, start=10)
  assert guard.checked_through == 10
  guard.check(_sums(0), 11, 13, count=False)  # before a save after step 13.
  assert guard.checked_through == 13
  guard.check(_sums(0), 11, 14)  # the log step counts; nothing more is marked.
  assert guard.checked_through == 13
  # A bad step among 11..16 is not among those the pre-save check found finite.
  with pytest.raises(NumericalError, match="between steps 14 and 16;"):
    guard.check(_sums(1), 11, 16)


def test_a_pre_save_check_leaves_the_counting_to_the_log(ckpt, capsys):
  guard = Guard(tiny_config(max_skipped_nonfinite_steps=1), ckpt, start=0)
  guard.check(_sums(1), 1, 3, count=False)  # allowed, not counted, not marked.
  assert guard.skipped == 0 and guard.checked_through == 0
  assert capsys.readouterr().out == ""
  guard.check(_sums(1), 1, 4)  # the log counts it.
  assert guard.skipped == 1
