"""The study: Optuna's, in a database that every worker of the sweep shares.

--study=DIR: a SQLite file DIR/study.db, the trials' workdirs under DIR/trials. Workers on
this machine take turns through a lock file, so that together they run --trials trials and
none twice. --study=URL (postgresql://..., any SQLAlchemy URL): workers on several machines;
the trials' workdirs go under --trials_dir (a shared folder), and two workers asking at the
same moment may run a trial past --trials.

A trial whose worker died is found two ways: on this machine at once (its process is gone),
elsewhere through Optuna's heartbeat (none for HEARTBEAT_GRACE seconds). Either way it is
marked failed ("interrupted") and queued again with the same parameters and workdir, so the
retry resumes the run where its last checkpoint left it (at most MAX_RETRIES times).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import time
import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from transformer_jax.errors import ConfigError

HEARTBEAT_SECONDS = 10
HEARTBEAT_GRACE = 60
MAX_RETRIES = 2
STUDY_NAME = "sweep"


def _retry():
  """Queues a failed trial again with its parameters and user attributes (its workdir, so
  that the retry resumes it)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def is_url(study: str) -> bool:
  return "://" in study


def storage_url(study: str) -> str:
  return study if is_url(study) else f"sqlite:///{os.path.abspath(os.path.join(study, 'study.db'))}"


def open_study(study: str, *, direction: str | None = None, sampler=None, pruner=None,
               create: bool = True) -> optuna.Study:
  """The study at DIR or URL (made when `create` and missing); ConfigError if its
  objective's direction differs from `direction`. Workers that start together take turns
  making the database's tables (a SQLite study's lock file; for a URL, another try)."""
  import sqlalchemy.exc  # pylint: disable=import-outside-toplevel
  if not is_url(study):
    if not create and not os.path.exists(os.path.join(study, "study.db")):
      raise ConfigError(f"--study={study}: no study there (no study.db)")
    os.makedirs(study, exist_ok=True)
  for attempt in range(6):
    try:
      with turn(study):
        return _open(study, direction, sampler, pruner, create)
    except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.OperationalError):
      if attempt == 5:
        raise
      time.sleep(0.5 + random.random())  # another worker is making the tables.
  raise AssertionError("unreachable")


def _open(study: str, direction, sampler, pruner, create: bool) -> optuna.Study:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the heartbeat is "experimental" in Optuna.
    storage = RDBStorage(storage_url(study), heartbeat_interval=HEARTBEAT_SECONDS,
                         grace_period=HEARTBEAT_GRACE,
                         heartbeat_stale_trial_callback=_retry())
  if not create:
    return optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                             pruner=pruner)
  out = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                            pruner=pruner, direction=direction, load_if_exists=True)
  if out.direction.name.lower() != direction:
    raise ConfigError(f"--study={study} holds a study that {out.direction.name.lower()}s its "
                      f"objective; this sweep {direction}s")
  return out


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def fail_dead_trials(study: optuna.Study) -> list[int]:
  """Marks failed the running trials of this machine whose worker is gone, and queues each
  again (the storage's retry callback); returns their numbers."""
  host = socket.gethostname()
  dead = []
  for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
    worker = t.user_attrs.get("worker_pid")
    if t.user_attrs.get("host") != host or worker is None or _alive(int(worker)):
      continue
    try:
      study._storage.set_trial_user_attr(t._trial_id, "error", f"interrupted (worker {worker} "  # pylint: disable=protected-access
                                         "is gone)")
      if study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL):  # pylint: disable=protected-access
        _retry()(study, study._storage.get_trial(t._trial_id))  # pylint: disable=protected-access
        dead.append(t.number)
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
      continue  # another worker got there first.
  return dead


def counted(study: optuna.Study) -> int:
  """Trials that count against --trials: complete, pruned, running, and failed with a
  reason of their own (an interrupted trial, failed by its lost worker or heartbeat, does
  not count: its retry does)."""
  n = 0
  for t in study.get_trials(deepcopy=False):
    error = str(t.user_attrs.get("error", ""))
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) or (
        t.state == TrialState.FAIL and error and not error.startswith("interrupted")):
      n += 1
  return n


@contextlib.contextmanager
def turn(study_arg: str):
  """This machine's turn to start a trial (a lock file beside a SQLite study); yields a
  function that ends the turn early (the trial, once made, calls it)."""
  if is_url(study_arg):
    yield lambda: None
    return
  with open(os.path.join(study_arg, ".turn.lock"), "w", encoding="utf-8") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    done = []

    def release():
      if not done:
        fcntl.flock(f, fcntl.LOCK_UN)
        done.append(True)
    try:
      yield release
    finally:
      release()


def interrupted(study: optuna.Study) -> None:
  """This worker's trial, cut off by Ctrl-C or SIGTERM: marked failed ("interrupted") and
  queued again, to resume from its checkpoint when the sweep runs again."""
  me, host = os.getpid(), socket.gethostname()
  for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
    if (t.user_attrs.get("worker_pid") != me or t.user_attrs.get("host") != host
        or t.user_attrs.get("error")):
      continue
    storage = study._storage  # pylint: disable=protected-access
    storage.set_trial_user_attr(t._trial_id, "error", "interrupted (the sweep was stopped)")  # pylint: disable=protected-access
    if t.state == TrialState.RUNNING:
      storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # pylint: disable=protected-access
    _retry()(study, storage.get_trial(t._trial_id))  # pylint: disable=protected-access
