"""Parallel corpora: harvest, read and split (source, target) sentence pairs.

Two sources:
  * `gettext`: real human translations of program messages, read from the
    gettext message catalogs (`*.mo`) installed on the machine.
  * `files`: the user's own parallel data in TSV (`source<TAB>target`) or JSONL
    (`{"source": ..., "target": ...}`) files.

Splits are decided by a hash of the source text alone, so a sentence never sits
in two splits, whatever the order in which files are read (see `splits`): the
training pairs are sorted, validation and test are in hash order.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Sequence

from transformer_jax.data.files import Pair, normalize, read_two_field_file
from transformer_jax.data.gettext import find_catalogs, read_catalog
from transformer_jax.data.splits import CorpusError, NamedSplits, load_splits, split_by_hash


@dataclasses.dataclass(frozen=True)
class Corpus(NamedSplits):
  train: list[Pair]
  validation: list[Pair]
  test: list[Pair]


# --------------------------------------------------------------------------- gettext


def harvest_gettext(locale_dirs: Sequence[str], source_lang: str,
                    target_lang: str) -> list[Pair]:
  """Source->target pairs from installed catalogs, deduplicated and sorted.

  Catalogs are written in English (msgid) and translated into the catalog's
  language (msgstr), so only `source_lang='en'` is supported.
  """
  if source_lang != "en":
    raise CorpusError(
        f"config.data.source_lang={source_lang!r}: gettext catalogs translate "
        "from English; use source_lang='en' or data.source='files'.")
  files = find_catalogs(locale_dirs, target_lang)
  if not files:
    raise CorpusError(
        f"no gettext catalogs (*.mo) for language {target_lang!r} under "
        f"{list(locale_dirs)} (config.data.locale_dirs). Install translated "
        "packages (e.g. `apt-get install` of programs with their locales), or "
        "train on your own parallel data: --config.data.source=files "
        "--config.data.train_files=PATH.tsv (TSV source<TAB>target or JSONL "
        '{"source": ..., "target": ...}).')
  candidates: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for path in files:
    try:
      entries = list(read_catalog(path))
    except (OSError, UnicodeDecodeError, ValueError) as e:
      logging.warning("skipping unreadable catalog %s: %s", path, e)
      continue
    for src, tgt in entries:
      src, tgt = normalize(src), normalize(tgt)
      if src and tgt:
        candidates[src][tgt] += 1
  return dedupe(candidates)


def dedupe(candidates: dict[str, collections.Counter]) -> list[Pair]:
  """One target per source: the most frequent, ties broken by string order."""
  pairs = []
  for src, counts in candidates.items():
    best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    pairs.append((src, best))
  pairs.sort()
  return pairs


def read_parallel_file(path: str) -> list[Pair]:
  """Reads TSV (`source<TAB>target`) or JSONL (`{"source", "target"}`) pairs."""
  pairs = []
  for _, src, tgt in read_two_field_file(path, ("source", "target"), "parallel data"):
    src, tgt = normalize(src), normalize(str(tgt))
    if src and tgt:
      pairs.append((src, tgt))
  return pairs


def read_parallel_files(paths: Sequence[str]) -> list[Pair]:
  candidates: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for path in paths:
    for src, tgt in read_parallel_file(path):
      candidates[src][tgt] += 1
  return dedupe(candidates)


# --------------------------------------------------------------------------- splits


def split_pairs(pairs: Iterable[Pair], validation_fraction: float,
                test_fraction: float) -> Corpus:
  """Splits by a hash of the source text: train sorted, validation and test in hash order."""
  return Corpus(**split_by_hash(sorted(pairs), _source, validation_fraction, test_fraction))


def _source(pair: Pair) -> str:
  return pair[0]


def _read_gettext(data_config) -> list[Pair]:
  return harvest_gettext(list(data_config.locale_dirs), data_config.source_lang,
                         data_config.target_lang)


def load_corpus(data_config) -> Corpus:
  """Builds the train/validation/test corpus that `config.data` describes."""
  return load_splits(
      data_config, builtin={"gettext": _read_gettext}, read_files=read_parallel_files,
      identities=lambda pairs: [src for src, _ in pairs], build=lambda s: Corpus(**s),
      reader="a translation model", noun="pairs",
      files_hint="TSV/JSONL files of parallel text")
