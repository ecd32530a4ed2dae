"""Two real processes on 127.0.0.1 (jax.distributed, 2 CPU devices each) run train.py."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import device_env, write_parallel_tsv
from test_train_e2e import REPO, TINY


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir, tsv):
  # Mesh data=2 x fsdp=2: the parameters are split across the two processes too.
  return [sys.executable, os.path.join(REPO, "train.py"),
          f"--config={os.path.join(REPO, 'configs', 'base.py')}", f"--workdir={workdir}",
          *TINY, "--config.data.source=files",
          f"--config.data.train_files=('{tsv}',)", "--config.mesh.data=2",
          "--config.mesh.fsdp=2", "--config.logical_axis_rules=fsdp",
          "--config.num_eval_steps=-1",  # the whole split, however it is divided.
          "--config.lr_schedule=rsqrt"]  # independent of num_train_steps: runs can be extended.


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  return {(r["step"], k): v for r in records for k, v in r.items()
          if k in ("train/loss", "eval/loss")}


def test_two_processes_train_like_one_and_only_process_0_logs(tmp_path):
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=40)
  workdir = str(tmp_path / "run")
  port = _free_port()
  common = _command(workdir, tsv) + ["--config.num_train_steps=4",
      f"--config.distributed.coordinator_address=127.0.0.1:{port}",
      "--config.distributed.num_processes=2"]
  procs = [subprocess.Popen(common + [f"--config.distributed.process_id={i}"],
                            env=device_env(2),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=300))
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "global batch 8 x 32" in outs[0][0]  # 2 per device x 4 devices over 2 processes.
  assert "Model:" not in outs[1][0]  # only process 0 reports.
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if "train/loss" in r] == [2, 4]  # written once.
  with open(os.path.join(workdir, "checkpoints", "4", "data", "metadata"), encoding="utf-8") as f:
    data_state = json.load(f)
  # Both processes' row positions, gathered into one record keyed by global row.
  assert data_state["global_batch_size"] == 8 and sorted(map(int, data_state["rows"])) == list(range(8))
  assert not any("Test set" in line for line in outs[1][0].splitlines())

  # The same job in one process on 4 devices: the same batches, so the same losses.
  single = str(tmp_path / "single")
  proc = subprocess.run(_command(single, tsv) + ["--config.num_train_steps=4"],
                        env=device_env(4),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  two, one = _losses(workdir), _losses(single)
  assert set(two) == set(one) == {(2, "train/loss"), (4, "train/loss"), (3, "eval/loss"),
                                  (4, "eval/loss")}
  for key in one:
    assert two[key] == pytest.approx(one[key], rel=1e-5), key

  # Elastic: the two-process run resumes in one process, and continues like the one-process run.
  for workdir_ in (workdir, single):
    proc = subprocess.run(_command(workdir_, tsv) + ["--config.num_train_steps=8"],
                          env=device_env(4), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resuming from checkpoint at step 4" in proc.stdout
  two, one = _losses(workdir), _losses(single)
  assert {k for k in one if k[1] == "train/loss"} == {(s, "train/loss") for s in (2, 4, 6, 8)}
  for key in one:
    assert two[key] == pytest.approx(one[key], rel=1e-5), key


def test_bad_distributed_config_is_named(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"),
                         f"--config={os.path.join(REPO, 'configs', 'base.py')}",
                         f"--workdir={tmp_path / 'w'}",
                         "--config.distributed.coordinator_address=127.0.0.1:1234",
                         "--config.distributed.num_processes=2",
                         "--config.distributed.process_id=2"],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "config.distributed.process_id=2" in proc.stderr
