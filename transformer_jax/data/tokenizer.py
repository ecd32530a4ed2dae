"""A joint sentencepiece vocabulary: trained on first use, then loaded.

Two model types: `unigram` (subword pieces, with byte fallback, so any text
encodes) and `char` (one piece per character seen in training, unknown characters
become `<unk>`; for speech, whose encoder learns letters far sooner than subwords).

Ids: 0 = padding (also the decoder's start token), 1 = end of sentence, 2 = unknown.
Program messages carry printf/format placeholders (`%s`, `%1$d`, `%(name)s`,
`{0}`) that a translation must copy verbatim; the frequent ones become
user-defined symbols so they stay single, unbreakable pieces.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import re
import time
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from transformer_jax.errors import TokenizerError

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2

PLACEHOLDER_RE = re.compile(
    r"%(?:\d+\$)?[-#0 +']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t)*[diouxXeEfFgGaAcspnm%]"
    r"|%<|%>|%q[sDEFT]|%\([A-Za-z_][A-Za-z0-9_]*\)[sdrif]|\{[A-Za-z0-9_]*\}")


def placeholders(texts: Iterable[str], min_count: int, max_symbols: int) -> list[str]:
  """The most frequent format placeholders in `texts` (at least `min_count`)."""
  counts = collections.Counter()
  for text in texts:
    counts.update(PLACEHOLDER_RE.findall(text))
  frequent = [s for s, c in counts.most_common() if c >= min_count and len(s) > 1]
  return frequent[:max_symbols]


class Tokenizer:
  """Thin wrapper around a sentencepiece model with numpy in/out."""
  start_ids: tuple[int, ...] = ()  # nothing goes before a text (hf_tokenizer's may have a BOS).

  def __init__(self, model_proto: bytes):
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    if self._sp.pad_id() != PAD_ID or self._sp.eos_id() != EOS_ID:
      raise ValueError("sentencepiece model must use pad_id=0 and eos_id=1")

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    """The sentencepiece model at `path`; TokenizerError naming the file if it is unreadable
    or damaged (it is left as it is)."""
    try:
      with open(path, "rb") as f:
        return cls(f.read())
    except OSError as e:
      raise TokenizerError(f"cannot read the tokenizer {path}: {e.strerror}") from e
    except (RuntimeError, ValueError) as e:
      raise TokenizerError(f"the tokenizer {path} is damaged or not a sentencepiece model "
                           f"({str(e).splitlines()[0][:200]}); restore it, or start a new "
                           "workdir") from e

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str, add_eos: bool = True, max_length: int | None = None) -> np.ndarray:
    """Ids (then EOS with `add_eos`), cut to `max_length` (the EOS is cut first)."""
    ids = self._sp.encode(text)
    if add_eos:
      ids.append(EOS_ID)
    return np.asarray(ids[:max_length], dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Decodes up to the first EOS, ignoring padding and ids beyond the vocabulary.

    (The model pads its vocabulary for even sharding; those ids have no piece.)
    """
    out = []
    size = self.vocab_size
    for i in np.asarray(ids).tolist():
      if i == EOS_ID:
        break
      if i != PAD_ID and i < size:
        out.append(i)
    return self._sp.decode(out)

  def id_texts(self) -> list[str]:
    """The text of each id alone (as `decode` gives it)."""
    return [self.decode([i]) for i in range(self.vocab_size)]

  def pieces(self, text: str) -> list[str]:
    return self._sp.encode(text, out_type=str)

  def id_pieces(self, ids: Sequence[int] | np.ndarray) -> list[str]:
    """The piece of each id (`<pad>`, `</s>` for the special ids)."""
    size = self.vocab_size
    return [self._sp.id_to_piece(i) if 0 <= i < size else f"<{i}>"
            for i in np.asarray(ids).tolist()]


