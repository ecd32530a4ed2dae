"""The prompt template of a language model trained on translation pairs (the record's part).

`config.data.source = "translation_pairs"` trains the decoder_lm on the translation kind's
parallel corpus, each pair one prompted document (pairs.py). What the record needs of it
lives here, light to import: the source's name, the batch key of its loss weights, the
config checks and the template itself (which the translate tool reads from a run's config).
"""

from __future__ import annotations

from transformer_jax.errors import fail
from transformer_jax.kinds.translation.record import check_corpus
from transformer_jax.metrics import objectives

SOURCE = "translation_pairs"
# The translation kind's sources (its config.data.source), here config.data.pair_source.
PAIR_SOURCES = ("gettext", "files")
PLACE = "{source}"  # where the source sentence goes in config.data.prompt_template.
# Per-token loss weights [B, L] float32 of a prompted batch: 0 on the prompt, 1 on the
# target and its EOS, 0 on padding (the objective reads them where a batch has them).
WEIGHTS = objectives.TARGET_WEIGHTS


def is_prompted(config) -> bool:
  """Whether the run trains on prompted translation pairs."""
  return config.data.source == SOURCE


def template_of(config) -> str:
  """The run's prompt template; "" for a language model of plain documents."""
  return config.data.prompt_template if is_prompted(config) else ""


def fill(template: str, source: str) -> str:
  """The prompt for `source` (plain replacement: other braces in the template stay)."""
  return template.replace(PLACE, source)


def check(config) -> None:
  """The prompted source's fields (ConfigError naming the field); nothing for other sources."""
  if not is_prompted(config):
    return
  d = config.data
  template = d.prompt_template
  if not isinstance(template, str) or template.count(PLACE) != 1:
    fail("data.prompt_template", template,
         f"must hold {PLACE} exactly once (where each source sentence goes), e.g. "
         "'English: {source}\\nGerman:'")
  if not template.replace(PLACE, "").strip():
    fail("data.prompt_template", template,
         f"must hold text beside {PLACE} (the model reads it to tell the source from the "
         "translation)")
  if d.pair_source not in PAIR_SOURCES:
    fail("data.pair_source", d.pair_source, f"must be one of {PAIR_SOURCES} (where "
         f"data.source={SOURCE!r} reads its pairs)")
  if d.pair_source == "files" and not d.train_files:
    fail("data.train_files", d.train_files, "data.pair_source='files' needs at least one "
         'file (TSV source<TAB>target or JSONL {"source": ..., "target": ...})')
  check_corpus(d, d.pair_source)
  if config.max_predict_length < 2:
    fail("max_predict_length", config.max_predict_length,
         "must be at least 2: the prompt takes up to half of it, the translation the rest")
