"""The training loop: the one place with side effects in the middle of training.

config -> validate -> mesh -> corpus -> tokenizer -> grain pipeline -> born-sharded
state (or restored checkpoint) -> jitted steps -> log / eval / checkpoint ->
final test-set decoding with BLEU and chrF.
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from transformer_jax import checkpoint as checkpoint_lib
from transformer_jax import config as config_lib
from transformer_jax import evaluation, metric_writers, preemption, sharding, steps
from transformer_jax import programs as programs_lib
from transformer_jax.data import pipeline, sources
from transformer_jax.data import tokenizer as tokenizer_lib


def _sum_metrics(metrics_list):
  return jax.tree.map(lambda *xs: sum(xs), *metrics_list)


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def _tokenizer_path(config, workdir: str) -> str:
  """config.data.tokenizer_path; else the init_from run's (same ids); else WORKDIR's own."""
  if config.data.tokenizer_path:
    return config.data.tokenizer_path
  source = config.init_from.workdir
  if source and os.path.exists(os.path.join(source, "tokenizer.model")):
    return os.path.join(source, "tokenizer.model")
  return os.path.join(workdir, "tokenizer.model")


class _Runner:
  """Everything built once per run: mesh, data, compiled programs."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.primary = jax.process_index() == 0
    self.mesh = sharding.make_mesh(config)
    self.corpus = sources.load_corpus(config.data)
    logging.info("corpus: %d train, %d validation, %d test pairs", len(self.corpus.train),
                 len(self.corpus.validation), len(self.corpus.test))
    tok_path = _tokenizer_path(config, workdir)
    self.tokenizer = tokenizer_lib.load_or_train(
        tok_path, lambda: (s for pair in self.corpus.train for s in pair),
        config.data.vocab_size, is_writer=self.primary)
    if self.primary:
      print(f"tokenizer: {tok_path}", flush=True)
    self.programs = programs_lib.build(config, self.mesh, self.tokenizer.vocab_size)
    p = self.programs
    self.global_batch_size = p.global_batch_size
    self.rows = sharding.process_batch_rows(p.batch_sharding, p.global_batch_size)
    self.local_batch_size = len(self.rows)
    length = config.max_target_length
    self.train_iter = self.train_stream(config.seed)
    self.eval_batches = pipeline.eval_batches(
        self.corpus.validation, self.tokenizer, batch_size=self.local_batch_size,
        max_length=length, num_packing_bins=config.data.num_packing_bins,
        process_index=jax.process_index(), process_count=jax.process_count())
    # Every process must run the same number of eval steps (collectives): the
    # ones with fewer batches add all-padding batches, which weigh nothing.
    num_eval = len(self.eval_batches)
    if jax.process_count() > 1:
      num_eval = int(multihost_utils.process_allgather(np.array(num_eval)).max())
    empty = pipeline.empty_batch(self.local_batch_size, length)
    self.eval_batches += [empty] * (num_eval - len(self.eval_batches))
    if config.num_eval_steps > 0:
      self.eval_batches = self.eval_batches[:config.num_eval_steps]
    self.init_rng = jax.random.key(config.seed)

  def train_stream(self, seed: int) -> pipeline.TrainStream:
    return pipeline.TrainStream(
        self.corpus.train, self.tokenizer, global_batch_size=self.global_batch_size,
        rows=self.rows, max_length=self.config.max_target_length, seed=seed,
        num_packing_bins=self.config.data.num_packing_bins)

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
    return sharding.global_batch(local_batch, self.programs.batch_sharding)

  def init_state(self):
    return self.programs.init_state(self.init_rng)

  def metadata(self) -> dict:
    return {"model": {k: str(v) for k, v in vars(self.programs.model_config).items()},
            "mesh": dict(self.mesh.shape), "process_count": jax.process_count(),
            "global_batch_size": self.global_batch_size}

  def evaluate(self, params) -> dict[str, float]:
    sums = None
    for batch in self.eval_batches:
      m = self.programs.eval_step(params, self.global_batch(batch))
      sums = m if sums is None else _sum_metrics([sums, m])
    if sums is None:
      return {}
    out = steps.summarize(jax.device_get(sums))
    return {k: out[k] for k in ("loss", "perplexity", "accuracy")}

  def translate(self, params, pairs):
    """Translations of `pairs` with config.decoding; returns (scores, signatures, examples)."""
    hyps, refs, srcs = [], [], []
    rng = jax.random.key(self.config.seed)
    for n, (inputs, batch_srcs, batch_refs) in enumerate(pipeline.predict_batches(
        pairs, self.tokenizer, batch_size=self.global_batch_size,
        max_length=self.config.max_target_length)):
      local = {"inputs": inputs[self.rows]}
      out = self.programs.decode(params, self.global_batch(local)["inputs"],
                                 jax.random.fold_in(rng, n))
      out = np.asarray(jax.device_get(out))
      hyps.extend(self.tokenizer.decode(row) for row in out[:len(batch_srcs)])
      refs.extend(batch_refs)
      srcs.extend(batch_srcs)
    scores, signatures = evaluation.translation_scores(hyps, refs, with_signatures=True)
    return scores, signatures, list(zip(srcs, refs, hyps))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir`; returns the final metrics."""
  config_lib.validate(config)  # the fields alone, before any device is touched.
  if config.model.kind != "encoder_decoder":
    raise config_lib.ConfigError(
        f"config.model.kind={config.model.kind!r}: train.py trains the translation task "
        "(encoder_decoder) so far; other model kinds compile with python -m transformer_jax.aot")
  sharding.initialize_distributed(config)
  config_lib.validate_devices(config, jax.device_count(), jax.process_count())
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if primary:
    _write_config(config, workdir)
  run = _Runner(config, workdir)
  writer = metric_writers.MetricWriter(workdir, enabled=primary)
  ckpt = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), config.max_checkpoints_to_keep,
      keep_best=config.keep_best_checkpoints, best_metric=config.best_checkpoint_metric,
      best_mode=config.best_checkpoint_mode)
  try:
    with run.programs.context():
      state = _restore_or_init(config, run, ckpt, writer)
      num_params = sum(x.size for x in jax.tree.leaves(state.params))
      start = int(jax.device_get(state.step))
      if primary:
        print(f"Model: {num_params:,} parameters; vocabulary {run.tokenizer.vocab_size}; "
              f"global batch {run.global_batch_size} x {config.max_target_length} tokens; "
              f"mesh {dict(run.mesh.shape)}", flush=True)
      if start >= config.num_train_steps:
        print(f"The run in {workdir} is complete at step {start}; raise "
              "config.num_train_steps to train longer.", flush=True)
        return {}
      with preemption.StopRequest() as stop:
        return _train_loop(config, run, state, start, writer, ckpt, primary, stop)
  finally:
    ckpt.close()
    writer.close()


def _restore_or_init(config, run: _Runner, ckpt, writer):
  """The latest readable checkpoint, or fresh (optionally config.init_from) parameters."""
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
  return state


def _train_loop(config, run: _Runner, state, start: int, writer, ckpt, primary: bool,
                stop: preemption.StopRequest):
  total = config.num_train_steps
  progress = metric_writers.Progress(total, start, enabled=primary)
  final: dict[str, float] = {}
  pending = []
  to_log = None  # (step, metrics) of a log step, fetched one step late.
  clock = time.monotonic()  # when the last logged step had finished.

  def flush(entry):
    nonlocal clock
    log_step, metrics_list = entry
    sums = jax.device_get(_sum_metrics(metrics_list))  # waits for step `log_step`.
    now = time.monotonic()
    seconds, clock = now - clock, now
    summary = steps.summarize(sums, num_steps=len(metrics_list))
    if not np.isfinite(summary["loss"]):
      raise FloatingPointError(f"train loss is {summary['loss']} at step {log_step}; "
                               "lower config.learning_rate or check the data")
    tokens = float(sums["weight_sum"]) + float(sums.get("source_tokens_sum", 0.0))
    record = {"train/loss": summary["loss"], "train/nll": summary["nll"],
              "train/accuracy": summary["accuracy"], "train/grad_norm": summary["grad_norm"],
              "train/learning_rate": float(run.programs.schedule(log_step - 1)),
              "train/tokens_per_sec": tokens / max(seconds, 1e-9),
              "train/steps_per_sec": len(metrics_list) / max(seconds, 1e-9)}
    writer.write(log_step, record)
    progress.update(log_step, summary["loss"], record["train/tokens_per_sec"])
    final.update(record)

  last_save = time.monotonic()
  for step in range(start, total):
    batch = run.global_batch(next(run.train_iter))
    state, metrics = run.programs.train_step(state, batch)
    if to_log is not None:  # step n's metrics, read after step n+1 was dispatched.
      flush(to_log)
      to_log = None
    pending.append(metrics)
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
      eval_metrics = None
      if evaluate:
        eval_metrics = {f"eval/{k}": v for k, v in run.evaluate(state.params).items()}
        if config.num_eval_bleu_examples > 0:
          scores, _, _ = run.translate(state.params,
                                       run.corpus.validation[:config.num_eval_bleu_examples])
          eval_metrics.update({f"eval/{k}": v for k, v in scores.items()})
        writer.write(done, eval_metrics)
        final.update(eval_metrics)
        if primary:
          print("  eval: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()),
                flush=True)
      if save:
        ckpt.save(done, state, checkpoint_lib.global_data_state(run.train_iter), run.metadata(),
                  metrics=eval_metrics)
        last_save = time.monotonic()
      clock = time.monotonic()  # eval and saving are not training time.
    if stopping:
      ckpt.wait()
      if primary:
        print(f"Stopped at step {done} ({stop.signal_name or 'another process was signalled'}); "
              f"checkpoint saved in {ckpt.directory}. Run the same command to resume.",
              flush=True)
      return final
  if to_log is not None:
    flush(to_log)

  ckpt.wait()
  final.update(_final_test(config, run, state, writer, total, primary))
  return final


def _final_test(config, run: _Runner, state, writer, step: int, primary: bool):
  t0 = time.monotonic()
  pairs = run.corpus.test
  if config.num_predict_examples > 0:
    pairs = pairs[:config.num_predict_examples]
  scores, signatures, examples = run.translate(state.params, pairs)
  record = {f"test/{k}": v for k, v in scores.items()}
  writer.write(step, record)
  if primary:
    print(f"Test set ({len(examples)} sentences, {_decoder_name(config.decoding)}, "
          f"{time.monotonic() - t0:.0f}s): "
          f"BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}", flush=True)
    print("  " + json.dumps(signatures), flush=True)
    for src, ref, hyp in examples[:config.num_example_translations]:
      print(f"  source:     {src}\n  reference:  {ref}\n  prediction: {hyp}", flush=True)
  return record


def _decoder_name(d) -> str:
  if d.method == "beam":
    return f"beam {d.beam_size}, alpha {d.alpha}"
  if d.method == "sample":
    return f"sampling, temperature {d.temperature}, top-k {d.top_k}, top-p {d.top_p}"
  return "greedy"
