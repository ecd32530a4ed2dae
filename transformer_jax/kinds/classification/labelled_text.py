"""Labelled text for a classifier: sources, deterministic splits, batches, a baseline.

Two sources (`config.data.source`):
  * `debian`: Debian package descriptions labelled with their archive section,
    read from `apt-cache dumpavail` (run `apt-get update` first). The text is
    the Description field (its synopsis line plus the long description when
    the package index carries one, whitespace-normalized); the label is the
    Section without a `contrib/`, `non-free/` or `non-free-firmware/` prefix.
    Identical descriptions are kept once, with their most frequent section.
    Only sections with at least `config.data.min_class_examples` (default 100)
    examples are kept. On Debian bookworm's main archive (63k packages) that is
    ~60k examples in 50 classes; bookworm's index ships synopses only (long
    descriptions live in Translation-en files that apt here does not fetch), so
    most texts are one line.
  * `files`: TSV (`text<TAB>label`) or JSONL (`{"text": ..., "label": ...}`) files
    in `config.data.train_files` (and optionally `validation_files`/`test_files`).

Label ids index the class names sorted by name. Splits come from a hash of the
text, so a text never sits in two splits; training examples are sorted by text,
validation and test are in hash order. Rows are `inputs` (int32 [max_length]:
tokens, EOS included, cut to `max_length`, 0-padded) and `label` (int32 []);
padding rows of eval batches have all-zero inputs and label -1.
"""

from __future__ import annotations

import collections
import dataclasses
import subprocess
from collections.abc import Iterable, Iterator, Sequence

import grain
import numpy as np

from transformer_jax.data.files import normalize, read_two_field_file
from transformer_jax.data.splits import CorpusError, NamedSplits, config_field, load_splits
from transformer_jax.data.streams import ROW_READ_OPTIONS, RowStreams, pad_batch, process_shard
from transformer_jax.data.tokenizer import Tokenizer

Example = tuple[str, int]

DEFAULT_MIN_CLASS_EXAMPLES = 100
SECTION_PREFIXES = ("contrib/", "non-free/", "non-free-firmware/")

@dataclasses.dataclass(frozen=True)
class LabelledSplits(NamedSplits):
  train: list[Example]
  validation: list[Example]
  test: list[Example]
  labels: list[str]  # class names; the label id is the index.


# --------------------------------------------------------------------------- debian


def parse_stanzas(text: str) -> Iterator[dict[str, str]]:
  """The stanzas of a Debian control file (deb822); continuation lines joined by '\\n'."""
  stanza: dict[str, str] = {}
  key = None
  for line in text.splitlines():
    if not line.strip():
      if stanza:
        yield stanza
      stanza, key = {}, None
    elif line[0] in " \t":
      if key is not None:
        stanza[key] += "\n" + line
    elif ":" in line:
      key, value = line.split(":", 1)
      stanza[key] = value.strip()
  if stanza:
    yield stanza


def description_text(description: str) -> str:
  """Synopsis plus long description, without the ' .' paragraph marks, one line."""
  lines = [line.strip() for line in description.split("\n")]
  return normalize(" ".join(line for line in lines if line != "."))


def section_label(section: str) -> str:
  for prefix in SECTION_PREFIXES:
    if section.startswith(prefix):
      return section[len(prefix):]
  return section


def debian_examples(dump: str) -> list[tuple[str, str]]:
  """(description, section) of every package in an `apt-cache dumpavail` listing."""
  out = []
  for stanza in parse_stanzas(dump):
    text = description_text(stanza.get("Description", ""))
    label = section_label(stanza.get("Section", "").strip())
    if text and label:
      out.append((text, label))
  return out


def read_apt_cache() -> str:
  """The output of `apt-cache dumpavail`; a CorpusError when there is none."""
  try:
    result = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True,
                            check=False, timeout=600)
  except FileNotFoundError as e:
    raise CorpusError("config.data.source='debian' needs apt-cache (a Debian/Ubuntu "
                      "machine); or train on your own labelled text with "
                      "--config.data.source=files") from e
  if result.returncode != 0:
    raise CorpusError(f"`apt-cache dumpavail` failed (exit {result.returncode}): "
                      f"{result.stderr.strip()[:500]}")
  if "Package:" not in result.stdout:
    raise CorpusError("`apt-cache dumpavail` lists no packages: run `apt-get update` "
                      "first (config.data.source='debian')")
  return result.stdout


# --------------------------------------------------------------------------- files


def read_labelled_file(path: str) -> list[tuple[str, str]]:
  """Reads TSV (`text<TAB>label`) or JSONL (`{"text", "label"}`) examples."""
  examples = []
  for _, text, label in read_two_field_file(path, ("text", "label"), "labelled data"):
    text, label = normalize(text), str(label).strip()
    if text and label:
      examples.append((text, label))
  return examples


def read_labelled_files(paths: Sequence[str]) -> list[tuple[str, str]]:
  return [ex for path in paths for ex in read_labelled_file(path)]


# --------------------------------------------------------------------------- splits


