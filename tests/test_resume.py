"""Resume and preemption, end to end: train.py in real subprocesses, stopped and restarted.

Every resumed run is compared with a straight run of the same config: the
`train/loss` of every step must be the same (bit for bit on one layout, within
float tolerance across layouts).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import device_env, write_parallel_tsv
from test_train_e2e import REPO, TINY

STEPS = 40
# Dropout on; loss logged every step; rsqrt decay does not depend on num_train_steps,
# so runs cut short and continued follow the same schedule.
COMMON = [*TINY, "--config.model.dropout_rate=0.1", "--config.model.attention_dropout_rate=0.1",
          "--config.log_every_steps=1", "--config.eval_every_steps=1000",
          "--config.lr_schedule=rsqrt", "--config.num_predict_examples=4",
          "--config.max_predict_length=4", "--config.global_batch_size=8"]


def _command(workdir, tsv, *extra):
  return [sys.executable, os.path.join(REPO, "train.py"),
          f"--config={os.path.join(REPO, 'configs', 'base.py')}", f"--workdir={workdir}",
          *COMMON, "--config.data.source=files", f"--config.data.train_files=('{tsv}',)", *extra]


def _run(workdir, tsv, *extra, devices=8):
  proc = subprocess.run(_command(workdir, tsv, *extra), env=device_env(devices),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  steps = [r["step"] for r in records if "train/loss" in r]
  assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
  return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def _checkpoints(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return write_parallel_tsv(tmp_path_factory.mktemp("data") / "corpus.tsv", repeats=40)


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight") / "run")
  _run(workdir, corpus, f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=1000")
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, STEPS + 1))
  return losses


def _start_and_signal(workdir, corpus, sig, after_step, delay, *extra):
  """Starts a run, waits until `after_step` is logged (and, with checkpoints every step,
  one is committed), sleeps `delay` s, then sends `sig`."""
  proc = subprocess.Popen(_command(workdir, corpus, f"--config.num_train_steps={STEPS}", *extra),
                          env=device_env(8), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  out = []
  try:
    for line in proc.stdout:
      out.append(line)
      if "] step " in line and int(line.split("] step ")[1].split("/")[0]) >= after_step:
        break
    if "--config.checkpoint_every_steps=1" in extra:
      deadline = time.monotonic() + 60
      while not _checkpoints(workdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  return proc.returncode, "".join(out) + rest, err


def test_sigterm_saves_the_current_step_exits_0_and_resume_is_bit_exact(corpus, straight,
                                                                       tmp_path):
  workdir = str(tmp_path / "run")
  code, out, err = _start_and_signal(workdir, corpus, signal.SIGTERM, 3, 0.0,
                                     "--config.checkpoint_every_steps=1000")
  assert code == 0, err[-3000:]
  assert "SIGTERM received" in out
  stopped = int(out.split("Stopped at step ")[1].split()[0])
  assert 3 <= stopped < STEPS, out[-2000:]
  assert _checkpoints(workdir) == [stopped]  # saved at the step it stopped, off the schedule.
  assert "BLEU" not in out  # no final test for a stopped run.

  out = _run(workdir, corpus, f"--config.num_train_steps={STEPS}",
             "--config.checkpoint_every_steps=1000")
  assert f"Resuming from checkpoint at step {stopped}" in out
  assert _losses(workdir) == straight  # every step, bit for bit, dropout included.


def test_sigkill_at_a_random_moment_then_resume(corpus, straight, tmp_path):
  workdir = str(tmp_path / "run")
  # A checkpoint every step, so the kill often lands in the middle of a save.
  code, _, _ = _start_and_signal(workdir, corpus, signal.SIGKILL, 2, random.uniform(0, 0.5),
                                 "--config.checkpoint_every_steps=1")
  assert code == -signal.SIGKILL
  committed = _checkpoints(workdir)
  out = _run(workdir, corpus, f"--config.num_train_steps={STEPS}",
             "--config.checkpoint_every_steps=1")
  resumed_at = int(out.split("Resuming from checkpoint at step ")[1].split()[0])
  assert committed and resumed_at >= max(committed) - 1  # the newest readable one.
  assert _losses(workdir) == straight  # steps logged before the kill are not repeated.


def test_resume_on_fewer_devices(corpus, straight, tmp_path):
  """8 devices -> 4 -> 1, the global batch kept at 8 rows: the same data, the same losses."""
  workdir = str(tmp_path / "run")
  # Wall-clock saves: a microsecond interval saves every step; the last 3 are kept.
  _run(workdir, corpus, "--config.num_train_steps=10", "--config.checkpoint_every_steps=1000",
       "--config.checkpoint_every_seconds=0.000001")
  assert _checkpoints(workdir) == [8, 9, 10]
  out = _run(workdir, corpus, "--config.num_train_steps=20", devices=4)
  assert "Resuming from checkpoint at step 10" in out and "'data': 4" in out
  out = _run(workdir, corpus, "--config.num_train_steps=30", devices=1)
  assert "Resuming from checkpoint at step 20" in out and "'data': 1" in out
  losses = _losses(workdir)
  assert sorted(losses) == list(range(1, 31))
  for step, loss in losses.items():
    assert loss == pytest.approx(straight[step], rel=1e-4), step
