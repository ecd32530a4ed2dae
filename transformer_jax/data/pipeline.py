"""grain input pipelines for translation: shuffle, tokenize, filter, pack, batch.

Training batches do not depend on how the devices are split into processes:
row r of every global batch comes from its own stream over examples
r, r + B, r + 2B, ... (B = global batch rows), shuffled, tokenized, filtered
and packed. Each process builds only the streams of the rows it feeds, so it
reads only its shard, and one process on 4 devices sees exactly the batches
that two processes on 2 devices each see together. The training stream's
state (every row's grain iterator position, keyed by row) goes into the
checkpoint, so a resumed run continues the same streams, on any process split.
Packed batches carry `{inputs,targets}_segment_ids` (0 marks padding) and
`*_positions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import numpy as np

from transformer_jax.data.sources import Pair
from transformer_jax.data.tokenizer import Tokenizer

FEATURES = ("inputs", "targets")

# Per-row iterators read in the calling thread: grain's defaults (16 prefetch
# threads and a 500-element buffer per iterator) would start thousands of
# threads for a large global batch, and the loop consumes rows one step at a time.
ROW_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


class _Tokenize(grain.transforms.Map):

  def __init__(self, tokenizer: Tokenizer):
    self._tokenizer = tokenizer

  def map(self, pair: Pair) -> dict[str, np.ndarray]:
    src, tgt = pair
    return {"inputs": self._tokenizer.encode(src), "targets": self._tokenizer.encode(tgt)}


class _FitsLength(grain.transforms.Filter):

  def __init__(self, max_length: int):
    self._max_length = max_length

  def filter(self, example: dict[str, np.ndarray]) -> bool:
    return all(len(example[k]) <= self._max_length for k in FEATURES)


def _shard(ds: grain.MapDataset, process_index: int, process_count: int) -> grain.MapDataset:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")
  return ds[process_index::process_count]


def _pack(ds: grain.IterDataset, max_length: int, num_packing_bins: int, seed: int,
          shuffle_bins: bool) -> grain.IterDataset:
  return grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={k: max_length for k in FEATURES},
      num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=shuffle_bins)


def process_rows(global_batch_size: int, process_index: int, process_count: int) -> range:
  """The rows of each global batch that process `process_index` feeds (a contiguous block)."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")
  if global_batch_size % process_count:
    raise ValueError(f"global batch of {global_batch_size} rows does not split over "
                     f"{process_count} processes")
  n = global_batch_size // process_count
  return range(process_index * n, (process_index + 1) * n)


class RowStreams:
  """An endless, seeded stream of this process's rows of every global batch, for any task.

  Row r's examples are r, r + B, r + 2B, ... of the training split (B =
  global_batch_size); `row_dataset(examples, seed)` turns that slice (a grain
  MapDataset) into the row's endless IterDataset (shuffle, repeat, featurize,
  pack). Each call of `next()` stacks one element of every row. `get_state()`
  is keyed by global row, so a checkpoint written by any split of rows over
  processes restores onto any other split with the same global batch size.
  """

  def __init__(self, examples: Sequence, row_dataset, *, global_batch_size: int,
               rows: Sequence[int], seed: int, what: str = "examples"):
    if len(examples) < global_batch_size:
      raise ValueError(f"the training split has {len(examples)} {what}, fewer than the "
                       f"{global_batch_size} rows of a global batch")
    source = grain.MapDataset.source(list(examples))
    self.global_batch_size = global_batch_size
    self.rows = list(rows)
    self._iters = [iter(row_dataset(source[r::global_batch_size], seed)) for r in self.rows]

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    rows = [next(it) for it in self._iters]
    return {k: np.stack([row[k] for row in rows]) for k in rows[0]}

  def get_state(self) -> dict:
    return {"global_batch_size": self.global_batch_size,
            "rows": {str(r): it.get_state() for r, it in zip(self.rows, self._iters)}}

  def set_state(self, state: dict) -> None:
    """Restores this process's rows from a state holding (at least) those rows."""
    if state["global_batch_size"] != self.global_batch_size:
      raise ValueError(f"the data position was saved for a global batch of "
                       f"{state['global_batch_size']} rows, this run has {self.global_batch_size}")
    missing = [r for r in self.rows if str(r) not in state["rows"]]
    if missing:
      raise ValueError(f"the data position holds no state for rows {missing[:5]}")
    for r, it in zip(self.rows, self._iters):
      it.set_state(state["rows"][str(r)])


