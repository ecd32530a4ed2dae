"""grain input pipelines for translation: shuffle, tokenize, filter, pack, batch.

Training rows come from `streams.RowStreams` (row r of every global batch reads
examples r, r + B, r + 2B, ..., so batches do not depend on the process split);
here each row's pairs are shuffled, tokenized, filtered by length and packed.
Packed batches carry `{inputs,targets}_segment_ids` (0 marks padding) and
`*_positions`. Evaluation packs this process's shard of a split once; pairs
longer than `max_length` are left out (`count_too_long` counts them).
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import numpy as np

from transformer_jax.data import streams
from transformer_jax.data.files import Pair
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


def _pack(ds: grain.IterDataset, max_length: int, num_packing_bins: int, seed: int,
          shuffle_bins: bool) -> grain.IterDataset:
  return grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={k: max_length for k in FEATURES},
      num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=shuffle_bins)


class TrainStream(streams.RowStreams):
  """Translation pairs: each row's slice reshuffled every epoch (shuffle before repeat),
  tokenized, filtered by length and packed."""

  def __init__(self, pairs: Sequence[Pair], tokenizer: Tokenizer, *, global_batch_size: int,
               rows: Sequence[int], max_length: int, seed: int, num_packing_bins: int):
    def row_dataset(examples: grain.MapDataset, seed: int) -> grain.IterDataset:
      ds = examples.shuffle(seed=seed).repeat(None).map(_Tokenize(tokenizer))
      ds = ds.to_iter_dataset(streams.ROW_READ_OPTIONS).filter(_FitsLength(max_length))
      return _pack(ds, max_length, num_packing_bins, seed, shuffle_bins=True)
    super().__init__(pairs, row_dataset, global_batch_size=global_batch_size, rows=rows,
                     seed=seed, what="pairs")


def eval_batches(pairs: Sequence[Pair], tokenizer: Tokenizer, *, batch_size: int,
                 max_length: int, num_packing_bins: int, process_index: int = 0,
                 process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """One deterministic pass over `pairs` as packed batches of exactly `batch_size`.

  This process packs pairs `process_index::process_count`. Pairs longer than
  `max_length` are left out (`count_too_long` says how many). The last batch is
  filled with all-padding rows (weight 0).
  """
  pairs = list(pairs)
  mine = [pairs[i] for i in streams.process_shard(len(pairs), process_index, process_count)]
  ds = grain.MapDataset.source(mine).map(_Tokenize(tokenizer))
  ds = ds.to_iter_dataset().filter(_FitsLength(max_length))
  ds = _pack(ds, max_length, num_packing_bins, seed=0, shuffle_bins=False)
  ds = ds.batch(batch_size, drop_remainder=False)
  return [streams.pad_batch(b, batch_size) for b in ds]


def count_too_long(pairs: Sequence[Pair], tokenizer: Tokenizer, max_length: int) -> int:
  """The number of `pairs` whose source or target token ids (EOS included) are longer
  than `max_length`: exactly the pairs that `eval_batches` leaves out."""
  tokenize, fits = _Tokenize(tokenizer), _FitsLength(max_length)
  return sum(not fits.filter(tokenize.map(pair)) for pair in pairs)


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
  """One output text per source, in the sources' order, shortest first in batches
  (streams.decode_shortest_first): `decode_batch(ids [batch_size, max_length], n)` (n: the
  batch's index) gives each global batch's output ids, which are detokenized."""
  def inputs_of(idx):
    inputs, _, _ = next(predict_batches([(sources[i], "") for i in idx], tokenizer,
                                        batch_size=batch_size, max_length=max_length))
    return inputs
  return streams.decode_shortest_first([len(tokenizer.encode(s)) for s in sources], batch_size,
                                       inputs_of, decode_batch, tokenizer.decode)
