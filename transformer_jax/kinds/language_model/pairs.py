"""Translation pairs as prompted documents for a decoder-only LM (data.source="translation_pairs").

The pairs and their train/validation/test splits are the translation kind's for the same
config.data fields (kinds/translation/corpus.py's `load_corpus`, with data.pair_source,
gettext or files, as its data.source), so the two kinds train and are scored on the
same sentences.

A pair is one document, in token ids:

    start ids   prompt                          " " + target        EOS
    (<bos>)     "English: {source}\\nGerman:"    " Datei öffnen"

The start ids are what the tokenizer's post-processor puts before a text (Gemma's <bos>;
none for ours or GPT-2's; `HfTokenizer.start_ids`): a pretrained decoder reads its texts
after them (without its <bos>, Gemma 3 270M translates nothing). The prompt is
data.prompt_template with the source in place of {source}, tokenized on its own, so that
the prompt a translation is decoded from is exactly the prefix the model was trained on;
the target's ids are what the whole text gives after it (`PromptedPairs.document`).
Batches carry `targets_weights` beside the LM's keys: 0 on the start ids and the prompt, 1
on the target and its EOS, so the loss counts the translation alone.

Documents are packed as the LM packs its chunks (grain's first-fit packing: segment ids, and
positions restarting at each pair), several short pairs to a row of max_target_length
tokens. A pair longer than that is left out (cutting it would cut off its target); the
task says how many.

Decoding gives each source's prompt (start ids, then the template, its source cut where the
prompt would take more than half of max_predict_length) and continues it, greedy or
sampled, until EOS or a token that holds a newline (`decode_kwargs`); the text is the
continuation up to its first newline, stripped.
"""

from __future__ import annotations

from collections.abc import Sequence

import grain
import ml_collections
import numpy as np

from transformer_jax.data import streams
from transformer_jax.data.files import Pair
from transformer_jax.data.tokenizer import EOS_ID, PAD_ID, Tokenizer
from transformer_jax.errors import fail
from transformer_jax.kinds.language_model import prompts
from transformer_jax.kinds.task import prompt_batch
from transformer_jax.kinds.translation import corpus as translation_corpus

SEPARATOR = " "  # between the prompt and the target.
PROMPT_BUCKET = 16  # decoding prompts are padded to a multiple of this many tokens.
KEYS = ("targets", "targets_segment_ids", "targets_positions", prompts.WEIGHTS)


def load_pairs(data_config) -> translation_corpus.Corpus:
  """The translation kind's corpus and splits for these data fields (data.pair_source in
  place of data.source)."""
  fields = ml_collections.ConfigDict(data_config.to_dict())
  fields.source = data_config.pair_source
  return translation_corpus.load_corpus(fields)


def document_text(template: str, pair: Pair) -> str:
  """A pair's document as text, without the start ids and EOS (what our own tokenizer
  learns from)."""
  return prompts.fill(template, pair[0]) + SEPARATOR + pair[1]


