"""The workdir is checked and locked before a run writes anything into it."""

import os
import signal
import subprocess
import sys

import pytest

from transformer_jax.errors import ConfigError
from transformer_jax.train import workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ("import sys, time; from transformer_jax.train import workdir; "
        "workdir.lock(sys.argv[1]); print('locked', flush=True); time.sleep(120)")


def _holder(path):
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE,
                          text=True, cwd=REPO)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_a_second_run_on_a_held_workdir_is_refused_and_changes_nothing(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text('{"mine": true}\n')
  holder = _holder(run)
  try:
    proc = subprocess.run([sys.executable, "train.py", "--config=configs/base.py",
                           f"--workdir={run}"], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: --workdir='{run}' is in use by another run (pid {holder.pid}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (run / "config.json").read_text() == '{"mine": true}\n'
  finally:
    holder.kill()
    holder.wait()


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
  holder = _holder(tmp_path)
  with pytest.raises(ConfigError, match="in use by another run"):
    workdir.lock(str(tmp_path))
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  lock = workdir.lock(str(tmp_path))  # the file is still there; the hold is not.
  assert f"pid {os.getpid()}" in open(lock.path, encoding="utf-8").read()
  lock.release()
  workdir.lock(str(tmp_path)).release()


def test_a_file_where_the_workdir_should_be_is_named(tmp_path):
  path = tmp_path / "run"
  path.write_text("not a folder")
  with pytest.raises(ConfigError, match="is a file, not a folder"):
    workdir.prepare(str(path))
  assert path.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_a_read_only_workdir_is_named(tmp_path):
  os.chmod(tmp_path, 0o555)
  try:
    with pytest.raises(ConfigError, match="not writable"):
      workdir.prepare(str(tmp_path))
  finally:
    os.chmod(tmp_path, 0o755)


def _train(workdir, *extra):
  return subprocess.run([sys.executable, "train.py", "--config=configs/base.py",
                         f"--workdir={workdir}", *extra], capture_output=True, text=True,
                        timeout=300, cwd=REPO)


@pytest.mark.parametrize("name,content,words", [
    ("config.json", '{"model": {"kind": "decoder_lm"}}\n', "holds a 'decoder_lm' run"),
    ("config.json", '{"model": {"kind": "encoder_de', "is not valid JSON"),
    ("tokenizer.model", "not a sentencepiece model", "is damaged or not a sentencepiece"),
])
def test_a_damaged_or_foreign_workdir_is_named_and_left_alone(tmp_path, tsv_corpus, name,
                                                             content, words):
  run = tmp_path / "run"
  run.mkdir()
  (run / name).write_text(content)
  proc = _train(run, "--config.data.source=files", f"--config.data.train_files=('{tsv_corpus}',)",
                "--config.data.vocab_size=400")
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and words in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert (run / name).read_text() == content
  assert sorted(os.listdir(run)) == sorted([name, ".lock"])
