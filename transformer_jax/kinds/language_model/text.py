"""Text for a decoder-only language model: documents, packed LM sequences, a baseline.

Two sources (`config.data.source`):
  * `python_stdlib`: every `.py` file of the running Python's standard library
    (`sysconfig.get_paths()["stdlib"]`, or `config.data.stdlib_dir` when not ""),
    one document per file. Skipped: `site-packages`/`dist-packages` and
    `__pycache__`, the test suites (any `test`/`tests` directory: 17 MB of
    mostly generated cases that would dwarf the library itself), `idlelib`,
    `encodings` (codec tables) and `pydoc_data` (one 700 kB generated dict
    of help texts, which alone would outweigh a 3% validation split). What is
    left, ~9 MB of code and docstrings in ~550 files on CPython 3.11 (~2M
    tokens with an 8k-piece vocabulary), is small enough that minutes of CPU
    training see a useful part of it. A file's split (and its place in the
    validation/test order) comes from a hash of its path relative to the stdlib
    root; the training files stay sorted by path.
  * `files`: plain UTF-8 text files (`config.data.train_files`, and optionally
    `validation_files`/`test_files`). Each file is cut into documents at runs
    of blank lines (paragraphs), so that even a single file splits into
    train/validation/test by a hash of each paragraph's text (training
    paragraphs stay in file order; validation and test are in hash order).

A document is tokenized (the tokenizer appends EOS), cut into chunks of at most
`max_length` tokens and the chunks are packed into rows of `targets`,
`targets_segment_ids` (0 = padding) and `targets_positions`, the batch format
of the decoder-only model. Every token of a chunk, EOS included, is scored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import sysconfig
from collections.abc import Iterable, Sequence

import grain
import numpy as np

from transformer_jax.data.splits import CorpusError, NamedSplits, config_field, load_splits
from transformer_jax.data.streams import ROW_READ_OPTIONS, RowStreams, pad_batch, process_shard
from transformer_jax.data.tokenizer import Tokenizer

LM_KEYS = ("targets", "targets_segment_ids", "targets_positions")

# Directory names never read from the standard library (see the module docstring).
STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests",
                              "idlelib", "encodings", "pydoc_data"})

_BLANK_LINES_RE = re.compile(r"\n[ \t\r\f\v]*\n")

@dataclasses.dataclass(frozen=True)
class TextSplits(NamedSplits):
  train: list[str]
  validation: list[str]
  test: list[str]


# --------------------------------------------------------------------------- stdlib


def stdlib_files(root: str) -> list[str]:
  """Paths (relative to `root`, sorted) of the stdlib's `.py` files that are read."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_SKIP_DIRS)
    for name in filenames:
      if name.endswith(".py"):
        out.append(os.path.relpath(os.path.join(dirpath, name), root))
  return sorted(out)


def read_stdlib(root: str) -> list[tuple[str, str]]:
  """(relative path, text) of every non-empty stdlib source file under `root`."""
  if not os.path.isdir(root):
    raise CorpusError(f"Python standard library directory not found: {root} "
                      "(config.data.stdlib_dir, or sysconfig's 'stdlib' path)")
  docs = []
  for rel in stdlib_files(root):
    try:
      with open(os.path.join(root, rel), encoding="utf-8") as f:
        text = f.read()
    except (OSError, UnicodeDecodeError) as e:
      logging.warning("skipping unreadable stdlib file %s: %s", rel, e)
      continue
    if text.strip():
      docs.append((rel, text))
  if not docs:
    raise CorpusError(f"no readable .py files under {root}")
  return docs


# --------------------------------------------------------------------------- files


def paragraphs(text: str) -> list[str]:
  """Cuts `text` at runs of blank lines; drops empty pieces."""
  pieces = _BLANK_LINES_RE.split(text.replace("\r\n", "\n"))
  return [p.strip("\n") for p in pieces if p.strip()]


def read_text_files(paths: Sequence[str]) -> list[str]:
  """The paragraphs of plain UTF-8 text files, in file order."""
  docs = []
  for path in paths:
    if not os.path.exists(path):
      raise CorpusError(f"text file not found: {path}")
    try:
      with open(path, encoding="utf-8") as f:
        docs.extend(paragraphs(f.read()))
    except (OSError, UnicodeDecodeError) as e:
      raise CorpusError(f"cannot read {path} as UTF-8 text: {e}") from e
  return docs


# --------------------------------------------------------------------------- splits


Document = tuple[str, str]  # (identity: stdlib path or the paragraph itself, text)


def _texts(splits: dict[str, list[Document]]) -> TextSplits:
  """The documents' texts, their identities dropped."""
  return TextSplits(**{name: [text for _, text in docs] for name, docs in splits.items()})


def _read_stdlib(data_config) -> list[Document]:
  root = config_field(data_config, "stdlib_dir", "") or sysconfig.get_paths()["stdlib"]
  return read_stdlib(root)


def _read_paragraphs(paths: Sequence[str]) -> list[Document]:
  return [(text, text) for text in read_text_files(paths)]


