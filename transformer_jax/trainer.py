"""The training loop: the one place with side effects in the middle of training.

config -> validate -> mesh -> corpus -> tokenizer -> grain pipeline -> born-sharded
state (or restored checkpoint) -> jitted steps -> log / eval / checkpoint ->
final test-set decoding with BLEU and chrF.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from transformer_jax import checkpoint as checkpoint_lib
from transformer_jax import config as config_lib
from transformer_jax import decoding, evaluation, metric_writers, optim, sharding, steps
from transformer_jax.data import pipeline, sources
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.models.transformer import EncoderDecoder


def _sum_metrics(metrics_list):
  return jax.tree.map(lambda *xs: sum(xs), *metrics_list)


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


class _Runner:
  """Everything built once per run: mesh, data, model, compiled steps."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.primary = jax.process_index() == 0
    self.mesh = sharding.make_mesh(config)
    self.rules = sharding.logical_axis_rules(config)
    self.corpus = sources.load_corpus(config.data)
    logging.info("corpus: %d train, %d validation, %d test pairs", len(self.corpus.train),
                 len(self.corpus.validation), len(self.corpus.test))
    tok_path = config.data.tokenizer_path or os.path.join(workdir, "tokenizer.model")
    self.tokenizer = tokenizer_lib.load_or_train(
        tok_path, lambda: (s for pair in self.corpus.train for s in pair),
        config.data.vocab_size, is_writer=self.primary)
    self.model_config = config_lib.model_config(config, self.tokenizer.vocab_size)

    self.global_batch_size = config.per_device_batch_size * jax.device_count()
    self.local_batch_size = self.global_batch_size // jax.process_count()
    length = config.max_target_length
    self.train_iter = iter(pipeline.train_dataset(
        self.corpus.train, self.tokenizer, batch_size=self.local_batch_size,
        max_length=length, seed=config.seed, num_packing_bins=config.data.num_packing_bins,
        process_index=jax.process_index(), process_count=jax.process_count()))
    self.eval_batches = pipeline.eval_batches(
        self.corpus.validation, self.tokenizer, batch_size=self.local_batch_size,
        max_length=length, num_packing_bins=config.data.num_packing_bins,
        process_index=jax.process_index(), process_count=jax.process_count())
    # Every process must run the same number of eval steps (collectives).
    num_eval = len(self.eval_batches)
    if jax.process_count() > 1:
      num_eval = int(multihost_utils.process_allgather(np.array(num_eval)).min())
    if config.num_eval_steps > 0:
      num_eval = min(num_eval, config.num_eval_steps)
    self.eval_batches = self.eval_batches[:num_eval]

    model = EncoderDecoder(self.model_config)
    self.eval_model = EncoderDecoder(self.model_config.replace(deterministic=True))
    self.tx = optim.make_optimizer(config)
    self.schedule = optim.learning_rate_schedule(config)
    shape = (self.global_batch_size, length)
    self.init_fn = functools.partial(steps.create_train_state, model, self.tx,
                                     inputs_shape=shape, targets_shape=shape)
    rng = jax.random.key(config.seed)
    self.init_rng, self.dropout_rng = jax.random.split(rng)
    self.abstract_state, self.state_shardings = sharding.state_shardings(
        self.init_fn, self.mesh, self.rules, self.init_rng)

    batch_sharding = sharding.batch_sharding(self.mesh)
    replicated = sharding.replicated(self.mesh)
    self.train_step = jax.jit(
        functools.partial(steps.train_step, model=model, tx=self.tx,
                          label_smoothing=config.label_smoothing),
        in_shardings=(self.state_shardings, batch_sharding, replicated),
        out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
    self.eval_step = jax.jit(
        functools.partial(steps.eval_step, model=self.eval_model),
        in_shardings=(self.state_shardings.params, batch_sharding), out_shardings=replicated)
    self.decode = jax.jit(
        functools.partial(decoding.greedy_decode, config=self.model_config,
                          max_length=config.max_predict_length),
        in_shardings=(self.state_shardings.params, batch_sharding),
        out_shardings=replicated)

  def init_state(self):
    return sharding.init_sharded(self.init_fn, self.state_shardings, self.mesh, self.rules,
                                 self.init_rng)

  def metadata(self) -> dict:
    return {"model": {k: str(v) for k, v in vars(self.model_config).items()},
            "mesh": dict(self.mesh.shape), "process_count": jax.process_count()}

  def evaluate(self, params) -> dict[str, float]:
    sums = None
    for batch in self.eval_batches:
      m = self.eval_step(params, sharding.global_batch(batch, self.mesh))
      sums = m if sums is None else _sum_metrics([sums, m])
    if sums is None:
      return {}
    out = steps.summarize(jax.device_get(sums))
    return {k: out[k] for k in ("loss", "perplexity", "accuracy")}

  def translate_test(self, params, num_examples: int):
    """Greedy translations of the test split; returns (scores, examples)."""
    pairs = self.corpus.test
    if num_examples > 0:
      pairs = pairs[:num_examples]
    hyps, refs, srcs = [], [], []
    pi, n = jax.process_index(), self.local_batch_size
    for inputs, batch_srcs, batch_refs in pipeline.predict_batches(
        pairs, self.tokenizer, batch_size=self.global_batch_size,
        max_length=self.config.max_target_length):
      local = {"inputs": inputs[pi * n:(pi + 1) * n]}
      out = self.decode(params, sharding.global_batch(local, self.mesh)["inputs"])
      out = np.asarray(jax.device_get(out))
      hyps.extend(self.tokenizer.decode(row) for row in out[:len(batch_srcs)])
      refs.extend(batch_refs)
      srcs.extend(batch_srcs)
    scores, signatures = evaluation.translation_scores(hyps, refs, with_signatures=True)
    return scores, signatures, list(zip(srcs, refs, hyps))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or resumes) the run in `workdir`; returns the final metrics."""
  config_lib.validate(config)  # the fields alone, before any device is touched.
  sharding.initialize_distributed(config)
  config_lib.validate_devices(config, jax.device_count(), jax.process_count())
  primary = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if primary:
    _write_config(config, workdir)
  run = _Runner(config, workdir)
  writer = metric_writers.MetricWriter(workdir, enabled=primary)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                     config.max_checkpoints_to_keep)
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    latest = ckpt.latest_step()
    if latest is not None:
      abstract = sharding.abstract_like(run.abstract_state, run.state_shardings)
      state, _ = ckpt.restore(latest, abstract, run.train_iter)
      print(f"Resuming from checkpoint at step {latest} in {ckpt.directory}", flush=True)
    else:
      state = run.init_state()
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    start = int(jax.device_get(state.step))
    if primary:
      print(f"Model: {num_params:,} parameters; vocabulary {run.tokenizer.vocab_size}; "
            f"global batch {run.global_batch_size} x {config.max_target_length} tokens; "
            f"mesh {dict(run.mesh.shape)}", flush=True)
    final = _train_loop(config, run, state, start, writer, ckpt, primary)
  ckpt.close()
  writer.close()
  return final


def _train_loop(config, run: _Runner, state, start: int, writer, ckpt, primary: bool):
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
    tokens = float(sums["weight_sum"]) + float(sums["source_tokens_sum"])
    record = {"train/loss": summary["loss"], "train/nll": summary["nll"],
              "train/accuracy": summary["accuracy"], "train/grad_norm": summary["grad_norm"],
              "train/learning_rate": float(run.schedule(log_step - 1)),
              "train/tokens_per_sec": tokens / max(seconds, 1e-9),
              "train/steps_per_sec": len(metrics_list) / max(seconds, 1e-9)}
    writer.write(log_step, record)
    progress.update(log_step, summary["loss"], record["train/tokens_per_sec"])
    final.update(record)

  for step in range(start, total):
    batch = sharding.global_batch(next(run.train_iter), run.mesh)
    state, metrics = run.train_step(state, batch, run.dropout_rng)
    if to_log is not None:  # step n's metrics, read after step n+1 was dispatched.
      flush(to_log)
      to_log = None
    pending.append(metrics)
    done = step + 1
    is_last = done == total
    if done % config.log_every_steps == 0 or is_last:
      to_log, pending = (done, pending), []
    if done % config.eval_every_steps == 0 or is_last or done % config.checkpoint_every_steps == 0:
      if to_log is not None:
        flush(to_log)
        to_log = None
      if done % config.eval_every_steps == 0 or is_last:
        eval_metrics = {f"eval/{k}": v for k, v in run.evaluate(state.params).items()}
        writer.write(done, eval_metrics)
        final.update(eval_metrics)
        if primary:
          print("  eval: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()),
                flush=True)
      if done % config.checkpoint_every_steps == 0 or is_last:
        ckpt.save(done, state, run.train_iter, run.metadata())
      clock = time.monotonic()  # eval and saving are not training time.
  if to_log is not None:
    flush(to_log)

  ckpt.wait()
  final.update(_final_test(config, run, state, writer, total, primary))
  return final


def _final_test(config, run: _Runner, state, writer, step: int, primary: bool):
  t0 = time.monotonic()
  scores, signatures, examples = run.translate_test(state.params, config.num_predict_examples)
  record = {f"test/{k}": v for k, v in scores.items()}
  writer.write(step, record)
  if primary:
    print(f"Test set ({len(examples)} sentences, greedy, {time.monotonic() - t0:.0f}s): "
          f"BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}", flush=True)
    print("  " + json.dumps(signatures), flush=True)
    for src, ref, hyp in examples[:config.num_example_translations]:
      print(f"  source:     {src}\n  reference:  {ref}\n  prediction: {hyp}", flush=True)
  return record