class TrainStream(RowStreams):
  """Translation pairs: each row's slice reshuffled every epoch (shuffle before repeat),
  tokenized, filtered by length and packed."""

  def __init__(self, pairs: Sequence[Pair], tokenizer: Tokenizer, *, global_batch_size: int,
               rows: Sequence[int], max_length: int, seed: int, num_packing_bins: int):
    def row_dataset(examples: grain.MapDataset, seed: int) -> grain.IterDataset:
      ds = examples.shuffle(seed=seed).repeat(None).map(_Tokenize(tokenizer))
      ds = ds.to_iter_dataset(ROW_READ_OPTIONS).filter(_FitsLength(max_length))
      return _pack(ds, max_length, num_packing_bins, seed, shuffle_bins=True)
    super().__init__(pairs, row_dataset, global_batch_size=global_batch_size, rows=rows,
                     seed=seed, what="pairs")


def eval_batches(pairs: Sequence[Pair], tokenizer: Tokenizer, *, batch_size: int,
                 max_length: int, num_packing_bins: int, process_index: int = 0,
                 process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """One deterministic pass over `pairs` as packed batches of exactly `batch_size`.

  The last batch is filled with all-padding rows (weight 0).
  """
  ds = grain.MapDataset.source(list(pairs))
  ds = _shard(ds, process_index, process_count).map(_Tokenize(tokenizer))
  ds = ds.to_iter_dataset().filter(_FitsLength(max_length))
  ds = _pack(ds, max_length, num_packing_bins, seed=0, shuffle_bins=False)
  ds = ds.batch(batch_size, drop_remainder=False)
  return [pad_batch(b, batch_size) for b in ds]


def pad_batch(batch: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Appends all-zero rows so that every array has `batch_size` rows."""
  n = len(next(iter(batch.values())))
  if n == batch_size:
    return batch
  if n > batch_size:
    raise ValueError(f"batch of {n} rows exceeds batch_size={batch_size}")
  return {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}


def empty_batch(batch_size: int, max_length: int) -> dict[str, np.ndarray]:
  """A packed batch of padding only (weight 0): evens out eval steps across processes."""
  return {f"{k}{suffix}": np.zeros((batch_size, max_length), np.int32)
          for k in FEATURES for suffix in ("", "_segment_ids", "_positions")}


def predict_batches(pairs: Sequence[Pair], tokenizer: Tokenizer, *, batch_size: int,
                    max_length: int):
  """Unpacked *global* source batches for decoding, with their references.

  Every process walks the same batches (each then feeds its own rows to the
  device mesh). Yields `(inputs [batch_size, max_length] int32, sources,
  references)`; the last batch is padded with empty rows, sources longer than
  `max_length` are cut, and the lists hold only the real rows.
  """
  pairs = list(pairs)
  for start in range(0, len(pairs), batch_size):
    chunk = pairs[start:start + batch_size]
    inputs = np.zeros((batch_size, max_length), np.int32)
    for row, (src, _) in enumerate(chunk):
      ids = tokenizer.encode(src)[:max_length]
      inputs[row, :len(ids)] = ids
    yield inputs, [s for s, _ in chunk], [t for _, t in chunk]


def decode_in_batches(sources: Sequence[str], tokenizer: Tokenizer, *, batch_size: int,
                      max_length: int, decode_batch) -> list[str]:
  """One output text per source, in order: `decode_batch(ids [batch_size, max_length], n)`
  (n: the batch's index) gives each global batch's output ids, which are detokenized."""
  out = []
  for n, (inputs, srcs, _) in enumerate(predict_batches(
      [(s, "") for s in sources], tokenizer, batch_size=batch_size, max_length=max_length)):
    ids = decode_batch(inputs, n)
    out.extend(tokenizer.decode(row) for row in ids[:len(srcs)])
  return out
