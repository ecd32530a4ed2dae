"""Hyper-parameter search over train.py runs, on Optuna: TPE sampling, pruning of poor trials
from their evaluations, a study database that resumes and that several workers share.

  python -m transformer_jax.sweep --config=configs/base.py --space=SPACE.py --trials=N
      --trial_budget_seconds=S --study=DIR_OR_URL [--objective=eval/bleu:max]
      [--pruner=median|halving|none] [--seed=0] [--trials_dir=DIR] [--config.FIELD=VALUE ...]
  python -m transformer_jax.sweep report --study=DIR_OR_URL [--output=DIR]

Each trial is `python train.py --config=... --workdir=STUDY/trials/NNNN` with the space's
values as --config overrides (after the sweep's own --config.FIELD=VALUE ones), a budget
of --trial_budget_seconds, and no test split. Its evaluations (config.eval_every_steps)
report to the study; the pruner stops a poor trial early. A trial that fails (a bad
combination, non-finite loss, out of memory) is recorded with its one-line reason and the
study goes on. Running the command again continues the study; a trial cut off by a stopped
or killed worker runs again from its last checkpoint. Start it in several processes (or on
several machines with --study=postgresql://...) to work on one study together.

`report` writes STUDY/report/: report.md (the trials sorted by the objective, the best
trial's command line, parameter importances) and plots (the objective against each
parameter, the optimisation history, the best runs' curves).

Exit code 2 on a bad config, space, objective or study, before any trial runs.
"""

from __future__ import annotations

import os
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

from transformer_jax.tools import cli, flags as tool_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "The trials' config file.",
                                          lock_config=True)
_SPACE = flags.DEFINE_string("space", None, "The search space: a Python file with get_space().")
_TRIALS = flags.DEFINE_integer("trials", 10, "Trials in the study, all workers together.")
_BUDGET = flags.DEFINE_float("trial_budget_seconds", 120.0, "Each trial's training budget "
                             "(config.train_budget_seconds).")
_STUDY = flags.DEFINE_string("study", None, "A folder (SQLite study.db in it) or a database URL.",
                             required=True)
_OBJECTIVE = flags.DEFINE_string("objective", "", "METRIC:min|max (default: the config's "
                                 "best_checkpoint_metric and best_checkpoint_mode).")
_PRUNER = flags.DEFINE_enum("pruner", "median", ["median", "halving", "none"],
                            "median: stop a trial below the median of the others at the same "
                            "step; halving: successive halving; none.")
_SEED = flags.DEFINE_integer("seed", 0, "The sampler's seed.")
_TRIALS_DIR = flags.DEFINE_string("trials_dir", None, "Where trial workdirs go (default: "
                                  "STUDY/trials; needed with a database URL).")
_TRAIN_PY = flags.DEFINE_string("train_py", None, "The train.py to run (default: the one "
                                "beside this package).")
_OUTPUT = flags.DEFINE_string("output", None, "report: where it goes (default: STUDY/report).")
_ENQUEUE_CONFIG = flags.DEFINE_bool("enqueue_config", False, "A new study's first trial takes "
                                    "the config's own values of the searched fields (the "
                                    "defaults to beat, measured at the trials' budget).")


def _train_py() -> str:
  if _TRAIN_PY.value:
    path = _TRAIN_PY.value
  else:
    import transformer_jax  # pylint: disable=import-outside-toplevel
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        transformer_jax.__file__))), "train.py")
  if not os.path.isfile(path):
    raise tool_flags.BadInput(f"--train_py={path}: no such file (give the train.py of your "
                              "checkout)")
  return path


def _setup(study_arg: str):
  """Everything checked before a trial runs: config, space, objective, folders."""
  from transformer_jax import kinds  # pylint: disable=import-outside-toplevel
  from transformer_jax.sweep import space as space_lib, study as study_lib, trial as trial_lib  # pylint: disable=import-outside-toplevel
  if _SPACE.value is None:
    raise tool_flags.BadInput("give --space=FILE (a Python file whose get_space() returns the "
                              "fields to search)")
  config_path = flags.FLAGS["config"].config_filename
  if config_path is None:
    raise tool_flags.BadInput("give --config=FILE (the trials' config)")
  try:
    config = _CONFIG.value
  except Exception as e:  # pylint: disable=broad-except
    raise tool_flags.BadInput(f"--config={config_path}: cannot load it: {type(e).__name__}: "
                              f"{e}") from e
  params = tuple(space_lib.load_space(_SPACE.value, config))
  objective = trial_lib.Objective.parse(_OBJECTIVE.value, config)
  kind = kinds.get(config.model.kind)
  logged = [f"eval/{m}" for m in kind.eval_metrics(config)]
  if objective.metric not in logged:
    raise tool_flags.BadInput(f"--objective={objective.metric}: a {kind.name!r} run logs "
                              f"{', '.join(logged)} at each evaluation")
  if _TRIALS.value < 1 or _BUDGET.value <= 0:
    raise tool_flags.BadInput("--trials must be >= 1 and --trial_budget_seconds > 0")
  if study_lib.is_url(study_arg) and not _TRIALS_DIR.value:
    raise tool_flags.BadInput("--study is a database URL: give --trials_dir (a folder every "
                              "worker reaches) for the trials' workdirs")
  fixed = tuple(a for a in sys.argv[1:] if a.startswith("--config."))
  overlap = {a.split("=", 1)[0][len("--config."):] for a in fixed} & {p.name for p in params}
  if overlap:
    raise tool_flags.BadInput(f"--config.{sorted(overlap)[0]} is set on the command line and "
                              "searched by the space: choose one")
  trials_dir = _TRIALS_DIR.value or os.path.join(study_arg, "trials")
  return trial_lib.TrialSetup(_train_py(), config_path, fixed, params, trials_dir, _BUDGET.value,
                              objective)


