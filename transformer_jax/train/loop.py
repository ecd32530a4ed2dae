"""The training loop: the one place with side effects in the middle of training.

config -> validate -> mesh -> task (data, tokenizer, grain pipeline) -> born-sharded
state (or restored checkpoint) -> jitted steps -> log / eval / checkpoint -> the
task's test-split figures (BLEU for translation, perplexity for LMs, accuracy and
F1 for classifiers).
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections

from transformer_jax.metrics import summaries
from transformer_jax.checkpoint import manager as checkpoint_lib
from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax import kinds
from transformer_jax.train import budget, optim, preemption, steps
from transformer_jax.config import cache_dirs
from transformer_jax.parallel import memory, sharding
from transformer_jax.observe import writers as metric_writers, profiling, timing
from transformer_jax import pretrained
from transformer_jax.observe import summary as summary_lib
from transformer_jax.train.run import Run, sum_metrics
from transformer_jax.errors import NumericalError
from transformer_jax.train import workdir as workdir_lib


def _is_ready(tree) -> bool:
  return all(x.is_ready() for x in jax.tree.leaves(tree))


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
    fixed = _recorded_budget(config, workdir, primary)
    with run.programs.context():
      with phases.time("compile"):
        run.compile_train_step()
      with phases.time("init"):
        state, restored_metadata = _restore_or_init(config, run, ckpt, writer, hf_folder)
      if primary:  # only now: a run that cannot restore leaves the workdir's record alone.
        workdir_lib.write_config(config, workdir)
      num_params = sum(x.size for x in jax.tree.leaves(state.params))
      start = int(jax.device_get(state.step))
      if primary:
        print(run.describe(num_params), flush=True)
        print(summary_lib.console_table(run.programs), flush=True)
        with open(os.path.join(workdir, "model.md"), "w", encoding="utf-8") as f:
          f.write(summary_lib.model_markdown(run.programs))
      total = config.num_train_steps if fixed is None else min(fixed, config.num_train_steps)
      if start >= total:
        # What stopped it: the budget's recorded count, or the step count (the cap).
        longer = ("config.train_budget_seconds" if fixed is not None
                  and fixed <= config.num_train_steps else "config.num_train_steps")
        print(f"The run in {workdir} is complete at step {start}; raise {longer} to train "
              "longer.", flush=True)
        return {}
      state, total, fitter, spent = _schedule_end(config, state, start, total, fixed,
                                                  restored_metadata)
      with preemption.StopRequest() as stop:
        return _train_loop(config, run, state, start, total, writer, ckpt, primary, stop,
                           phases, fitter, spent)
  finally:
    ckpt.close()
    writer.close()


def _recorded_budget(config, workdir: str, primary: bool) -> int | None:
  """With config.train_budget_seconds > 0: the step count that the workdir's record
  fixed for it, or None while it is still to be fitted (printed either way)."""
  if config.train_budget_seconds <= 0:
    return None
  fit = budget.recorded_steps(config, workdir)
  if primary:
    head = f"Training budget {config.train_budget_seconds:g} s: "
    if fit is None:
      print(head + "the step count is fitted while training (at most "
            f"config.num_train_steps={config.num_train_steps})", flush=True)
    else:
      cap = (f"; capped at config.num_train_steps={config.num_train_steps}"
             if config.num_train_steps < fit else "")
      print(head + f"{fit} steps fit (fixed by {budget.RECORD}){cap}", flush=True)
  return fit


def _schedule_end(config, state, start: int, total: int, fixed: int | None, metadata: dict):
  """(state with the schedule ending at the run's step count, that count, the budget's
  Fitter or None, the budget's seconds spent before). Without a budget the count is
  num_train_steps (a raised one moves the end on a resume); with one, the recorded
  count, or one fitted from where a checkpoint left it (seconds spent, step time)."""
  fitter, spent = None, float(metadata.get(budget.SPENT_KEY, 0.0))
  if config.train_budget_seconds > 0:
    fitter = budget.Fitter(config.train_budget_seconds, config.num_train_steps,
                           metadata.get(budget.STEP_KEY))
    if fixed is None:
      total = fitter.count(start, spent)
    else:
      fitter.fixed = True
  if optim.horizon_of(state.opt_state) != total:
    state = state.replace(opt_state=optim.with_horizon(state.opt_state, total))
  return state, total, fitter, spent


def _is_compressed(ckpt, step: int) -> bool:
  try:
    return "compression" in ckpt.metadata(step)
  except Exception:  # pylint: disable=broad-except
    return False  # unreadable: restore_latest below names it and falls back.


def _restore_or_init(config, run: Run, ckpt, writer, hf_folder=None):
  """(state, its checkpoint's metadata): the latest readable checkpoint, or fresh
  (optionally config.init_from) parameters and no metadata.

  A compressed latest checkpoint (the compress tool's: parameters only) is fine-tuned
  from: its parameters as floats, fresh optimizer state, the step counted on."""
  latest = ckpt.latest_step()
  if latest is not None and _is_compressed(ckpt, latest):
    state = run.init_state()
    params, _ = checkpoint_params.load_params(ckpt.directory, latest, state.params)
    run.train_iter = run.train_stream(config.seed + latest)  # no data position saved.
    print(f"Fine-tuning from the compressed checkpoint at step {latest} in {ckpt.directory} "
          "(parameters as floats, fresh optimizer state)", flush=True)
    return state.replace(params=params, step=jax.numpy.asarray(latest, state.step.dtype)), {}
  restored = ckpt.restore_latest(run.programs.abstract_state)
  if restored is not None:
    step, state, data_state, metadata = restored
    run.restore_data(data_state, step)
    writer.truncate_after(step)  # steps logged after the checkpoint will be logged again.
    print(f"Resuming from checkpoint at step {step} in {ckpt.directory}", flush=True)
    return state, metadata
  state = run.init_state()
  source = config.init_from.workdir
  if source:
    params, taken = checkpoint_params.load_params(source, config.init_from.step, state.params,
                                                  config.init_from.params)
    state = state.replace(params=params)
    total = len(jax.tree.leaves(state.params))
    print(f"Initialised {len(taken)} of {total} parameter arrays from {source}", flush=True)
  if hf_folder is not None:
    params, taken, fresh = pretrained.load_into(state.params, hf_folder,
                                                run.programs.model_config,
                                                config.data.tokenizer_path)
    state = state.replace(params=params)
    print(f"Initialised {len(taken)} of {len(taken) + len(fresh)} parameter arrays from "
          f"{hf_folder.path}"
          + (f"; fresh: {', '.join(fresh)}" if fresh else ""), flush=True)
  return state, {}


def _train_loop(config, run: Run, state, start: int, total: int, writer, ckpt, primary: bool,
                stop: preemption.StopRequest, phases: timing.Phases,
                fitter: budget.Fitter | None, spent_before: float):
  """Steps `start` .. `total` - 1; with a `fitter`, `total` follows the budget (budget.py)
  and `spent_before` is the budget's seconds spent before this process's run."""
  progress = metric_writers.Progress(total, start, enabled=primary)
  final: dict[str, float] = {}
  pending = []
  to_log = None  # (step, metrics) of a log step, fetched one step late.
  # Throughput: `clock` is when steps up to `clock_step` were known to be done. A
  # step's metrics are read after the next step was dispatched; on a backend that
  # runs steps synchronously (the CPU) that next step is then done too.
  clock, clock_step = time.monotonic(), start
  unit = run.kind.unit
  skipped = 0  # steps skipped for a non-finite loss or gradient (this process's run).
  checked_through = start  # steps up to here are known finite (checked before a save).

  def check_finite(sums, first: int, last: int, count: bool = True) -> None:
    """Counts non-finite steps among steps first..last (`count`: else only checks, for
    steps that a later log counts); too many stop the run."""
    nonlocal skipped, checked_through
    bad = int(round(float(sums.get("nonfinite_sum", 0))))
    if not bad:
      if not count:
        checked_through = last
      return
    first = max(first, checked_through + 1)  # steps a pre-save check found finite.
    so_far = skipped + bad
    if so_far <= config.max_skipped_nonfinite_steps:
      if count:
        skipped = so_far
        print(f"warning: skipped {bad} step(s) with a non-finite loss or gradient between "
              f"steps {first} and {last} ({so_far} of at most "
              f"{config.max_skipped_nonfinite_steps})", flush=True)
      return
    ckpt.wait()
    good = ckpt.latest_step()
    kept = (f"The last good checkpoint is step {good} in {ckpt.directory} (kept; running the "
            "same command resumes from it)" if good is not None else "No checkpoint was saved")
    raise NumericalError(
        f"the training loss or gradient became non-finite (NaN or inf) between steps {first} "
        f"and {last}; stopped without saving it. {kept}. Likely causes: "
        f"config.learning_rate={config.learning_rate} too high (try a third of it, or more "
        "warmup_steps), "
        + (f"model.dtype={config.model.dtype!r} overflowing (try float32), "
           if config.model.dtype != "float32" else "")
        + "or bad data. config.max_skipped_nonfinite_steps=N skips up to N such steps instead")

  def flush(entry, next_metrics=None):
    nonlocal clock, clock_step
    log_step, metrics_list = entry
    # Fetched first (waits for step `log_step`), then summed on the host: one
    # transfer per step instead of a chain of small device additions.
    sums = sum_metrics(jax.device_get(metrics_list))
    now = time.monotonic()
    done_through = log_step + int(next_metrics is not None and _is_ready(next_metrics))
    steps_timed, seconds = done_through - clock_step, now - clock
    clock, clock_step = now, done_through
    summary = summaries.summarize(sums, num_steps=len(metrics_list))
    check_finite(sums, log_step - len(metrics_list) + 1, log_step)
    count = float(sums["units_sum"])
    record = {"train/loss": summary["loss"], "train/nll": summary["nll"],
              "train/accuracy": summary["accuracy"], "train/grad_norm": summary["grad_norm"],
              "train/learning_rate": float(run.programs.schedule(log_step - 1, total))}
    if "ctc" in summary:  # a speech model's CTC head.
      record["train/ctc"] = summary["ctc"]
    if config.max_skipped_nonfinite_steps:
      record["train/skipped_nonfinite_steps"] = skipped
    rate = None
    if steps_timed > 0 and seconds > 0:  # else no step finished in between: no figure.
      record["train/steps_per_sec"] = steps_timed / seconds
      rate = count / len(metrics_list) * record["train/steps_per_sec"]
      record[f"train/{unit}_per_sec"] = rate
      if run.peak_flops:
        record["train/mfu"] = (run.programs.train_flops * record["train/steps_per_sec"]
                               / run.peak_flops)
    writer.write(log_step, record)
    progress.update(log_step, summary["loss"], rate, unit)
    final.update(record)

  def train_seconds() -> float:
    """The loop's time so far not spent in its first step, evaluating or saving."""
    elsewhere = sum(phases.seconds[k] - before[k] for k in before)
    return max(time.monotonic() - loop_start - elsewhere, 0.0)

  def end_loop() -> None:
    profiler.stop()
    phases.seconds["train"] += train_seconds()

  def fit_budget(done: int, metrics) -> None:
    """Moves `total`, and the schedule's end with it, to the steps that fit. Waits for
    step `done` first: dispatch runs ahead of the device (on a CPU too), and the time
    must count the steps done, not the steps dispatched."""
    nonlocal total, state
    jax.block_until_ready(metrics)
    spent = spent_before + train_seconds()
    count, due = budget.agree(*fitter.fit(done, spent))
    if count is not None and count != total:
      total = progress.total = count
      state = state.replace(opt_state=optim.with_horizon(state.opt_state, total))
    if due:  # the count is fixed now.
      fix_count(spent)

  def fix_count(spent: float) -> None:
    """Records the count: from here on a resume is exact."""
    if primary:
      budget.write_record(config, run.workdir, total, fitter.step_seconds, spent)
      timed = (f"{fitter.step_seconds * 1e3:.1f} ms per step lately"
               if fitter.step_seconds else "no step timed")
      print(f"Training budget {config.train_budget_seconds:g} s: {total} steps fit ({timed}; "
            f"fixed in {budget.RECORD})", flush=True)
    fitter.fixed = True

  def metadata() -> dict:
    """The run's, and with a budget its seconds spent and the last step time (which
    outlives the fit: another budget on a resume starts from it)."""
    if config.train_budget_seconds <= 0:
      return run.metadata()
    return {**run.metadata(), budget.SPENT_KEY: spent_before + train_seconds(),
            budget.STEP_KEY: fitter.step_seconds if fitter is not None else None}

  def report_time(step: int, record: dict) -> None:
    """Writes `record` with the time split (the run's last lines of metrics.jsonl: the
    task's `examples`, if any, go on a line of their own)."""
    writer.write_examples(step, record.pop("examples", None) or [])
    record = {**record, **phases.record(), **profiling.compile_seconds()}
    writer.write(step, record)
    final.update(record)
    if primary:
      print(phases.summary(), flush=True)

  last_save = loop_start = time.monotonic()
  before = {k: phases.seconds[k] for k in ("eval", "checkpoint", "first_step")}
  profiler = profiling.StepProfiler(config.profile_steps, run.workdir, enabled=primary)
  step = start
  while step < total:
    batch = run.global_batch(next(run.train_iter))
    profiler.before(step)
    if step == start:  # its compile, timed apart (one wait for its result).
      with phases.time("first_step"):
        try:
          state, metrics = run.train_step(state, batch)
          jax.block_until_ready(metrics)
        except Exception as e:  # pylint: disable=broad-except
          if memory.is_out_of_memory(e):  # an allocator that finds less than XLA counted.
            raise memory.from_xla(e, config) from None
          raise
    else:
      state, metrics = run.train_step(state, batch)
    profiler.after(step, metrics)
    if to_log is not None:  # step n's metrics, read after step n+1 was dispatched.
      flush(to_log, next_metrics=metrics)
      to_log = None
    pending.append(metrics)
    ckpt.check()  # a save that failed in the background stops the run now.
    done = step + 1
    if fitter is not None and not fitter.fixed and budget.is_refit_step(done, start):
      fit_budget(done, metrics)
    is_last = done == total
    time_due = (config.checkpoint_every_seconds > 0 and
                time.monotonic() - last_save >= config.checkpoint_every_seconds)
    stopping, time_due = preemption.agree(stop.requested, time_due)
    evaluate = done % config.eval_every_steps == 0 or is_last
    save = done % config.checkpoint_every_steps == 0 or is_last or time_due or stopping
    if done % config.log_every_steps == 0 or is_last or stopping:
      to_log, pending = (done, pending), []
    if evaluate or save:
      if to_log is not None:
        flush(to_log)
        to_log = None
      if pending:  # steps not logged yet: none of them may go into a checkpoint unchecked.
        check_finite(sum_metrics(jax.device_get(pending)), done - len(pending) + 1, done,
                     count=False)
      eval_metrics = None
      if evaluate:
        with phases.time("eval"):
          eval_metrics = {f"eval/{k}": v for k, v in run.evaluate(state.params).items()}
        writer.write(done, eval_metrics)
        final.update(eval_metrics)
        if primary:
          print("  eval: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()),
                flush=True)
      if save:
        with phases.time("checkpoint"):
          ckpt.save(done, state, checkpoint_lib.global_data_state(run.train_iter),
                    metadata(), metrics=eval_metrics)
        last_save = time.monotonic()
      clock, clock_step = time.monotonic(), done  # eval and saving are not training time.
    if stopping:
      end_loop()
      with phases.time("checkpoint"):
        ckpt.wait()
      report_time(done, {})
      if primary:
        print(f"Stopped at step {done} ({stop.signal_name or 'another process was signalled'}); "
              f"checkpoint saved in {ckpt.directory}. Run the same command to resume.",
              flush=True)
      return final
    step = done
  if to_log is not None:
    flush(to_log)
  end_loop()
  if fitter is not None and not fitter.fixed and total < config.num_train_steps:
    # The count reached before the record was due (a machine that sped up): fixed now,
    # so the same command finds the run complete. (At the cap it stays open to a raise.)
    fix_count(spent_before + train_seconds())

  with phases.time("checkpoint"):
    ckpt.wait()
  with phases.time("test"):
    record = run.task.final_test(run, state.params, total)
  report_time(total, record)
  return final
