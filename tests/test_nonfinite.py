"""A non-finite loss stops the run before it is saved, and names the last good checkpoint."""

import hashlib
import json
import os

import pytest

from conftest import excerpt, train_tiny, write_parallel_tsv

pytestmark = pytest.mark.slow


def _train(workdir, tsv, *extra):
  return train_tiny(workdir, tsv, "--config.checkpoint_every_steps=2",
                    "--config.eval_every_steps=100", "--config.num_predict_examples=2", *extra)


def _digest(folder):
  out = {}
  for root, _, files in os.walk(folder):
    for f in files:
      path = os.path.join(root, f)
      out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
  return out


def test_a_diverging_run_stops_naming_the_last_good_checkpoint(tmp_path):
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=20)
  workdir = tmp_path / "run"
  proc = _train(workdir, tsv, "--config.num_train_steps=2")
  assert proc.returncode == 0, excerpt(proc.stderr)
  before = _digest(workdir / "checkpoints")
  # Resumed with an absurd learning rate: the parameters overflow within a few steps.
  proc = _train(workdir, tsv, "--config.num_train_steps=8", "--config.learning_rate=1e30",
                "--config.warmup_steps=0", "--config.lr_schedule=constant")
  assert proc.returncode == 2, excerpt(proc.stderr)
  assert "Traceback" not in proc.stderr
  error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1 and "became non-finite" in error[0]
  assert f"The last good checkpoint is step 2 in {workdir}/checkpoints" in error[0]
  assert "config.learning_rate=1e+30 too high" in error[0]
  assert _digest(workdir / "checkpoints") == before  # nothing saved, nothing changed.


def test_skipping_counts_the_non_finite_steps_and_finishes(tmp_path):
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=20)
  workdir = tmp_path / "run"
  proc = _train(workdir, tsv, "--config.num_train_steps=6", "--config.learning_rate=1e30",
                "--config.warmup_steps=0", "--config.lr_schedule=constant",
                "--config.max_skipped_nonfinite_steps=100")
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert "warning: skipped" in proc.stdout
  records = [json.loads(line) for line in open(workdir / "metrics.jsonl", encoding="utf-8")]
  skipped = [r["train/skipped_nonfinite_steps"] for r in records
             if "train/skipped_nonfinite_steps" in r]
  assert skipped and 0 < skipped[-1] <= 6
