"""The interface every task offers the training loop, and helpers tasks share."""

from __future__ import annotations

import os
from typing import Any

from transformer_jax.data import tokenizer as tokenizer_lib


class Task:
  """Base class; see the package docstring for the interface."""
  vocab_size: int = 0
  num_classes: int = 0
  eval_metrics: tuple[str, ...] = ("loss", "perplexity", "accuracy")

  def train_stream(self, *, global_batch_size: int, rows, seed: int):
    raise NotImplementedError

  def eval_batches(self, *, batch_size: int, process_index: int, process_count: int):
    raise NotImplementedError

  def extra_eval(self, run, params) -> dict[str, float]:
    del run, params
    return {}

  def final_test(self, run, params, step: int) -> dict[str, float]:
    raise NotImplementedError


def tokenizer_path(config, workdir: str) -> str:
  """config.data.tokenizer_path; else the init_from run's (same ids); else WORKDIR's own."""
  if config.data.tokenizer_path:
    return config.data.tokenizer_path
  source = config.init_from.workdir
  if source and os.path.exists(os.path.join(source, "tokenizer.model")):
    return os.path.join(source, "tokenizer.model")
  return os.path.join(workdir, "tokenizer.model")


def load_tokenizer(config, workdir: str, texts_fn, is_writer: bool,
                   use_placeholders: bool = True, keep_whitespace: bool = False) -> Any:
  """The run's sentencepiece tokenizer, trained on `texts_fn()` the first time."""
  path = tokenizer_path(config, workdir)
  tok = tokenizer_lib.load_or_train(path, texts_fn, config.data.vocab_size, is_writer=is_writer,
                                    use_placeholders=use_placeholders,
                                    keep_whitespace=keep_whitespace)
  if is_writer:
    print(f"tokenizer: {path}", flush=True)
  return tok
