"""Two real processes on 127.0.0.1 (jax.distributed, 2 CPU devices each) run train.py."""

import json
import os
import socket
import subprocess
import sys

from conftest import write_parallel_tsv
from test_train_e2e import REPO, TINY


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_and_only_process_0_logs(tmp_path):
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=40)
  workdir = str(tmp_path / "run")
  port = _free_port()
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  common = [sys.executable, os.path.join(REPO, "train.py"),
            f"--config={os.path.join(REPO, 'configs', 'base.py')}", f"--workdir={workdir}",
            *TINY, "--config.num_train_steps=4", "--config.data.source=files",
            f"--config.data.train_files=('{tsv}',)",
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            "--config.distributed.num_processes=2"]
  procs = [subprocess.Popen(common + [f"--config.distributed.process_id={i}"], env=env,
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
  data_files = set(os.listdir(os.path.join(workdir, "checkpoints", "4", "data")))
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= data_files  # each its own position.


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
