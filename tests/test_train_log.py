"""train_log.TrainLog: a log step is read after the next step's dispatch, throughput counts
training time only (the clock restarts after an evaluation or a save), and the record's
train_metrics are logged."""

import json

import jax.numpy as jnp
import pytest

from conftest import tiny_config
from transformer_jax import kinds
from transformer_jax.checkpoint.manager import Checkpointer
from transformer_jax.errors import NumericalError
from transformer_jax.observe.writers import MetricWriter, Progress
from transformer_jax.train import optim
from transformer_jax.train.guard import Guard
from transformer_jax.train.train_log import TrainLog


class Clock:
  """The log's time, set by the test."""

  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


def _metrics(loss=2.0, weight=10.0, units=100.0, ctc=None, bad=0.0):
  """One step's metric sums, as the train step returns them (device arrays)."""
  m = {"loss_sum": loss * weight, "nll_sum": loss * weight, "correct_sum": 0.5 * weight,
       "weight_sum": weight, "grad_norm": 1.5, "units_sum": units, "nonfinite_sum": bad}
  if ctc is not None:
    m["ctc_sum"] = ctc * weight
  return {k: jnp.asarray(v, jnp.float32) for k, v in m.items()}


@pytest.fixture
def parts(tmp_path):
  config = tiny_config(num_train_steps=10, warmup_steps=2, lr_schedule="cosine",
                       max_skipped_nonfinite_steps=0)
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=2)
  writer = MetricWriter(str(tmp_path))
  yield config, ckpt, writer, tmp_path
  writer.close()
  ckpt.close()


def _log(parts, clock, start=0, extra=(), peak_flops=None):
  config, ckpt, writer, _ = parts
  return TrainLog(writer=writer, progress=Progress(config.num_train_steps, start),
                  guard=Guard(config, ckpt, start), start=start,
                  learning_rate=optim.learning_rate_schedule(config), unit="tokens",
                  extra=extra, train_flops=1e6, peak_flops=peak_flops, final={}, now=clock)


def _lines(parts):
  with open(parts[3] / "metrics.jsonl", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_a_log_step_is_read_after_the_next_dispatch(parts, capsys):
  clock = Clock()
  log = _log(parts, clock, peak_flops=1e7)
  log.after_dispatch(_metrics(loss=3.0))
  log.after_dispatch(_metrics(loss=1.0))
  log.mark(2)
  assert not (parts[3] / "metrics.jsonl").exists()  # not read yet.
  clock.t = 4.0
  log.after_dispatch(_metrics())  # step 3 dispatched (and done: arrays made on the host).
  [record] = _lines(parts)
  assert record["step"] == 2
  assert record["train/loss"] == pytest.approx(2.0) and record["train/nll"] == pytest.approx(2.0)
  assert record["train/accuracy"] == 0.5 and record["train/grad_norm"] == 1.5
  schedule = optim.learning_rate_schedule(parts[0])
  assert record["train/learning_rate"] == pytest.approx(float(schedule(1, 10)))
  # Steps 1-3 were done in 4 s: 0.75 steps/s, 100 tokens a step, 1 MFLOP a step of 10 MFLOP/s.
  assert record["train/steps_per_sec"] == 0.75
  assert record["train/tokens_per_sec"] == 75.0
  assert record["train/mfu"] == pytest.approx(0.075)
  assert "train/skipped_nonfinite_steps" not in record and "train/ctc" not in record
  assert "step 2/10 | loss 2.0000 | 75 tokens/s" in capsys.readouterr().out
  assert log.final["train/loss"] == record["train/loss"]
  assert log.pending and len(log.pending) == 1  # step 3, not logged yet.


def test_the_throughput_clock_restarts_after_an_evaluation_or_a_save(parts):
  clock = Clock()
  log = _log(parts, clock)
  for _ in range(2):
    log.after_dispatch(_metrics())
  log.mark(2)
  clock.t = 1.0
  log.settle(2)  # an evaluation after step 2: the log is written now, not a step late.
  assert _lines(parts)[-1]["train/steps_per_sec"] == 2.0  # steps 1-2 in 1 s.
  clock.t = 10.0  # the evaluation took 9 s.
  log.reset_clock(2)
  log.after_dispatch(_metrics())
  log.mark(3)
  clock.t = 12.0
  log.flush()
  assert _lines(parts)[-1]["step"] == 3
  assert _lines(parts)[-1]["train/steps_per_sec"] == 0.5  # 1 step in 2 s, not in 11 s.
  log.reset_clock(3)
  log.after_dispatch(_metrics())
  log.mark(4)
  log.flush()  # no time passed: no figure.
  assert "train/steps_per_sec" not in _lines(parts)[-1]


def test_the_records_train_metrics_are_logged_when_present(parts):
  assert kinds.get("speech_to_text").train_metrics == ("ctc",)
  assert kinds.get("encoder_decoder").train_metrics == ()
  clock = Clock()
  log = _log(parts, clock, extra=("ctc",))
  log.after_dispatch(_metrics(ctc=4.0))
  log.mark(1)
  log.flush()
  log.after_dispatch(_metrics())  # a model without the head: no ctc in the summary.
  log.mark(2)
  log.flush()
  first, second = _lines(parts)
  assert first["train/ctc"] == 4.0 and "train/ctc" not in second


def test_settle_checks_the_steps_not_logged_yet(parts):
  log = _log(parts, Clock())
  log.after_dispatch(_metrics())
  log.after_dispatch(_metrics())
  log.settle(2)  # no log due: steps 1-2 are checked, not logged.
  assert log.guard.checked_through == 2 and not (parts[3] / "metrics.jsonl").exists()
  log.after_dispatch(_metrics(bad=1.0))
  with pytest.raises(NumericalError, match="between steps 3 and 3;"):
    log.settle(3)
