"""Per-row, per-process data streams for any model kind: rows, shards, padding.

Training batches do not depend on how the devices are split into processes:
row r of every global batch comes from its own stream over examples
r, r + B, r + 2B, ... (B = global batch rows), which a kind turns into its rows
(shuffle, featurize, pack). Each process builds only the streams of the rows it
feeds, so it reads only its shard, and one process on 4 devices sees exactly the
batches that two processes on 2 devices each see together. A stream's state
(every row's grain iterator position, keyed by row) goes into the checkpoint, so
a resumed run continues the same streams, on any process split.

Evaluation reads each split once: process p takes examples p, p + P, p + 2P, ...
(`process_shard`), and the last batch is filled up with padding rows (`pad_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grain
import numpy as np

# Per-row iterators read in the calling thread: grain's defaults (16 prefetch
# threads and a 500-element buffer per iterator) would start thousands of
# threads for a large global batch, and the loop consumes rows one step at a time.
ROW_READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")


def process_shard(n: int, process_index: int, process_count: int) -> range:
  """The indices of `n` examples that process `process_index` evaluates:
  `process_index::process_count` (disjoint across processes, together all of them)."""
  _check_process(process_index, process_count)
  return range(process_index, n, process_count)


def process_rows(global_batch_size: int, process_index: int, process_count: int) -> range:
  """The rows of each global batch that process `process_index` feeds (a contiguous block)."""
  _check_process(process_index, process_count)
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


def pad_batch(batch: dict[str, np.ndarray], batch_size: int,
              fill: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
  """Appends padding rows so that every array has `batch_size` rows.

  A padding row of key k is all `fill[k]` (0 for keys not in `fill`), e.g.
  `fill={"label": -1}` for classifiers, whose padding rows weigh nothing by label.
  """
  n = len(next(iter(batch.values())))
  if n == batch_size:
    return batch
  if n > batch_size:
    raise ValueError(f"batch of {n} rows exceeds batch_size={batch_size}")
  fill = fill or {}
  return {k: np.concatenate([v, np.full((batch_size - n,) + v.shape[1:], fill.get(k, 0),
                                        v.dtype)])
          for k, v in batch.items()}


def decode_shortest_first(lengths: Sequence[int], batch_size: int, inputs_of, decode_batch,
                          detokenize) -> list[str]:
  """One output text per example, in the examples' order, decoded in batches of
  `batch_size` shortest first (by `lengths`, ties by position), so that a batch holds
  examples of similar length: a decoder stops when every row of a batch has ended, and
  short rows then do not wait for a long one. `inputs_of(indices)` builds a global batch
  of those examples, `decode_batch(inputs, n)` gives the n-th batch's output ids, and
  `detokenize(ids)` one row's text."""
  order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
  out = [""] * len(lengths)
  for n, start in enumerate(range(0, len(order), batch_size)):
    idx = order[start:start + batch_size]
    ids = decode_batch(inputs_of(idx), n)
    for row, i in enumerate(idx):
      out[i] = detokenize(ids[row])
  return out
