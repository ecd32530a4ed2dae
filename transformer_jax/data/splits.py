"""Train/validation/test splits for every data kind: hash splits, evaluation order, loading.

An example's split comes from a hash of its identity (a pair's source text, a
labelled text, a document's path or paragraph, an image's bytes), so an example
never sits in two splits, whatever the order in which its files are read.

The training split keeps the order its reader gives (it decides the training
batches). Validation and test are ordered by a fixed hash of the same identity
(`hash_order`), so that their first examples (`validation[:n]`, the first k eval
batches) are a fair sample of the split, not the alphabetically first ones.

`load_splits` is the one way a kind's loader turns `config.data` into its three
splits: a built-in source, or the user's files (`train_files`, and optionally
`validation_files`/`test_files`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from transformer_jax.errors import CorpusError

__all__ = ["CorpusError", "EVAL_SPLITS", "NamedSplits", "SPLITS", "hash_order", "load_splits",
           "split_by_hash"]

SPLITS = ("train", "validation", "test")
EVAL_SPLITS = ("validation", "test")

T = TypeVar("T")
E = TypeVar("E")  # a kind's examples, as it holds them (a list, a tuple of arrays, ...).
R = TypeVar("R")


class NamedSplits:
  """Mixin for dataclasses with `train`, `validation` and `test` fields."""

  def split(self, name: str):
    if name not in SPLITS:
      raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
    return getattr(self, name)


def config_field(data_config, name: str, default):
  """`data_config.name`, or `default` when the config has no such field (or it is None)."""
  try:
    value = getattr(data_config, name)
  except (AttributeError, KeyError):
    return default
  return default if value is None else value


# --------------------------------------------------------------------------- hashing


def _digest(identity: str) -> bytes:
  return hashlib.sha256(identity.encode("utf-8")).digest()


def split_of(identity: str, validation_fraction: float, test_fraction: float) -> str:
  """Deterministic split of one example, from a hash of its identity."""
  u = int.from_bytes(_digest(identity)[:8], "big") / 2**64
  if u < validation_fraction:
    return "validation"
  if u < validation_fraction + test_fraction:
    return "test"
  return "train"


def hash_order(items: Iterable[T], key: Callable[[T], str]) -> list[T]:
  """`items` ordered by a fixed hash (sha256) of each one's identity `key(item)`.

  The order depends neither on the input order nor on the alphabet, so any prefix
  is a fair sample. Items with equal identities keep their input order.
  """
  return sorted(items, key=lambda item: _digest(key(item)))


def split_by_hash(items: Iterable[T], key: Callable[[T], str], validation_fraction: float,
                  test_fraction: float) -> dict[str, list[T]]:
  """`items` by split (`split_of(key(item))`): train in input order, validation and test
  in `hash_order`."""
  out = {name: [] for name in SPLITS}
  for item in items:
    out[split_of(key(item), validation_fraction, test_fraction)].append(item)
  for name in EVAL_SPLITS:
    out[name] = hash_order(out[name], key)
  return out


# --------------------------------------------------------------------------- loading


def take_list(examples: Sequence[T], indices: Sequence[int]) -> list[T]:
  """`examples[i]` for each of `indices`: `load_splits`' `take` for examples in a list."""
  return [examples[i] for i in indices]


def load_splits(data_config, *, builtin: Mapping[str, Callable[[Any], E]],
                read_files: Callable[[list[str]], E],
                identities: Callable[[E], Sequence[str]],
                build: Callable[[dict[str, E]], R],
                take: Callable[[E, list[int]], E] = take_list,
                reader: str, noun: str, files_hint: str) -> R:
  """The train/validation/test splits that `config.data` describes, for any data kind.

  `config.data.source` is one of `builtin` (name -> function of `config.data`
  reading all of that source's examples) or 'files': `read_files(paths)` reads
  `config.data.train_files`, and `validation_files`/`test_files` when either is
  given; otherwise validation and test are carved out of the training files.
  Examples are split by a hash of their identities (`identities(examples)`, one
  string each; see `split_by_hash`), and validation/test read from files are put
  in `hash_order` too. `take(examples, indices)` selects examples in that order;
  `build({split name: examples})` makes the kind's splits record.

  Errors are CorpusErrors naming the config field: an unknown source (`reader`,
  e.g. "a ViT", says who reads the data), no training files (`files_hint` says
  what to give) and an empty split (of `noun`, e.g. "images"), checked in the
  order train, validation, test before `build` runs.
  """
  source = data_config.source
  vf, tf = data_config.validation_fraction, data_config.test_fraction

  def carve(examples: E) -> dict[str, tuple[E, int]]:
    ids = identities(examples)
    by_split = split_by_hash(range(len(ids)), ids.__getitem__, vf, tf)
    return {name: (take(examples, idx), len(idx)) for name, idx in by_split.items()}

  def ordered(examples: E) -> tuple[E, int]:
    ids = identities(examples)
    return take(examples, hash_order(range(len(ids)), ids.__getitem__)), len(ids)

  given = False  # validation/test from their own files.
  if source in builtin:
    parts = carve(builtin[source](data_config))
  elif source == "files":
    train_files = list(config_field(data_config, "train_files", ()))
    if not train_files:
      raise CorpusError(f"config.data.train_files is empty; give one or more {files_hint}")
    train = read_files(train_files)
    eval_files = {name: list(config_field(data_config, f"{name}_files", ()))
                  for name in EVAL_SPLITS}
    given = any(eval_files.values())
    if given:
      parts = {"train": (train, len(identities(train)))}
      for name, paths in eval_files.items():
        parts[name] = ordered(read_files(paths)) if paths else (None, 0)
    else:  # carve validation and test out of the training files.
      parts = carve(train)
  else:
    names = " or ".join(repr(name) for name in (*builtin, "files"))
    raise CorpusError(f"config.data.source={source!r}: {reader} reads {names}")
  for name in SPLITS:
    if not parts[name][1]:
      fix = (f"give more data in config.data.{name}_files" if given else
             "give more data or change validation_fraction/test_fraction")
      raise CorpusError(f"the {name} split has no {noun} (config.data.source={source!r}); "
                        f"{fix}")
  return build({name: parts[name][0] for name in SPLITS})
