"""Bad flags: one `error:` line naming the flag (and the nearest fields), exit code 2."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                        cwd=REPO, env=dict(os.environ))


@pytest.mark.parametrize("args,words", [
    (["--config.num_train_step=10"],
     ["--config.num_train_step: no such config field", "num_train_steps"]),
    (["--config.model.num_head=3"], ["--config.model.num_head", "model.num_heads"]),
    (["--config.modle.dtype=float32"], ["--config.modle.dtype", "model.dtype"]),
    (["--config.num_train_steps=ten"], ["--config.num_train_steps=ten", "int"]),
    (["--workdri=x"], ["workdri", "workdir"]),
])
def test_train_py_names_a_bad_flag_and_the_nearest_fields(args, words, tmp_path):
  proc = _run("train.py", "--config=configs/base.py", f"--workdir={tmp_path / 'w'}", *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  for w in words:
    assert w in lines[0]
  assert not (tmp_path / "w").exists()  # nothing started.


def test_a_missing_config_file_is_named():
  proc = _run("train.py", "--config=configs/no_such.py")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "error: --config=configs/no_such.py: no such file" in proc.stderr


def test_tools_report_a_bad_flag_value_the_same_way(tmp_path):
  proc = _run("-m", "transformer_jax.translate", f"--workdir={tmp_path}", "--beam_size=four")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "error: " in proc.stderr and "--beam_size=four" in proc.stderr


def test_quiet_orbax_drops_only_the_closed_event_loop_errors():
  code = ("import sys; from absl import logging; logging.set_verbosity(logging.WARNING); "
          "from transformer_jax.tools import cli; cli.quiet_orbax(); "
          "sys.excepthook(RuntimeError, RuntimeError('Event loop is closed'), None); "
          "import types; sys.unraisablehook(types.SimpleNamespace(exc_type=RuntimeError, "
          "exc_value=RuntimeError('Event loop is closed'), exc_traceback=None, err_msg=None, "
          "object=None)); "
          "sys.excepthook(RuntimeError, RuntimeError('a real bug'), None)")
  proc = _run("-c", code)
  assert "Event loop is closed" not in proc.stderr and "a real bug" in proc.stderr
