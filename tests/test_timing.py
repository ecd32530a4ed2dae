"""The phase clock of a run (transformer_jax/timing.py)."""

import time

import pytest

from transformer_jax.observe import timing


def test_phases_add_up_to_the_total_and_name_unknown_phases():
  started = time.monotonic() - 0.5  # half a second of "imports".
  phases = timing.Phases(started)
  for _ in range(2):
    with phases.time("train"):
      time.sleep(0.05)
  with phases.time("eval"):
    time.sleep(0.02)
  record = phases.record()
  assert record["time/startup"] >= 0.5
  assert 0.1 <= record["time/train"] < 0.5 and 0.02 <= record["time/eval"] < 0.4
  parts = sum(v for k, v in record.items() if k not in ("time/total", "time/train_fraction"))
  assert parts == pytest.approx(record["time/total"], abs=1e-3)
  assert record["time/train_fraction"] == pytest.approx(record["time/train"] / record["time/total"])
  assert phases.summary().startswith("Time: ")
  with pytest.raises(ValueError, match="unknown phase 'training'"):
    with phases.time("training"):
      pass
