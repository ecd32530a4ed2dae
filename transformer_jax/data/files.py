"""The user's data files: two-field TSV / JSONL lines, read with clear errors, and text normalised."""

from __future__ import annotations

import collections
import json
import os

from transformer_jax.data.splits import CorpusError

Pair = tuple[str, str]


def normalize(text: str) -> str:
  """Collapses runs of whitespace (catalog entries often carry newlines)."""
  return " ".join(text.split())


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
