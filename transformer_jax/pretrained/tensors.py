"""Named tensors of a Hugging Face folder, taken one by one with their shapes checked."""

from __future__ import annotations

import numpy as np

from transformer_jax.errors import ConfigError


class PretrainedError(ConfigError):
  """A Hugging Face folder that cannot be used; the message names the file, tensor or field."""


class Tensors:
  """A folder's tensors by name; `take` checks presence and shape.

  A prefix such as "bert." (BertFor* models) or "transformer." (GPT2LMHeadModel)
  is stripped from every name first.
  """

  def __init__(self, arrays: dict[str, np.ndarray], source: str, prefixes: tuple[str, ...] = ()):
    self.source = source
    self.arrays = {}
    for name, array in arrays.items():
      for prefix in prefixes:
        if name.startswith(prefix):
          name = name[len(prefix):]
          break
      self.arrays[name] = array

  def has(self, name: str) -> bool:
    return name in self.arrays

  def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in self.arrays:
      raise PretrainedError(f"{self.source}: tensor {name!r} is missing")
    array = self.arrays[name]
    if tuple(array.shape) != tuple(shape):
      raise PretrainedError(f"{self.source}: tensor {name!r} has shape {tuple(array.shape)}, "
                            f"config.json says {tuple(shape)}")
    return np.asarray(array, np.float32)


def pad_rows(table: np.ndarray, rows: int) -> np.ndarray:
  """`table` with zero rows appended up to `rows` (our vocabulary is padded for sharding)."""
  return np.pad(table, ((0, rows - table.shape[0]), (0, 0)))


def nest(flat: dict[str, np.ndarray]) -> dict:
  """{"a/b/c": x} -> {"a": {"b": {"c": x}}}."""
  out: dict = {}
  for path, value in flat.items():
    node = out
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def _each_table(flat: dict[str, np.ndarray], tables: dict[str, int], fn) -> dict[str, np.ndarray]:
  """`flat` with fn(table, ids first) applied to each token table of `tables` (path -> id axis)."""
  out = dict(flat)
  for path, axis in tables.items():
    if path in flat:
      out[path] = np.moveaxis(fn(np.moveaxis(flat[path], axis, 0)), 0, axis)
  return out


def shift_vocab(flat: dict[str, np.ndarray], tables: dict[str, int], offset: int,
                eos_id: int | None) -> dict[str, np.ndarray]:
  """The folder's token tables in our shifted id layout (data/hf_tokenizer.py): its id i
  becomes i + offset; our padding/start (0) and EOS (1) take its end-of-text token's row."""
  def shift(table):
    shifted = np.zeros_like(table)
    shifted[offset:] = table[:len(table) - offset]
    shifted[:offset] = table[eos_id]
    return shifted
  return _each_table(flat, tables, shift) if offset else flat


def unshift_vocab(flat: dict[str, np.ndarray], tables: dict[str, int], offset: int,
                  eos_id: int | None) -> dict[str, np.ndarray]:
  """Back to the folder's ids: our id i + offset is its i, and its end-of-text token takes
  our EOS row (1), the one training taught to end texts."""
  def unshift(table):
    own = np.zeros_like(table)
    own[:len(table) - offset] = table[offset:]
    own[eos_id] = table[1]
    return own
  return _each_table(flat, tables, unshift) if offset else flat
