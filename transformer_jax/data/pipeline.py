"""grain input pipelines for translation: shuffle, tokenize, filter, pack, batch.

Every pipeline reads only this process's shard of the examples. The training
iterator is a grain `DatasetIterator`, whose state the checkpoint saves, so a
resumed run continues the same stream. Packed batches carry
`{inputs,targets}_segment_ids` (0 marks padding) and `*_positions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import numpy as np

from transformer_jax.data.sources import Pair
from transformer_jax.data.tokenizer import Tokenizer

FEATURES = ("inputs", "targets")


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


def train_dataset(pairs: Sequence[Pair], tokenizer: Tokenizer, *, batch_size: int,
                  max_length: int, seed: int, num_packing_bins: int,
                  process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """An endless, seeded stream of packed batches of `batch_size` rows.

  The examples are reshuffled every epoch (shuffle before repeat).
  """
  ds = grain.MapDataset.source(list(pairs))
  ds = _shard(ds, process_index, process_count)
  ds = ds.shuffle(seed=seed).repeat(None).map(_Tokenize(tokenizer))
  ds = ds.to_iter_dataset().filter(_FitsLength(max_length))
  ds = _pack(ds, max_length, num_packing_bins, seed, shuffle_bins=True)
  return ds.batch(batch_size, drop_remainder=True)


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
