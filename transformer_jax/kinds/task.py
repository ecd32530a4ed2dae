"""The typed interface between a model kind's task and the training loop.

A task (one per kind, built by the kind's record: `kinds.get(name).task`)
brings the kind's data, tokenizer and evaluation. The loop talks to it only
through `Task`, and the task sees the running job only through `Evaluator`:
neither reaches into the other's insides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np

from transformer_jax.data import hf_tokenizer, tokenizer as tokenizer_lib
from transformer_jax.metrics import scores as metric_scores

Batch = dict[str, np.ndarray]


class TrainStream(Protocol):
  """An endless, checkpointable stream of this process's rows of every global batch
  (data.streams.RowStreams)."""

  def __next__(self) -> Batch: ...
  def get_state(self) -> dict: ...
  def set_state(self, state: dict) -> None: ...


class Evaluator(Protocol):
  """What a task may use of the running job; the trainer provides it."""
  config: ml_collections.ConfigDict
  primary: bool  # process 0: the one that prints.
  global_batch_size: int
  local_batch_size: int  # rows of a batch this process feeds.

  def eval_sums(self, params: Any, local_batches: Sequence[Batch]) -> dict[str, np.ndarray]:
    """The eval step's metric sums over this process's batches (all processes together)."""

  def decode(self, params: Any, ids_BL: np.ndarray, rng: jax.Array) -> np.ndarray:
    """The kind's decoder (config.decoding) on one global batch of ids; all rows come back."""


class Task(Protocol):
  """What a kind brings to the loop."""
  vocab_size: int  # the tokenizer's (0: none).
  num_classes: int  # the data's labels (0: not a classifier).

  def train_stream(self, *, global_batch_size: int, rows: Sequence[int],
                   seed: int) -> TrainStream:
    """The training split as this process's `rows` of every global batch."""

  def eval_batches(self, *, batch_size: int, process_index: int,
                   process_count: int) -> list[Batch]:
    """The validation split as fixed local batches of `batch_size` rows, in a fixed
    hash order (so that config.num_eval_steps batches represent the split)."""

  def extra_eval(self, run: Evaluator, params: Any) -> dict[str, float]:
    """Metrics beyond the eval step's at each evaluation (eval/bleu); names as the
    kind's record lists them in eval_metrics."""

  def final_test(self, run: Evaluator, params: Any, step: int) -> dict[str, float]:
    """The test-split figures logged at the end (test/...); optionally "examples", a
    list of {field: text} dicts (translations, samples) that metrics.jsonl keeps for
    the report."""

  # Optional: `decode_kwargs() -> dict`, constants the kind's decoder takes beyond the
  # config (speech: its word list); a task without it gives none (TaskBase's default).


class TaskBase:
  """Defaults for the optional parts of `Task`."""
  vocab_size: int = 0
  num_classes: int = 0

  def extra_eval(self, run: Evaluator, params: Any) -> dict[str, float]:
    del run, params
    return {}

  def decode_kwargs(self) -> dict[str, Any]:
    """Constants the kind's decoder takes beyond the config (speech: its word list)."""
    return {}


class TranslationScoring(TaskBase):
  """A task whose decoded outputs are translations of source sentences, scored by BLEU and
  chrF (sacrebleu): the translation kind, and a language model prompted to translate. The
  subclass says how sources become hypotheses (`hypotheses`); the rest is shared."""
  config: ml_collections.ConfigDict
  corpus: Any  # the sentence pairs by split: .validation is what extra_eval scores.

  def hypotheses(self, run: Evaluator, sources: list[str], decode_batch) -> list[str]:
    """The decoded translations of `sources`; `decode_batch(inputs, n)` runs the kind's
    decoder on the n-th batch of inputs."""
    raise NotImplementedError

  def translate(self, run: Evaluator, params: Any, pairs):
    """Translations of `pairs` with config.decoding; returns (scores, signatures, examples)."""
    rng = jax.random.key(self.config.seed)

    def decode_batch(inputs, n):
      return run.decode(params, inputs, jax.random.fold_in(rng, n))

    srcs, refs = [s for s, _ in pairs], [t for _, t in pairs]
    hyps = self.hypotheses(run, srcs, decode_batch)
    found, signatures = metric_scores.translation_scores(hyps, refs, with_signatures=True)
    return found, signatures, list(zip(srcs, refs, hyps))

  def validation_pairs(self) -> list[tuple[str, str]]:
    return self.corpus.validation

  def extra_eval(self, run: Evaluator, params: Any) -> dict[str, float]:
    """BLEU / chrF of the first config.num_eval_bleu_examples validation pairs."""
    n = self.config.num_eval_bleu_examples
    if n <= 0:
      return {}
    found, _, _ = self.translate(run, params, self.validation_pairs()[:n])
    return found


