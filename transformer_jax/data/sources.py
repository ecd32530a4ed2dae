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
import gettext
import glob
import json
import logging
import os
from collections.abc import Iterable, Sequence

from transformer_jax.data.splits import CorpusError, NamedSplits, load_splits, split_by_hash

Pair = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Corpus(NamedSplits):
  train: list[Pair]
  validation: list[Pair]
  test: list[Pair]


def normalize(text: str) -> str:
  """Collapses runs of whitespace (catalog entries often carry newlines)."""
  return " ".join(text.split())


# --------------------------------------------------------------------------- gettext


def find_catalogs(locale_dirs: Sequence[str], lang: str) -> list[str]:
  """All `*.mo` files for `lang` (and its regional variants, e.g. de_CH)."""
  files = []
  for root in locale_dirs:
    for pattern in (f"{lang}/LC_MESSAGES/*.mo", f"{lang}_*/LC_MESSAGES/*.mo",
                    f"{lang}@*/LC_MESSAGES/*.mo"):
      files.extend(glob.glob(os.path.join(root, pattern)))
  return sorted(set(files))


def read_catalog(path: str) -> Iterable[Pair]:
  """Yields (msgid, msgstr) pairs of one compiled catalog, singular forms only."""
  with open(path, "rb") as f:
    catalog = gettext.GNUTranslations(f)._catalog  # pylint: disable=protected-access
  for key, value in catalog.items():
    if isinstance(key, tuple):  # plural entry: (msgid, index); keep the singular.
      key, index = key
      if index != 0:
        continue
    if "\x04" in key:  # "context\x04msgid"
      key = key.split("\x04", 1)[1]
    yield key, value


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


# --------------------------------------------------------------------------- files


def read_two_field_file(path: str, keys: tuple[str, str], what: str):
  """Yields (line number, first, second) from TSV (`first<TAB>second`) or JSONL
  (`{keys[0]: "...", keys[1]: "..." or a number}`) lines. Blank lines are skipped
  silently; lines that are not UTF-8 or not of that form are skipped and counted, in
  one `note:` line naming the file and the first such line. CorpusError, naming the
  file, when it is missing, unreadable, or holds no usable line. `what` names the data."""
  if not os.path.exists(path):
    raise CorpusError(f"{what} file not found: {path}")
  try:
    f = open(path, "rb")  # pylint: disable=consider-using-with
  except OSError as e:
    raise CorpusError(f"cannot read the {what} file {path}: {e.strerror}") from e
  is_jsonl = path.endswith((".jsonl", ".json"))
  form = (f"a JSON object with a string '{keys[0]}' and a string or number '{keys[1]}'"
          if is_jsonl else f"2 tab-separated fields ({keys[0]}<TAB>{keys[1]})")
  skipped: collections.Counter = collections.Counter()
  first_bad, good = 0, 0
  with f:
    try:
      for lineno, raw in enumerate(f, 1):
        try:
          line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
          skipped["not UTF-8"] += 1
          first_bad = first_bad or lineno
          continue
        if not line.strip():
          continue
        row = _two_fields(line, keys, is_jsonl)
        if row is None:
          skipped[f"not {form}"] += 1
          first_bad = first_bad or lineno
          continue
        good += 1
        yield lineno, row[0], row[1]
    except OSError as e:
      raise CorpusError(f"cannot read the {what} file {path}: {e.strerror}") from e
  detail = "; ".join(f"{n} {why}" for why, n in skipped.items())
  if not good:
    raise CorpusError(f"{path}: no usable {what} line" +
                      (f" ({detail}; the first at line {first_bad})" if skipped else
                       " (the file is empty)"))
  if skipped:
    print(f"note: {path}: skipped {sum(skipped.values())} of {good + sum(skipped.values())} "
          f"lines ({detail}; the first at line {first_bad})", flush=True)


def _two_fields(line: str, keys: tuple[str, str], is_jsonl: bool) -> tuple | None:
  """(first, second) of one TSV or JSONL line; None when it is not of that form."""
  if not is_jsonl:
    fields = line.split("\t")
    return (fields[0], fields[1]) if len(fields) == 2 else None
  try:
    record = json.loads(line)
  except ValueError:
    return None
  if not isinstance(record, dict):
    return None
  first, second = record.get(keys[0]), record.get(keys[1])
  if not isinstance(first, str) or isinstance(second, bool) or \
      not isinstance(second, (str, int, float)):
    return None
  return first, second


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