def load_documents(data_config) -> TextSplits:
  """Builds the train/validation/test documents that `config.data` describes."""
  return load_splits(
      data_config, builtin={"python_stdlib": _read_stdlib}, read_files=_read_paragraphs,
      identities=lambda docs: [identity for identity, _ in docs], build=_texts,
      reader="a language model", noun="documents",
      files_hint="plain text files (documents are separated by blank lines)")


# --------------------------------------------------------------------------- pipelines


class _Tokenize(grain.transforms.Map):

  def __init__(self, tokenizer: Tokenizer):
    self._tokenizer = tokenizer

  def map(self, text: str) -> np.ndarray:
    return self._tokenizer.encode(text)


class _Chunk(grain.experimental.FlatMapTransform):
  """One tokenized document -> consecutive chunks of at most `max_length` tokens."""

  def __init__(self, max_length: int):
    self._max_length = max_length
    self.max_fan_out = 1 << 20  # only bounds grain's random-access flat map.

  def flat_map(self, ids: np.ndarray) -> list[dict[str, np.ndarray]]:
    n = self._max_length
    return [{"targets": ids[i:i + n]} for i in range(0, len(ids), n)]


def chunks(ids: np.ndarray, max_length: int) -> list[np.ndarray]:
  """The chunks that the pipelines cut a tokenized document into."""
  return [c["targets"] for c in _Chunk(max_length).flat_map(ids)]


def _chunked(ds: grain.MapDataset, tokenizer: Tokenizer, max_length: int, *,
             num_packing_bins: int, seed: int, shuffle_bins: bool,
             read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
  if max_length < 1:
    raise ValueError(f"max_length={max_length} must be at least 1")
  ds = ds.map(_Tokenize(tokenizer)).to_iter_dataset(read_options)
  ds = grain.experimental.FlatMapIterDataset(ds, _Chunk(max_length))
  return grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={"targets": max_length}, num_packing_bins=num_packing_bins,
      seed=seed, shuffle_bins=shuffle_bins)


class LMTrainStream(RowStreams):
  """Documents for a language model: each row's slice reshuffled every epoch, tokenized,
  cut into chunks of at most `max_length` tokens and packed.

  A row reads the chunks of one document in order before the next document, but
  the B rows of a global batch come from B different documents.
  """

  def __init__(self, documents: Sequence[str], tokenizer: Tokenizer, *,
               global_batch_size: int, rows: Sequence[int], max_length: int, seed: int,
               num_packing_bins: int):
    def row_dataset(examples: grain.MapDataset, seed: int) -> grain.IterDataset:
      return _chunked(examples.shuffle(seed=seed).repeat(None), tokenizer, max_length,
                      num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=True,
                      read_options=ROW_READ_OPTIONS)
    super().__init__(documents, row_dataset, global_batch_size=global_batch_size, rows=rows,
                     seed=seed, what="documents")


def lm_eval_batches(documents: Sequence[str], tokenizer: Tokenizer, *, batch_size: int,
                    max_length: int, num_packing_bins: int, process_index: int = 0,
                    process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """One deterministic pass over this process's documents (`process_index::process_count`)
  as packed batches of exactly `batch_size` rows; the last is filled with padding rows."""
  documents = list(documents)
  mine = [documents[i] for i in process_shard(len(documents), process_index, process_count)]
  ds = grain.MapDataset.source(mine)
  ds = _chunked(ds, tokenizer, max_length, num_packing_bins=num_packing_bins, seed=0,
                shuffle_bins=False)
  return [pad_batch(b, batch_size) for b in ds.batch(batch_size, drop_remainder=False)]


# --------------------------------------------------------------------------- baseline


def unigram_log_probs(train_documents: Iterable[str], tokenizer: Tokenizer) -> np.ndarray:
  """Log-probabilities [vocab] of an add-one-smoothed unigram model of `train_documents`,
  counting every token the LM is scored on (EOS included)."""
  vocab = tokenizer.vocab_size
  counts = np.zeros(vocab, np.int64)
  for text in train_documents:
    counts += np.bincount(tokenizer.encode(text), minlength=vocab)[:vocab]
  return np.log(counts + 1.0) - math.log(counts.sum() + vocab)


def unigram_perplexity(train_documents: Iterable[str], eval_documents: Iterable[str],
                       tokenizer: Tokenizer, log_probs: np.ndarray | None = None) -> float:
  """Per-token perplexity on `eval_documents` of the unigram model of `train_documents`
  (or of `log_probs` from `unigram_log_probs`, fitted once for several splits).

  A language model that learns anything beyond token frequencies must score below this.
  """
  log_p = unigram_log_probs(train_documents, tokenizer) if log_probs is None else log_probs
  total, n = 0.0, 0
  for text in eval_documents:
    ids = tokenizer.encode(text)
    total += float(log_p[ids].sum())
    n += len(ids)
  if n == 0:
    raise ValueError("unigram_perplexity: the eval documents hold no tokens")
  return math.exp(-total / n)
