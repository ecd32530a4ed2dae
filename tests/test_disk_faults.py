"""A save that fails on a real full filesystem stops the run at once; the last good one restores."""

import os
import shutil
import subprocess

import pytest

from conftest import excerpt, write_parallel_tsv
from test_nonfinite import _train

pytestmark = pytest.mark.slow


def _mount_tmpfs(path, size):
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0


def test_a_full_disk_stops_the_run_and_the_last_good_checkpoint_resumes(tmp_path):
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=20)
  workdir = tmp_path / "run"
  checkpoints = workdir / "checkpoints"
  checkpoints.mkdir(parents=True)
  # Room for one checkpoint of the tiny model (about 0.45 MiB), not for two.
  if not _mount_tmpfs(checkpoints, "700k"):
    pytest.skip("this machine does not let the tests mount a size-limited tmpfs")
  try:
    proc = _train(workdir, tsv, "--config.num_train_steps=8")
    assert proc.returncode == 2, excerpt(proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, excerpt(proc.stderr)
    assert "Traceback" not in proc.stderr, excerpt(proc.stderr)
    assert f"saving checkpoint 4 in {checkpoints} failed: No space left on device" in errors[0]
    assert "the last complete checkpoint, step 2, is kept and restorable" in errors[0]
    # Reported at once: the run did not train on to its end.
    assert "step 8/8" not in proc.stdout
    kept = tmp_path / "kept"
    shutil.copytree(checkpoints / "2", kept / "2")
  finally:
    subprocess.run(["umount", str(checkpoints)], check=True)
  shutil.copytree(kept / "2", checkpoints / "2")
  proc = _train(workdir, tsv, "--config.num_train_steps=8")
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert "Resuming from checkpoint at step 2" in proc.stdout
  assert sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit())[-1] == 8