LABELS_FILE = "labels.json"  # a classifier run's class names by id, in its workdir.


def read_labels(workdir: str) -> list[str] | None:
  """A classifier run's class names (None for runs made before labels.json was written)."""
  path = os.path.join(workdir, LABELS_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return [str(x) for x in json.load(f)]


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
  """The run's sentencepiece tokenizer, trained on `texts_fn()` the first time; or a
  Hugging Face tokenizer.json where config.data.tokenizer_path is "hf:FOLDER"."""
  path = tokenizer_path(config, workdir)
  if hf_tokenizer.is_hf(path):
    tok = hf_tokenizer.load(path)
    if is_writer:
      print(f"tokenizer: {path} ({tok.vocab_size} ids)", flush=True)
    return tok
  tok = tokenizer_lib.load_or_train(path, texts_fn, config.data.vocab_size, is_writer=is_writer,
                                    use_placeholders=use_placeholders,
                                    keep_whitespace=keep_whitespace,
                                    model_type=config.data.tokenizer_type)
  if is_writer:
    print(f"tokenizer: {path}", flush=True)
  return tok


def prompt_batch(prompts: Sequence[Sequence[int]], rows: int, length: int) -> np.ndarray:
  """Token-id prompts, left-aligned and zero-padded, as [rows, length] int32; rows past
  the prompts stay empty."""
  out = np.zeros((rows, length), np.int32)
  for row, ids in enumerate(prompts):
    out[row, :len(ids)] = ids
  return out


def say_dropped(split: str, dropped: int, total: int, what: str, why: str) -> None:
  """One line about examples a split leaves out (printed only when there are some)."""
  if dropped:
    print(f"note: {split}: {dropped} of {total} {what} {why}", flush=True)


def test_translations(primary: bool, scores: dict[str, float], signatures: dict[str, str],
                      examples: Sequence[tuple[str, str, str]], *, decoder: str,
                      seconds: float, shown: int) -> dict:
  """The test record of decoded translations: test/bleu, test/chrf, test/placeholders
  (`scores`, metrics.scores.translation_scores of the (source, reference, prediction)
  `examples`) and the first `shown` examples; printed by the `primary` process with
  sacrebleu's `signatures`, the decoder in words and the `seconds` it took."""
  if primary:
    print(f"Test set ({len(examples)} sentences, {decoder}, "
          f"{seconds:.0f}s): BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f}, "
          f"placeholders kept {scores['placeholders']:.1f}%",
          flush=True)
    print("  " + json.dumps(signatures), flush=True)
    for src, ref, hyp in examples[:shown]:
      print(f"  source:     {src}\n  reference:  {ref}\n  prediction: {hyp}", flush=True)
  return {**{f"test/{k}": v for k, v in scores.items()},
          "examples": [{"source": src, "reference": ref, "prediction": hyp}
                       for src, ref, hyp in examples[:shown]]}


def decoder_name(d) -> str:
  """config.decoding in words, for the test lines."""
  if d.method == "beam":
    return f"beam {d.beam_size}, alpha {d.alpha}"
  if d.method == "sample":
    return f"sampling, temperature {d.temperature}, top-k {d.top_k}, top-p {d.top_p}"
  if d.method == "ctc":
    return "greedy CTC"
  return "greedy"
