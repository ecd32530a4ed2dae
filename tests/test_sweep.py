"""python -m transformer_jax.sweep on the toy kind (tests/toy_kind.py): real Optuna studies in
SQLite files, real train.py trials. A study runs, is killed mid-trial and resumes (the cut
trial again from its checkpoint), a poor trial is pruned at its first evaluation, a failing
trial is recorded with its reason while the study goes on, two workers share a study
without running a trial twice, and a bad space file is one error line before any trial."""

import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest

from conftest import REPO, excerpt

TOY = os.path.join(REPO, "tests", "toy_kind.py")
SPACE = '''
def get_space():
  return {"learning_rate": ("log_uniform", 3e-3, 3e-2), "model.mlp_dim": ("int", 16, 48)}
'''


def _space(tmp_path, text=SPACE, name="space.py"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _sweep(*args, wait=True):
  cmd = [sys.executable, "-m", "transformer_jax.sweep", f"--config={TOY}",
         "--trial_budget_seconds=60", "--objective=eval/accuracy:max", *args]
  if not wait:
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def _study(path):
  return optuna.load_study(study_name="sweep", storage=f"sqlite:///{path}/study.db")


def _runs(log_path):
  with open(log_path, encoding="utf-8") as f:
    return sum(line.startswith("$ ") for line in f)


def test_a_study_resumes_after_a_kill_and_reports(tmp_path):
  study = tmp_path / "study"
  args = [f"--space={_space(tmp_path)}", "--trials=3", f"--study={study}", "--pruner=none"]
  first = _sweep(*args, wait=False)
  deadline = time.time() + 300
  while time.time() < deadline:  # kill it (and its trial) once the second trial is training.
    if os.path.exists(study / "trials" / "0001" / "checkpoints"):
      break
    time.sleep(0.2)
  os.killpg(first.pid, signal.SIGKILL)
  first.wait()
  second = _sweep(*args)
  assert second.returncode == 0, excerpt(second.stderr)
  assert "queued again" in second.stdout and "again, resuming 0001" in second.stdout
  trials = _study(study).get_trials()
  states = [t.state.name for t in trials]
  assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1, states
  (cut,) = [t for t in trials if t.state.name == "FAIL"]
  assert cut.user_attrs["error"].startswith("interrupted")
  assert _runs(str(study / "trials" / "0001.log")) == 2  # the cut trial resumed in place.
  report = subprocess.run([sys.executable, "-m", "transformer_jax.sweep", "report",
                           f"--study={study}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert report.returncode == 0, excerpt(report.stderr)
  text = (study / "report" / "report.md").read_text()
  assert "## Best: trial" in text and "python train.py --config=" in text
  assert "--config.learning_rate=" in text and "interrupted" in text
  assert {"history.png", "parameters.png", "loss.png"} <= set(os.listdir(study / "report"))


def _setup(tmp_path, params):
  from transformer_jax.sweep import trial as trial_lib  # pylint: disable=import-outside-toplevel
  return trial_lib.TrialSetup(os.path.join(REPO, "train.py"), TOY, (), tuple(params),
                              str(tmp_path / "trials"), 60.0,
                              trial_lib.Objective("eval/accuracy", "maximize"))


def test_a_poor_trial_is_pruned_early_and_a_failing_one_recorded(tmp_path):
  from transformer_jax.sweep import space as space_lib, trial as trial_lib  # pylint: disable=import-outside-toplevel
  params = [space_lib.Param("learning_rate", "categorical", choices=(1e-2, 1e-7)),
            space_lib.Param("lr_schedule", "categorical", choices=("constant", "no_such"))]
  setup = _setup(tmp_path, params)
  study = optuna.create_study(direction="maximize",
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
  for lr, schedule in ((1e-2, "constant"), (1e-7, "constant"), (1e-2, "no_such")):
    study.enqueue_trial({"learning_rate": lr, "lr_schedule": schedule})
  study.optimize(lambda t: trial_lib.run_trial(t, setup), n_trials=3,
                 catch=(trial_lib.TrialFailed,))
  good, poor, bad = study.get_trials()
  assert good.state.name == "COMPLETE" and good.value > 0.9
  assert poor.state.name == "PRUNED" and poor.user_attrs["pruned_at"] == 30
  with open(os.path.join(poor.user_attrs["workdir"], "metrics.jsonl"), encoding="utf-8") as f:
    assert max(int(re.search(r'"step": (\d+)', l).group(1)) for l in f) < 60  # stopped early.
  assert bad.state.name == "FAIL"
  assert "lr_schedule" in _reason(bad) and "no_such" in _reason(bad)


def _reason(trial):
  log = trial.user_attrs["workdir"] + ".log"
  from transformer_jax.sweep import trial as trial_lib  # pylint: disable=import-outside-toplevel
  return trial_lib._reason(log, 2)  # pylint: disable=protected-access


def test_two_workers_share_a_study_and_run_no_trial_twice(tmp_path):
  study = tmp_path / "study"
  args = [f"--space={_space(tmp_path)}", "--trials=4", f"--study={study}", "--pruner=none"]
  workers = [_sweep(*args, wait=False) for _ in range(2)]
  outputs = [w.communicate(timeout=600) for w in workers]
  assert all(w.returncode == 0 for w in workers), [excerpt(o[1]) for o in outputs]
  trials = _study(study).get_trials()
  assert [t.number for t in trials] == [0, 1, 2, 3]
  assert all(t.state.name == "COMPLETE" for t in trials)
  ran = [set(re.findall(r"^trial (\d+):", out, re.M)) for out, _ in outputs]
  assert ran[0] and ran[1] and not ran[0] & ran[1], ran  # both worked, none twice.
  assert all(_runs(str(study / "trials" / f"{n:04d}.log")) == 1 for n in range(4))


@pytest.mark.parametrize("space,message", [
    ('def get_space():\n  return {"learning_rat": ("uniform", 0.1, 0.2)}',
     "'learning_rat': no such config field; did you mean learning_rate"),
    ('def get_space():\n  return {"learning_rate": ("uniform", 0.2, 0.1)}',
     "'learning_rate': the range [0.2, 0.1] is empty"),
    ('def get_space():\n  return {"warmup_steps": ("uniform", 1.0, 9.0)}',
     "'warmup_steps': uniform gives floats; the field holds int"),
    ('def get_space():\n  return {"learning_rate": ("log_uniform", 0.0, 0.1)}',
     "a log range needs low > 0"),
    ('def get_space():\n  return {"lr_schedule": ("categorical", [])}',
     "categorical takes one non-empty list"),
    ("x = 1", "defines no get_space()"),
])
def test_a_bad_space_is_one_error_line_before_any_trial(tmp_path, space, message):
  proc = _sweep(f"--space={_space(tmp_path, space)}", "--trials=2",
                f"--study={tmp_path / 'study'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert not (tmp_path / "study").exists()


def _initdb() -> str | None:
  import glob  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
  return found


@pytest.fixture
def postgres():
  """A PostgreSQL server of its own in a scratch folder, on a free port of 127.0.0.1."""
  import pathlib  # pylint: disable=import-outside-toplevel
  import pwd  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  import socket  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  from conftest import skip_without  # pylint: disable=import-outside-toplevel
  initdb = _initdb()
  if initdb is None:
    skip_without("PostgreSQL is not installed (apt-get install postgresql)")
  pg_ctl = os.path.join(os.path.dirname(initdb), "pg_ctl")
  # Not under pytest's tmp_path: its folders are the tester's alone, and the server's user
  # must reach its own.
  folder = pathlib.Path(tempfile.mkdtemp(prefix="transformer_jax_pg_"))
  prefix = []
  if os.getuid() == 0:  # the server refuses to run as root: as Debian's postgres user.
    try:
      user = pwd.getpwnam("postgres")
    except KeyError:
      skip_without("running as root, and there is no postgres user to run PostgreSQL as")
    os.chown(folder, user.pw_uid, user.pw_gid)
    prefix = ["runuser", "-u", "postgres", "--"]
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  data = str(folder / "data")
  subprocess.run([*prefix, initdb, "-D", data, "-A", "trust", "-U", "postgres"], check=True,
                 capture_output=True, timeout=120)
  subprocess.run([*prefix, pg_ctl, "-D", data, "-l", str(folder / "log"), "-w", "-o",
                  f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                 check=True, capture_output=True, timeout=120)
  yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
  subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "fast", "stop"], capture_output=True,
                 timeout=120)
  shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_study_in_postgresql(tmp_path, postgres):
  pytest.importorskip("psycopg")
  args = [f"--space={_space(tmp_path)}", "--trials=3", f"--study={postgres}",
          f"--trials_dir={tmp_path / 'trials'}", "--pruner=none"]
  workers = [_sweep(*args, wait=False) for _ in range(2)]
  outputs = [w.communicate(timeout=600) for w in workers]
  assert all(w.returncode == 0 for w in workers), [excerpt(o[1]) for o in outputs]
  trials = optuna.load_study(study_name="sweep", storage=postgres).get_trials()
  # No lock across machines: two workers asking at once may run one trial past --trials.
  assert 3 <= len(trials) <= 4 and all(t.state.name == "COMPLETE" for t in trials)
  ran = [set(re.findall(r"^trial (\d+):", out, re.M)) for out, _ in outputs]
  assert ran[0] and ran[1] and not ran[0] & ran[1], ran
  assert all(_runs(str(tmp_path / "trials" / f"{t.number:04d}.log")) == 1 for t in trials)


@pytest.mark.parametrize("name", ["space_base.py", "space_base_near.py"])
def test_the_shipped_spaces_hold_base_py_fields_and_enqueue_its_values(name):
  """The spaces in configs/ check out against configs/base.py, and --enqueue_config's first
  trial (the config's own values) lies inside each range."""
  import runpy  # pylint: disable=import-outside-toplevel
  from transformer_jax.sweep import space as space_lib  # pylint: disable=import-outside-toplevel
  config = runpy.run_path(os.path.join(REPO, "configs", "base.py"))["get_config"]()
  params = space_lib.load_space(os.path.join(REPO, "configs", name), config)
  own = space_lib.config_values(config, params)
  for p in params:
    if p.kind == "categorical":
      assert own[p.name] in p.choices, p.name
    else:
      assert p.low <= own[p.name] <= p.high, p.name