def _sweep() -> None:
  import optuna  # pylint: disable=import-outside-toplevel
  from transformer_jax.sweep import study as study_lib, trial as trial_lib  # pylint: disable=import-outside-toplevel
  optuna.logging.set_verbosity(optuna.logging.ERROR)
  study_arg = _STUDY.value
  setup = _setup(study_arg)
  n = _TRIALS.value
  sampler = optuna.samplers.TPESampler(seed=_SEED.value, n_startup_trials=max(2, min(10, n // 3)))
  pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=2),
            "halving": optuna.pruners.SuccessiveHalvingPruner(),
            "none": optuna.pruners.NopPruner()}[_PRUNER.value]
  study = study_lib.open_study(study_arg, direction=setup.objective.direction, sampler=sampler,
                               pruner=pruner)
  study.set_user_attr("objective", setup.objective.metric)
  if _ENQUEUE_CONFIG.value and not study.get_trials(deepcopy=False):
    from transformer_jax.sweep import space as space_lib  # pylint: disable=import-outside-toplevel
    own = space_lib.config_values(_CONFIG.value, setup.params)
    study.enqueue_trial(own, user_attrs={"note": "the config's own values"})
    print(f"trial 0 takes the config's own values: {' '.join(space_lib.override_args(own))}",
          flush=True)
  print(f"study {study_arg}: {n} trials of {setup.budget_seconds:g}s, "
        f"{setup.objective.direction} {setup.objective.metric} over "
        f"{'; '.join(p.describe() for p in setup.params)}", flush=True)

  def stop(signum, frame):
    del frame
    raise KeyboardInterrupt(signal.Signals(signum).name)
  signal.signal(signal.SIGTERM, stop)
  try:
    while True:
      again = study_lib.fail_dead_trials(study)
      if again:
        print(f"trials {again}: their worker is gone; queued again", flush=True)
      with study_lib.turn(study_arg) as release:
        if study_lib.counted(study) >= n:
          break
        study.optimize(_objective(setup, release), n_trials=1,
                       catch=(trial_lib.TrialFailed,), gc_after_trial=False)
  except KeyboardInterrupt:
    study_lib.interrupted(study)
    print("stopped: the trial in flight will run again from its checkpoint; run the same "
          "command to continue the study", flush=True)
    return
  _summary(study, setup)


def _objective(setup, release):
  import optuna  # pylint: disable=import-outside-toplevel
  from transformer_jax.sweep import trial as trial_lib  # pylint: disable=import-outside-toplevel

  def objective(trial):
    trial.set_user_attr("worker_pid", os.getpid())
    trial.set_user_attr("error", "")  # a retry's copy of the interrupted trial's reason.
    release()  # the trial exists: the next worker may ask for its own.
    try:
      value = trial_lib.run_trial(trial, setup)
    except optuna.TrialPruned as e:
      print(f"trial {trial.number}: {e}", flush=True)
      raise
    except trial_lib.TrialFailed as e:
      trial.set_user_attr("error", str(e))
      print(f"trial {trial.number} failed: {e}", flush=True)
      raise
    except (KeyboardInterrupt, SystemExit):
      raise
    except Exception as e:  # pylint: disable=broad-except
      reason = f"{type(e).__name__}: {e}".splitlines()[0]
      trial.set_user_attr("error", reason)
      print(f"trial {trial.number} failed: {reason}", flush=True)
      raise trial_lib.TrialFailed(reason) from e
    print(f"trial {trial.number}: {setup.objective.metric}={value:.4f}", flush=True)
    return value
  return objective


def _summary(study, setup) -> None:
  from optuna.trial import TrialState  # pylint: disable=import-outside-toplevel
  states = [t.state for t in study.get_trials(deepcopy=False)]
  complete = states.count(TrialState.COMPLETE)
  print(f"study done: {complete} complete, {states.count(TrialState.PRUNED)} pruned, "
        f"{states.count(TrialState.FAIL)} failed", flush=True)
  if complete:
    best = study.best_trial
    print(f"best: trial {best.number}, {setup.objective.metric}={best.value:.4f}: "
          f"{' '.join(best.user_attrs.get('overrides', []))}", flush=True)
  print(f"report: python -m transformer_jax.sweep report --study={_STUDY.value}", flush=True)


def main(argv):
  with tool_flags.tool_main():
    if argv[1:] == ["report"]:
      from transformer_jax.sweep import report  # pylint: disable=import-outside-toplevel
      print(report.write_report(_STUDY.value, _OUTPUT.value), flush=True)
      return
    if len(argv) > 1:
      raise tool_flags.BadInput(f"unexpected arguments: {argv[1:]} (the one command is "
                                "'report')")
    _sweep()


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
