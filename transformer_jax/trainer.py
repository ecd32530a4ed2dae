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
import numpy as np
from jax.experimental import multihost_utils

from transformer_jax import checkpoint as checkpoint_lib
from transformer_jax import config as config_lib
from transformer_jax import (cache_dirs, flops, kinds, metric_writers, preemption, pretrained,
                             sharding, steps, timing)
from transformer_jax import programs as programs_lib
from transformer_jax.errors import NumericalError
from transformer_jax import workdir as workdir_lib


def _is_ready(tree) -> bool:
  return all(x.is_ready() for x in jax.tree.leaves(tree))


def _sum_metrics(metrics_list):
  return jax.tree.map(lambda *xs: sum(xs), *metrics_list)


class Run:
  """Everything built once per run: mesh, the kind's task, compiled programs.

  It is the `tasks.base.Evaluator` that the task sees: eval sums, decoding,
  batch sizes and whether this process prints.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               phases: timing.Phases | None = None):
    self.config, self.workdir = config, workdir
    self.kind = kinds.get(config.model.kind)
    self.primary = jax.process_index() == 0
    self.mesh = sharding.make_mesh(config)
    phases = phases or timing.Phases()
    with phases.time("data"):
      self.task = self.kind.task(config, workdir, self.primary)
    with phases.time("build"):
      self.programs = programs_lib.build(config, self.mesh, self.task.vocab_size,
                                         self.task.num_classes)
    p = self.programs
    self.global_batch_size = p.global_batch_size
    self.local_batch_size = len(p.rows)
    with phases.time("data"):
      self.train_iter = self.train_stream(config.seed)
      self.eval_batches = self.task.eval_batches(
          batch_size=self.local_batch_size, process_index=jax.process_index(),
          process_count=jax.process_count())
    if config.num_eval_steps > 0:
      self.eval_batches = self.eval_batches[:config.num_eval_steps]
    self.init_rng = jax.random.key(config.seed)
    # train/mfu: model FLOPs per second over the chips' peak (on a CPU, its measured
    # f32 matmul rate); None where either is unknown.
    with phases.time("build"):
      peak = flops.peak_flops() if self.programs.train_flops else None
    self.peak_flops = peak[0] if peak else None

  def train_stream(self, seed: int):
    return self.task.train_stream(global_batch_size=self.global_batch_size,
                                  rows=self.programs.rows, seed=seed)

  def even_out(self, batches: list) -> list:
    """Every process must run the same number of eval steps (collectives): the ones
    with fewer batches add all-padding batches, which weigh nothing."""
    n = len(batches)
    if jax.process_count() > 1:
      n = int(multihost_utils.process_allgather(np.array(n)).max())
    return batches + [self.programs.empty_batch()] * (n - len(batches))

  def restore_data(self, data_state: dict, step: int) -> None:
    """Continues the saved streams; with another global batch size, starts fresh ones."""
    try:
      self.train_iter.set_state(data_state)
    except ValueError as e:
      print(f"warning: {e}: the data streams restart in a new order (seed {self.config.seed} "
            f"+ step {step}); examples of the interrupted epoch may repeat or be skipped",
            flush=True)
      self.train_iter = self.train_stream(self.config.seed + step)

  def global_batch(self, local_batch):
    return self.programs.global_batch(local_batch)

  def init_state(self):
    return self.programs.init_state(self.init_rng)

  def metadata(self) -> dict:
    return {"model": {"kind": self.kind.name,
                      **{k: str(v) for k, v in vars(self.programs.model_config).items()}},
            "mesh": dict(self.mesh.shape), "process_count": jax.process_count(),
            "global_batch_size": self.global_batch_size}

  # ------------------------------------------------------------- tasks.base.Evaluator

  def eval_sums(self, params, local_batches) -> dict:
    """Summed eval-step metrics over local batches (evened out across processes)."""
    sums = None
    for batch in self.even_out(list(local_batches)):
      m = self.programs.eval_step(params, self.global_batch(batch))
      sums = m if sums is None else _sum_metrics([sums, m])
    return jax.device_get(sums) if sums is not None else {}

  def decode(self, params, ids_BL: np.ndarray, rng: jax.Array) -> np.ndarray:
    return self.programs.decode_ids(params, ids_BL, rng)

  # -------------------------------------------------------------

  def evaluate(self, params) -> dict[str, float]:
    """The eval/* metrics that the kind's record lists, over the validation batches."""
    sums = self.eval_sums(params, self.eval_batches)
    if not sums:
      return {}
    names = self.kind.eval_metrics(self.config)
    summary = steps.summarize(sums)
    out = {k: summary[k] for k in names if k in summary}
    out.update(self.task.extra_eval(self, params))
    # The record's list is a promise (config validation checks best_checkpoint_metric
    # against it): what is logged must be exactly what it lists.
    if set(out) != set(names):
      raise RuntimeError(
          f"the {self.kind.name!r} run logs eval metrics {sorted(out)}, but its record's "
          f"eval_metrics lists {sorted(names)}")
    return out

  def describe(self, num_params: int) -> str:
    """One line: kind, size, batch and mesh."""
    sizes = (f"{self.task.num_classes} classes" if self.kind.uses_classes else
             f"vocabulary {self.task.vocab_size}")
    shapes: dict[str, list[str]] = {}  # a row's shape -> the features of that shape.
    for k, s in self.programs.batch_shapes.items():
      if s.shape[1:] and not k.endswith(("_segment_ids", "_positions")):
        shapes.setdefault("x".join(map(str, s.shape[1:])), []).append(k)
    rows = "; ".join(f"{shape} ({', '.join(keys)})" for shape, keys in shapes.items())
    return (f"Model ({self.kind.name}): {num_params:,} parameters; {sizes}; global batch "
            f"{self.global_batch_size} x {rows}; mesh {dict(self.mesh.shape)}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       started: float | None = None) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir`; returns the final metrics.

  `started` (time.monotonic() at process start) makes `time/total` and `time/startup`
  count the imports too."""
  phases = timing.Phases(started)
  hf_folder = pretrained.apply_to_config(config)  # the folder's architecture, checked.
  config_lib.validate(config)  # the fields alone, before any device is touched.
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
    with run.programs.context():
      with phases.time("init"):
        state = _restore_or_init(config, run, ckpt, writer, hf_folder)
      if primary:  # only now: a run that cannot restore leaves the workdir's record alone.
        workdir_lib.write_config(config, workdir)
      num_params = sum(x.size for x in jax.tree.leaves(state.params))
      start = int(jax.device_get(state.step))
      if primary:
        print(run.describe(num_params), flush=True)
      if start >= config.num_train_steps:
        print(f"The run in {workdir} is complete at step {start}; raise "
              "config.num_train_steps to train longer.", flush=True)
        return {}
      with preemption.StopRequest() as stop:
        return _train_loop(config, run, state, start, writer, ckpt, primary, stop, phases)
  finally:
    ckpt.close()
    writer.close()


def _is_compressed(ckpt, step: int) -> bool:
  try:
    return "compression" in ckpt.metadata(step)
  except Exception:  # pylint: disable=broad-except
    return False  # unreadable: restore_latest below names it and falls back.


def _restore_or_init(config, run: Run, ckpt, writer, hf_folder=None):
  """The latest readable checkpoint, or fresh (optionally config.init_from) parameters.

  A compressed latest checkpoint (the compress tool's: parameters only) is fine-tuned
  from: its parameters as floats, fresh optimizer state, the step counted on."""
  latest = ckpt.latest_step()
  if latest is not None and _is_compressed(ckpt, latest):
    state = run.init_state()
    params, _ = checkpoint_lib.load_params(ckpt.directory, latest, state.params)
    run.train_iter = run.train_stream(config.seed + latest)  # no data position saved.
    print(f"Fine-tuning from the compressed checkpoint at step {latest} in {ckpt.directory} "
          "(parameters as floats, fresh optimizer state)", flush=True)
    return state.replace(params=params, step=jax.numpy.asarray(latest, state.step.dtype))
  restored = ckpt.restore_latest(run.programs.abstract_state)
  if restored is not None:
    step, state, data_state, _ = restored
    run.restore_data(data_state, step)
    writer.truncate_after(step)  # steps logged after the checkpoint will be logged again.
    print(f"Resuming from checkpoint at step {step} in {ckpt.directory}", flush=True)
    return state
  state = run.init_state()
  source = config.init_from.workdir
  if source:
    params, taken = checkpoint_lib.load_params(source, config.init_from.step, state.params,
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
  return state


def _train_loop(config, run: Run, state, start: int, writer, ckpt, primary: bool,
                stop: preemption.StopRequest, phases: timing.Phases):
  total = config.num_train_steps
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
    total = skipped + bad
    if total <= config.max_skipped_nonfinite_steps:
      if count:
        skipped = total
        print(f"warning: skipped {bad} step(s) with a non-finite loss or gradient between "
              f"steps {first} and {last} ({total} of at most "
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
    sums = _sum_metrics(jax.device_get(metrics_list))
    now = time.monotonic()
    done_through = log_step + int(next_metrics is not None and _is_ready(next_metrics))
    steps_timed, seconds = done_through - clock_step, now - clock
    clock, clock_step = now, done_through
    summary = steps.summarize(sums, num_steps=len(metrics_list))
    check_finite(sums, log_step - len(metrics_list) + 1, log_step)
    count = float(sums["units_sum"])
    record = {"train/loss": summary["loss"], "train/nll": summary["nll"],
              "train/accuracy": summary["accuracy"], "train/grad_norm": summary["grad_norm"],
              "train/learning_rate": float(run.programs.schedule(log_step - 1))}
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

  def end_loop() -> None:
    """The loop's time not spent in its first step, evaluating or saving is training."""
    loop = time.monotonic() - loop_start
    elsewhere = sum(phases.seconds[k] - before[k] for k in before)
    phases.seconds["train"] += max(loop - elsewhere, 0.0)

  def report_time(step: int, record: dict) -> None:
    """Writes `record` with the time split (the run's last line of metrics.jsonl)."""
    record = {**record, **phases.record()}
    writer.write(step, record)
    final.update(record)
    if primary:
      print(phases.summary(), flush=True)

  last_save = loop_start = time.monotonic()
  before = {k: phases.seconds[k] for k in ("eval", "checkpoint", "first_step")}
  for step in range(start, total):
    batch = run.global_batch(next(run.train_iter))
    if step == start:  # its compile, timed apart (one wait for its result).
      with phases.time("first_step"):
        state, metrics = run.programs.train_step(state, batch)
        jax.block_until_ready(metrics)
    else:
      state, metrics = run.programs.train_step(state, batch)
    if to_log is not None:  # step n's metrics, read after step n+1 was dispatched.
      flush(to_log, next_metrics=metrics)
      to_log = None
    pending.append(metrics)
    ckpt.check()  # a save that failed in the background stops the run now.
    done = step + 1
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
        check_finite(_sum_metrics(jax.device_get(pending)), done - len(pending) + 1, done,
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
                    run.metadata(), metrics=eval_metrics)
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
  if to_log is not None:
    flush(to_log)
  end_loop()

  with phases.time("checkpoint"):
    ckpt.wait()
  with phases.time("test"):
    record = run.task.final_test(run, state.params, total)
  report_time(total, record)
  return final
