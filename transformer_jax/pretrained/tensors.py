"""Named tensors of a Hugging Face folder, taken one by one with their shapes checked."""

from __future__ import annotations

import numpy as np

from transformer_jax.errors import ConfigError


class PretrainedError(ConfigError):
  """A Hugging Face folder that cannot be used; the message names the file, tensor or field."""


class Tensors:
  """A folder's tensors by name; `take` checks presence and shape, and remembers what it took.

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
    self.taken: set[str] = set()

  def has(self, name: str) -> bool:
    return name in self.arrays

  def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in self.arrays:
      raise PretrainedError(f"{self.source}: tensor {name!r} is missing")
    array = self.arrays[name]
    if tuple(array.shape) != tuple(shape):
      raise PretrainedError(f"{self.source}: tensor {name!r} has shape {tuple(array.shape)}, "
                            f"config.json says {tuple(shape)}")
    self.taken.add(name)
    return np.asarray(array, np.float32)

  def unused(self, ignore: tuple[str, ...] = ()) -> list[str]:
    return sorted(n for n in self.arrays
                  if n not in self.taken and not any(s in n for s in ignore))


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


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, path + "/"))
    else:
      out[path] = np.asarray(value)
  return out
