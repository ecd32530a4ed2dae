"""The training loop: the one place with side effects in the middle of training.

config -> validate -> mesh -> task (data, tokenizer, grain pipeline) -> born-sharded
state (or restored checkpoint, restore.py) -> jitted steps -> log / eval / checkpoint
-> the task's test-split figures (BLEU for translation, perplexity for LMs, accuracy
and F1 for classifiers).

Each step reads: dispatch -> log (train_log.py: metrics read one step late, the
non-finite guard of guard.py) -> refit the budget (schedule.py) -> what is due
(cadence.py) -> evaluate / save -> stop. The cross-process agreements come in the
same order on every process and every step: the budget's (inside the refit, on its
refit steps), then the stop request's and the save clock's.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import ml_collections

from transformer_jax import kinds, pretrained
from transformer_jax.checkpoint import manager as checkpoint_lib
from transformer_jax.compress import quant
from transformer_jax.config import cache_dirs
from transformer_jax.observe import profiling, timing
from transformer_jax.observe import summary as summary_lib
from transformer_jax.observe import writers as metric_writers
from transformer_jax.parallel import agreement, memory, sharding
from transformer_jax.train import cadence, preemption
from transformer_jax.train import workdir as workdir_lib
from transformer_jax.train.guard import Guard
from transformer_jax.train.restore import restore_or_init
from transformer_jax.train.run import Run
from transformer_jax.train.schedule import Schedule
from transformer_jax.train.train_log import TrainLog


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       started: float | None = None) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir`; returns the final metrics.

  `started` (time.monotonic() at process start) makes `time/total` and `time/startup`
  count the imports too."""
  phases = timing.Phases(started)
  profiling.listen_for_compiles()
  hf_folder = pretrained.apply_to_config(config)  # the folder's architecture, checked.
  kinds.validate(config)  # the fields alone, before any device is touched.
  cache_dirs.enable_compilation_cache(config.compilation_cache_dir)
  sharding.initialize_distributed(config)
  sharding.validate_devices(config, jax.device_count(), jax.process_count())
  primary = jax.process_index() == 0
  # Checked and locked (by the primary process) before anything in it is written.
  lock = workdir_lib.prepare(workdir, primary)
  try:
    return _train_in(config, workdir, phases, primary, hf_folder)
  finally:
    if lock is not None:
      lock.release()


def _train_in(config, workdir: str, phases: timing.Phases, primary: bool, hf_folder):
  workdir_lib.check_saved_config(config, workdir)
  run = Run(config, workdir, phases)
  writer = metric_writers.MetricWriter(workdir, enabled=primary)
  ckpt = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), config.max_checkpoints_to_keep,
      keep_best=config.keep_best_checkpoints, best_metric=config.best_checkpoint_metric,
      best_mode=config.best_checkpoint_mode)
  try:
    schedule = Schedule(config, workdir, primary, phases)  # prints the budget's record.
    fresh = ckpt.latest_step() is None
    with run.programs.context():
      if schedule.total > 0:  # (num_train_steps=0 trains nothing: no train step to compile.)
        with phases.time("compile"):
          run.compile_train_step()
      with phases.time("init"):
        state, restored_metadata = restore_or_init(config, run, ckpt, writer, hf_folder)
      if primary:  # only now: a run that cannot restore leaves the workdir's record alone.
        workdir_lib.write_config(config, workdir)
      _describe(run, state, workdir)
      start = int(jax.device_get(state.step))
      if schedule.is_complete(start, fresh):
        return {}
      state = schedule.settle(state, start, restored_metadata)
      with preemption.StopRequest() as stop:
        return _train_loop(config, run, state, start, writer, ckpt, stop, phases, schedule)
  finally:
    ckpt.close()
    writer.close()


def _describe(run: Run, state, workdir: str) -> None:
  """The model's line and table (printed), and WORKDIR/model.md."""
  if not run.primary:
    return
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  print(run.describe(num_params, quant.num_values(state.frozen)), flush=True)
  print(summary_lib.console_table(run.programs), flush=True)
  with open(os.path.join(workdir, "model.md"), "w", encoding="utf-8") as f:
    f.write(summary_lib.model_markdown(run.programs))


@dataclasses.dataclass(frozen=True)
class _Parts:
  """What the loop works with; none of it is rebound while the loop runs."""
  config: ml_collections.ConfigDict
  run: Run
  writer: metric_writers.MetricWriter
  ckpt: checkpoint_lib.Checkpointer
  phases: timing.Phases
  schedule: Schedule
  log: TrainLog
  profiler: profiling.StepProfiler
  final: dict  # the metrics train_and_evaluate returns: the last of each.