def dedupe(examples: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
  """One label per text: its most frequent, ties broken by name; sorted by text."""
  counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for text, label in examples:
    counts[text][label] += 1
  return sorted((text, min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0])
                for text, c in counts.items())


def frequent_classes(examples: Sequence[tuple[str, str]], min_count: int) -> list[str]:
  """Class names with at least `min_count` examples, sorted by name."""
  counts = collections.Counter(label for _, label in examples)
  return sorted(label for label, c in counts.items() if c >= min_count)


def _build(splits: dict[str, list[tuple[str, str]]]) -> LabelledSplits:
  """Label ids index the sorted class names found in any split."""
  labels = sorted({label for examples in splits.values() for _, label in examples})
  ids = {name: i for i, name in enumerate(labels)}
  return LabelledSplits(labels=labels, **{
      name: [(text, ids[label]) for text, label in examples] for name, examples in splits.items()})


def _read_debian(data_config) -> list[tuple[str, str]]:
  """The Debian descriptions (deduplicated, sorted) of sections with enough examples."""
  min_count = int(config_field(data_config, "min_class_examples", DEFAULT_MIN_CLASS_EXAMPLES))
  examples = dedupe(debian_examples(read_apt_cache()))
  labels = frequent_classes(examples, min_count)
  if len(labels) < 2:
    raise CorpusError(f"only {len(labels)} Debian sections have at least "
                      f"{min_count} examples (config.data.min_class_examples)")
  kept = set(labels)
  return [ex for ex in examples if ex[1] in kept]


def load_labelled(data_config) -> LabelledSplits:
  """Builds the train/validation/test examples that `config.data` describes."""
  return load_splits(
      data_config, builtin={"debian": _read_debian},
      read_files=lambda paths: dedupe(read_labelled_files(paths)),
      identities=lambda examples: [text for text, _ in examples], build=_build,
      reader="a text classifier", noun="examples",
      files_hint='TSV (text<TAB>label) or JSONL ({"text": ..., "label": ...}) files')


# --------------------------------------------------------------------------- pipelines


def encode(tokenizer: Tokenizer, text: str, max_length: int) -> np.ndarray:
  """Token ids (with the tokenizer's end marks) cut to `max_length` and 0-padded:
  int32 [max_length]. A Hugging Face tokenizer keeps its [CLS] and [SEP] when it cuts."""
  ids = tokenizer.encode(text, max_length=max_length)
  out = np.zeros(max_length, np.int32)
  out[:len(ids)] = ids
  return out


class _Encode(grain.transforms.Map):

  def __init__(self, tokenizer: Tokenizer, max_length: int):
    self._tokenizer = tokenizer
    self._max_length = max_length

  def map(self, example: Example) -> dict[str, np.ndarray]:
    text, label = example
    return {"inputs": encode(self._tokenizer, text, self._max_length),
            "label": np.int32(label)}


class ClassifyTrainStream(RowStreams):
  """Labelled text: each row's slice reshuffled every epoch and encoded (no packing)."""

  def __init__(self, examples: Sequence[Example], tokenizer: Tokenizer, *,
               global_batch_size: int, rows: Sequence[int], max_length: int, seed: int):
    def row_dataset(ds: grain.MapDataset, seed: int) -> grain.IterDataset:
      ds = ds.shuffle(seed=seed).repeat(None).map(_Encode(tokenizer, max_length))
      return ds.to_iter_dataset(ROW_READ_OPTIONS)
    super().__init__(examples, row_dataset, global_batch_size=global_batch_size, rows=rows,
                     seed=seed, what="examples")


def classify_eval_batches(examples: Sequence[Example], tokenizer: Tokenizer, *,
                          batch_size: int, max_length: int, process_index: int = 0,
                          process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """One deterministic pass over this process's examples in batches of exactly
  `batch_size` rows; the last is filled with padding rows (label -1)."""
  mine = [examples[i] for i in process_shard(len(examples), process_index, process_count)]
  batches = []
  for start in range(0, len(mine), batch_size):
    rows = [_Encode(tokenizer, max_length).map(ex) for ex in mine[start:start + batch_size]]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("inputs", "label")}
    batches.append(pad_batch(batch, batch_size, fill={"label": -1}))
  return batches


# --------------------------------------------------------------------------- baseline


def _labels(items) -> np.ndarray:
  if isinstance(items, np.ndarray):
    return items.astype(np.int64).reshape(-1)
  return np.asarray([x[1] if isinstance(x, tuple) else x for x in items], np.int64)


def majority_baseline(train, test) -> float:
  """Accuracy on `test` of always predicting the most frequent label of `train`.

  Each side is a sequence of (x, label) examples or of labels (list or array);
  ties go to the smallest label id.
  """
  train_labels, test_labels = _labels(train), _labels(test)
  if not len(train_labels) or not len(test_labels):
    raise ValueError("majority_baseline needs non-empty train and test labels")
  majority = int(np.argmax(np.bincount(train_labels)))
  return float(np.mean(test_labels == majority))