# keep_whitespace: code keeps its layout. Newlines and runs of spaces are pieces
# (sentencepiece otherwise normalises all whitespace to single spaces).
LAYOUT_SYMBOLS = ("\n", "    ", "        ")


MODEL_TYPES = ("unigram", "char")


def train_tokenizer(texts: Sequence[str], vocab_size: int, *,
                    max_sentences: int = 1_000_000, seed_symbols: Sequence[str] = (),
                    character_coverage: float = 0.9999, keep_whitespace: bool = False,
                    model_type: str = "unigram") -> bytes:
  """Trains a sentencepiece model of `model_type` (MODEL_TYPES) on `texts`; returns the
  model proto. A `char` model has every character of `texts` (vocab_size is its upper
  bound) and no byte fallback.

  With `keep_whitespace`, text is not normalised: newlines, indentation and
  runs of spaces survive an encode/decode round trip (for code).
  """
  if model_type not in MODEL_TYPES:
    raise TokenizerError(f"config.data.tokenizer_type={model_type!r} must be one of "
                         f"{MODEL_TYPES}")
  model = io.BytesIO()
  if keep_whitespace:
    seed_symbols = list(LAYOUT_SYMBOLS) + list(seed_symbols)
  if model_type == "char":
    character_coverage = 1.0
  try:
    _train(texts, model, vocab_size, max_sentences, seed_symbols, character_coverage,
           keep_whitespace, model_type)
  except RuntimeError as e:
    if "Vocabulary size" in str(e):
      raise TokenizerError(
          f"config.data.vocab_size={vocab_size} is too small for this corpus's "
          f"characters (sentencepiece: {str(e).split(']')[-1].strip()})") from e
    raise
  return model.getvalue()


def _train(texts, model, vocab_size, max_sentences, seed_symbols, character_coverage,
           keep_whitespace, model_type):
  layout = ({"normalization_rule_name": "identity", "remove_extra_whitespaces": False,
             "allow_whitespace_only_pieces": True} if keep_whitespace else {})
  spm.SentencePieceTrainer.train(
      **layout,
      sentence_iterator=iter(texts),
      model_writer=model,
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=character_coverage,
      input_sentence_size=max_sentences,
      shuffle_input_sentence=True,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      user_defined_symbols=list(seed_symbols),
      split_digits=True,
      byte_fallback=model_type == "unigram",
      hard_vocab_limit=False,
      minloglevel=2,
      num_threads=max(1, min(4, os.cpu_count() or 1)),
  )


def load_or_train(path: str, texts_fn, vocab_size: int, *, is_writer: bool,
                  timeout_s: float = 600.0, use_placeholders: bool = True,
                  keep_whitespace: bool = False, model_type: str = "unigram") -> Tokenizer:
  """Loads the tokenizer at `path`, training it first if it is missing.

  Only the writer process trains and writes (atomically, via a rename); the
  others wait for the file to appear. `texts_fn()` gives the training texts.
  """
  if not os.path.exists(path):
    if is_writer:
      texts = list(texts_fn())
      symbols = placeholders(texts, min_count=5, max_symbols=200) if use_placeholders else []
      logging.info("training a %d-piece %s sentencepiece model on %d texts "
                   "(%d placeholder symbols) -> %s", vocab_size, model_type, len(texts),
                   len(symbols), path)
      proto = train_tokenizer(texts, vocab_size, seed_symbols=symbols,
                              keep_whitespace=keep_whitespace, model_type=model_type)
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      tmp = f"{path}.tmp.{os.getpid()}"
      with open(tmp, "wb") as f:
        f.write(proto)
      os.replace(tmp, path)
    else:
      deadline = time.monotonic() + timeout_s
      while not os.path.exists(path):
        if time.monotonic() > deadline:
          raise TimeoutError(f"waited {timeout_s:.0f}s for the tokenizer {path} "
                             "that process 0 should write")
        time.sleep(0.5)
  return Tokenizer.load(path)