def _train_loop(config, run: Run, state, start: int, writer, ckpt,
                stop: preemption.StopRequest, phases: timing.Phases, schedule: Schedule):
  """Steps `start` .. `schedule.total` - 1 (a total that a budget moves while training)."""
  final: dict[str, float] = {}
  log = TrainLog.for_run(run, writer, Guard(config, ckpt, start), start, schedule.total, final)
  profiler = profiling.StepProfiler(config.profile_steps, run.workdir, enabled=run.primary)
  p = _Parts(config, run, writer, ckpt, phases, schedule, log, profiler, final)
  schedule.start_clock()
  if start == schedule.total:  # a fresh run of num_train_steps=0: its starting weights.
    _evaluate_and_save(p, state, start, cadence.Due(log=False, eval=True, save=True,
                                                    stop=False))
  last_save = time.monotonic()
  step = start
  while step < schedule.total:
    state, metrics = _dispatch(p, state, step, first=step == start)
    log.after_dispatch(metrics)  # writes the log step before it, read one step late.
    ckpt.check()  # a save that failed in the background stops the run now.
    done = step + 1
    state = schedule.maybe_refit(state, done, metrics)  # agreed across processes.
    log.total = schedule.total
    time_due = cadence.save_clock_due(config, last_save, time.monotonic())
    stopping, time_due = agreement.any_process(stop.requested, time_due)
    due = cadence.due(config, done, schedule.total, time_due=time_due, stopping=stopping)
    if due.log:
      log.mark(done)
    if due.eval or due.save:
      log.settle(done)  # none of the steps may go into a checkpoint unchecked.
      _evaluate_and_save(p, state, done, due)
      if due.save:
        last_save = time.monotonic()
      log.reset_clock(done)  # evaluating and saving are not training time.
    if due.stop:
      return _finish_stopped(p, done, stop)
    step = done
  return _finish(p, state)


def _dispatch(p: _Parts, state, step: int, first: bool):
  """Runs train step `step` on the next batch: (state, its metrics, not waited for).
  The first step's compile is timed apart (one wait for its result)."""
  batch = p.run.global_batch(next(p.run.train_iter))
  p.profiler.before(step)
  if first:
    with p.phases.time("first_step"):
      try:
        state, metrics = p.run.train_step(state, batch)
        jax.block_until_ready(metrics)
      except Exception as e:  # pylint: disable=broad-except
        if memory.is_out_of_memory(e):  # an allocator that finds less than XLA counted.
          raise memory.from_xla(e, p.config) from None
        raise
  else:
    state, metrics = p.run.train_step(state, batch)
  p.profiler.after(step, metrics)
  return state, metrics


def _evaluate_and_save(p: _Parts, state, done: int, due: cadence.Due) -> None:
  eval_metrics = None
  if due.eval:
    with p.phases.time("eval"):
      eval_metrics = {f"eval/{k}": v for k, v in p.run.evaluate(
          p.run.programs.model_params(state)).items()}
    p.writer.write(done, eval_metrics)
    p.final.update(eval_metrics)
    if p.run.primary:
      print("  eval: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()), flush=True)
  if due.save:
    with p.phases.time("checkpoint"):
      # An adapter run's frozen base stays out of its checkpoints (rebuilt on resume).
      p.ckpt.save(done, state.replace(frozen=None), checkpoint_lib.global_data_state(p.run.train_iter),
                  p.schedule.metadata(p.run.metadata()), metrics=eval_metrics)


def _end_loop(p: _Parts) -> None:
  p.profiler.stop()
  p.schedule.stop_clock()


def _finish_stopped(p: _Parts, done: int, stop: preemption.StopRequest) -> dict[str, float]:
  """After the step a stop request saved: waits for the save, reports the time."""
  _end_loop(p)
  with p.phases.time("checkpoint"):
    p.ckpt.wait()
  _report_time(p, done, {})
  if p.run.primary:
    print(f"Stopped at step {done} ({stop.signal_name or 'another process was signalled'}); "
          f"checkpoint saved in {p.ckpt.directory}. Run the same command to resume.",
          flush=True)
  return p.final


def _finish(p: _Parts, state) -> dict[str, float]:
  """After the last step: the last log, the budget's record, the test split, the time."""
  p.log.flush()
  _end_loop(p)
  p.schedule.finish()
  with p.phases.time("checkpoint"):
    p.ckpt.wait()
  total = p.schedule.total
  record = {}
  if p.config.test_at_end:
    with p.phases.time("test"):
      record = p.run.task.final_test(p.run, p.run.programs.model_params(state), total)
  _report_time(p, total, record)
  return p.final


def _report_time(p: _Parts, step: int, record: dict) -> None:
  """Writes `record` with the time split (the run's last lines of metrics.jsonl: the
  task's `examples`, if any, go on a line of their own)."""
  p.writer.write_examples(step, record.pop("examples", None) or [])
  record = {**record, **p.phases.record(), **profiling.compile_seconds()}
  p.writer.write(step, record)
  p.final.update(record)
  if p.run.primary:
    print(p.phases.summary(), flush=True)