class PromptedPairs(grain.transforms.Map):
  """A pair -> {"targets": start ids + prompt + " " target + EOS, "targets_weights": 0 on
  the start ids and the prompt, 1 after}."""

  def __init__(self, tokenizer: Tokenizer, template: str):
    self._tokenizer, self._template = tokenizer, template
    self._start = np.asarray(tokenizer.start_ids, np.int32)

  def prompt(self, source: str, max_tokens: int | None = None) -> np.ndarray:
    """The prompt's ids for `source`; with `max_tokens`, the source is cut (whole tokens
    from its end) until the prompt fits, where it can."""
    ids = self._ids(source)
    while max_tokens is not None and len(ids) > max_tokens and source:
      src = self._tokenizer.encode(source, add_eos=False)
      keep = max(len(src) - (len(ids) - max_tokens), 0)
      shorter = self._tokenizer.decode(src[:keep]).rstrip()
      source = shorter if len(shorter) < len(source) else source[:-1]
      ids = self._ids(source)
    return ids

  def _ids(self, source: str) -> np.ndarray:
    prompt = self._tokenizer.encode(prompts.fill(self._template, source), add_eos=False)
    return np.concatenate([self._start, prompt]).astype(np.int32)

  def document(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(ids, weights) of one pair's document. The target's ids are those the whole text
    (prompt, separator, target) gives after the prompt's own, as the tokenizer reads the
    target in that place (a sentencepiece model's leading-space piece comes once); where
    the tokenizer merged across the prompt's end, the target is tokenized on its own."""
    src, tgt = pair
    text = prompts.fill(self._template, src)
    prompt = self._tokenizer.encode(text, add_eos=False)
    whole = self._tokenizer.encode(text + SEPARATOR + tgt, add_eos=False)
    if len(whole) > len(prompt) and np.array_equal(whole[:len(prompt)], prompt):
      target = whole[len(prompt):]
    else:
      target = self._tokenizer.encode(SEPARATOR + tgt, add_eos=False)
    ids = np.concatenate([self._start, prompt, target, [EOS_ID]]).astype(np.int32)
    weights = np.zeros(len(ids), np.float32)
    weights[len(self._start) + len(prompt):] = 1.0
    return ids, weights

  def map(self, pair: Pair) -> dict[str, np.ndarray]:
    ids, weights = self.document(pair)
    return {"targets": ids, prompts.WEIGHTS: weights}


class _Fits(grain.transforms.Filter):

  def __init__(self, max_length: int):
    self._max_length = max_length

  def filter(self, example: dict[str, np.ndarray]) -> bool:
    return len(example["targets"]) <= self._max_length


class _LMKeys(grain.transforms.Map):
  """A packed row's LM keys and weights (packing gives the weights segment ids and
  positions of their own, the same as the targets')."""

  def map(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: row[k] for k in KEYS}


def _packed(ds: grain.IterDataset, max_length: int, *, num_packing_bins: int, seed: int,
            shuffle_bins: bool) -> grain.IterDataset:
  ds = ds.filter(_Fits(max_length))
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct={"targets": max_length, prompts.WEIGHTS: max_length},
      num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=shuffle_bins)
  return ds.map(_LMKeys())


class PairTrainStream(streams.RowStreams):
  """Prompted pairs: each row's slice reshuffled every epoch, made documents, those longer
  than `max_length` left out, packed."""

  def __init__(self, pairs: Sequence[Pair], encoder: PromptedPairs, *, global_batch_size: int,
               rows: Sequence[int], max_length: int, seed: int, num_packing_bins: int):
    def row_dataset(examples: grain.MapDataset, seed: int) -> grain.IterDataset:
      ds = examples.shuffle(seed=seed).repeat(None).map(encoder)
      return _packed(ds.to_iter_dataset(streams.ROW_READ_OPTIONS), max_length,
                     num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=True)
    super().__init__(pairs, row_dataset, global_batch_size=global_batch_size, rows=rows,
                     seed=seed, what="pairs")


def eval_batches(pairs: Sequence[Pair], encoder: PromptedPairs, *, batch_size: int,
                 max_length: int, num_packing_bins: int, process_index: int = 0,
                 process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """One deterministic pass over this process's pairs (`process_index::process_count`) as
  packed batches of exactly `batch_size` rows, the last filled with padding rows (weight 0);
  pairs longer than `max_length` are left out (`count_too_long`)."""
  pairs = list(pairs)
  mine = [pairs[i] for i in streams.process_shard(len(pairs), process_index, process_count)]
  ds = grain.MapDataset.source(mine).map(encoder).to_iter_dataset()
  ds = _packed(ds, max_length, num_packing_bins=num_packing_bins, seed=0, shuffle_bins=False)
  return [streams.pad_batch(b, batch_size) for b in ds.batch(batch_size, drop_remainder=False)]


def check_fits(pairs: Sequence[Pair], encoder: PromptedPairs, max_length: int,
               sample: int = 1000) -> None:
  """A ConfigError where none of `sample` pairs spread over `pairs` fits in `max_length`
  tokens as a document: the training stream would skip pairs forever."""
  step = max(len(pairs) // sample, 1)
  shortest = min((len(encoder.document(pair)[0]) for pair in pairs[::step]), default=0)
  if shortest > max_length:
    fail("max_target_length", max_length,
         f"no training pair fits in it as a document (prompt, translation and EOS; the "
         f"shortest of {len(pairs[::step])} spread over the split has {shortest} tokens)")


def count_too_long(pairs: Sequence[Pair], encoder: PromptedPairs, max_length: int) -> int:
  """How many of `pairs` make documents longer than `max_length`: those the batches leave out."""
  return sum(len(encoder.document(pair)[0]) > max_length for pair in pairs)


# --------------------------------------------------------------------------- decoding


def newline_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
  """The ids whose text holds a newline (a translation ends before it)."""
  return tuple(i for i, text in enumerate(tokenizer.id_texts())
               if i not in (PAD_ID, EOS_ID) and "\n" in text)


def decode_kwargs(tokenizer: Tokenizer) -> dict:
  """What decode/lm.py generate takes for prompted translation: stop at EOS or a newline."""
  return {"stop_ids": (EOS_ID,) + newline_ids(tokenizer)}


def continuation(tokenizer: Tokenizer, ids: Sequence[int]) -> str:
  """The translation of a decoded continuation: its ids up to EOS, as text up to its first
  newline, stripped."""
  out = []
  for i in np.asarray(ids).tolist():
    if i in (EOS_ID, PAD_ID):
      break
    out.append(i)
  return tokenizer.decode(out).split("\n", 1)[0].strip()


def prompt_limit(max_predict_length: int) -> int:
  """The most tokens a decoding prompt takes: half the decoded row (the rest is for the
  translation)."""
  return max(max_predict_length // 2, 1)


def check_prompt_room(encoder: PromptedPairs, max_predict_length: int) -> None:
  """A ConfigError where the template alone (an empty source) takes more than half of
  max_predict_length, the most a decoding prompt may take."""
  need = len(encoder.prompt(""))
  if need > prompt_limit(max_predict_length):
    fail("max_predict_length", max_predict_length,
         f"leaves no room for the prompt: data.prompt_template takes {need} tokens without "
         f"its source, and a prompt takes at most half of max_predict_length")


def translate(sources: Sequence[str], encoder: PromptedPairs, tokenizer: Tokenizer, *,
              batch_size: int, max_length: int, decode_batch) -> list[str]:
  """One translation per source, in order: each source's prompt continued by
  `decode_batch(ids [batch_size, P], n)` (the decoder: rows of max_length ids come back,
  their prompt first), shortest prompts first in batches (streams.decode_shortest_first).
  """
  check_prompt_room(encoder, max_length)
  limit = prompt_limit(max_length)
  prompt_ids = [encoder.prompt(s, limit) for s in sources]

  def inputs_of(idx):
    # As wide as the batch's longest prompt (in steps of PROMPT_BUCKET, so that few programs
    # compile): the decoder prefills the prompts' width in one pass, logits and all.
    rows = [prompt_ids[i] for i in idx]
    width = min(-(-max(map(len, rows)) // PROMPT_BUCKET) * PROMPT_BUCKET, max_length)
    return prompt_batch(rows, batch_size, width)

  def continuations(inputs, n):
    # Each row's prompt blanked out (padding), leaving its continuation: the rows go to
    # `detokenize` one by one, without their prompts' lengths.
    out = np.array(decode_batch(inputs, n))
    out[:, :inputs.shape[1]][inputs > 0] = PAD_ID
    return out

  def detokenize(row):
    row = np.asarray(row)
    real = np.flatnonzero(row != PAD_ID)
    return continuation(tokenizer, row[real[0]:] if len(real) else [])

  return streams.decode_shortest_first([len(p) for p in prompt_ids], batch_size, inputs_of,
                                       continuations, detokenize)


def long_prompts(sources: Sequence[str], encoder: PromptedPairs, max_length: int) -> int:
  """How many of `sources` are cut to fit their decoding prompt (prompt_limit)."""
  limit = prompt_limit(max_length)
  return sum(len(encoder.prompt(s)) > limit for s in sources)
