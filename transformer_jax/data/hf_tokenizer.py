"""A Hugging Face `tokenizer.json` in place of sentencepiece (config.data.tokenizer_path="hf:DIR").

Read with the `tokenizers` package. A tokenizer.json may carry padding and
truncation settings (all-MiniLM-L6-v2's pads every text to 128): both are
switched off, since the pipeline cuts and pads itself.

This stack reserves id 0 for padding (and the decoder's start) and id 1 for the
end of a text (EOS). Two layouts follow:

- The tokenizer's padding token is id 0 (BERT's [PAD]): ids are the tokenizer's
  own (`offset` 0). `encode` adds its special tokens (BERT: [CLS] first, [SEP]
  last; Gemma's <pad>: <bos> first, and its <eos>, which the post-processor leaves
  out, appended) and, given a `max_length`, cuts the text so that they survive.
- Id 0 is an ordinary token (GPT-2's "!"): every id moves up by `offset` 2, and
  the tokenizer's end-of-text token (GPT-2's <|endoftext|>) becomes our EOS, 1.
  A model loaded from the folder gets its embedding rows moved the same way
  (pretrained.load_into), and export_hf moves them back.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence

import numpy as np

from transformer_jax.data.tokenizer import EOS_ID, PAD_ID, Tokenizer, TokenizerError

PREFIX = "hf:"
PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>")
EOS_TOKENS = ("<|endoftext|>", "</s>", "<eos>", "<|eos|>")
SHIFT = 2  # ids 0 (padding) and 1 (EOS) come first when id 0 is an ordinary token.


def _own_eos_id(folder: str, tok) -> int | None:
  """The id of the folder's end-of-text token: tokenizer_config.json's eos_token where it
  names one the vocabulary holds (Gemma's <eos>: its vocabulary holds </s> too), else the
  first of EOS_TOKENS that the vocabulary holds."""
  path = os.path.join(folder, "tokenizer_config.json")
  named = None
  if os.path.exists(path):
    try:
      with open(path, encoding="utf-8") as f:
        named = json.load(f).get("eos_token")
    except (OSError, ValueError, AttributeError):
      named = None  # an unreadable config: the vocabulary's own tokens decide.
  if isinstance(named, dict):  # {"content": "<eos>", ...}, as older folders write it.
    named = named.get("content")
  if isinstance(named, str) and tok.token_to_id(named) is not None:
    return tok.token_to_id(named)
  ids = [tok.token_to_id(t) for t in EOS_TOKENS if tok.token_to_id(t) is not None]
  return ids[0] if ids else None


class HfTokenizer:
  """The Tokenizer interface (vocab_size, encode, decode, pieces) over a tokenizer.json."""

  def __init__(self, folder: str):
    import tokenizers  # pylint: disable=import-outside-toplevel
    self.folder = folder
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(path):
      raise TokenizerError(f"config.data.tokenizer_path={PREFIX}{folder}: no tokenizer.json "
                           "in that folder")
    try:
      self._tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception on a bad file.
      raise TokenizerError(f"{path}: cannot be read by the tokenizers package: {e}") from e
    self._tok.no_padding()
    self._tok.no_truncation()
    pads = [self._tok.token_to_id(t) for t in PAD_TOKENS if self._tok.token_to_id(t) is not None]
    self.eos_id = _own_eos_id(folder, self._tok)  # the tokenizer's id of its end-of-text token.
    if pads and pads[0] == PAD_ID:
      self.offset = 0
    elif self.eos_id is not None:
      self.offset = SHIFT
    else:
      raise TokenizerError(
          f"{path}: id {PAD_ID} is {self._tok.id_to_token(PAD_ID)!r}, not a padding token, and "
          f"there is no end-of-text token ({', '.join(EOS_TOKENS)}) to end texts with")
    self._specials = self._tok.num_special_tokens_to_add(False)
    probe = self._tok.encode("a", add_special_tokens=True)  # the post-processor's marks.
    # A post-processor that ends no text with the end-of-text token (Gemma's adds <bos>
    # only): `encode` appends it, so that a document the model learns from has an end.
    self._append_eos = (self.offset == 0 and self.eos_id is not None and
                        probe.ids[-1] != self.eos_id)
    self.start_ids = self._start_ids(probe)

  def _start_ids(self, probe) -> tuple[int, ...]:
    """Our ids of the special tokens that the tokenizer's post-processor puts before every
    text (Gemma's <bos>, Llama 3's <|begin_of_text|>; none for GPT-2's): what a pretrained
    decoder's own texts start with. `encode` adds them only in the unshifted layout (with
    add_eos), so code that builds a decoder's sequences from pieces puts them first.
    `probe`: a text encoded with the special tokens."""
    lead = []
    for i, special in zip(probe.ids, probe.special_tokens_mask):
      if not special:
        break
      lead.append(EOS_ID if self.offset and i == self.eos_id else i + self.offset)
    return tuple(lead)

  @property
  def vocab_size(self) -> int:
    """Our ids: the tokenizer's, plus `offset`."""
    return self.own_vocab_size + self.offset

  @property
  def own_vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_eos: bool = True, max_length: int | None = None) -> np.ndarray:
    """Ids with the end marks (add_eos=False: none): the tokenizer's special tokens, or EOS
    (1) in the shifted layout; at most max_length, the end marks kept."""
    enc = self._tok.encode(text, add_special_tokens=False)
    if max_length is not None:
      # EOS, or the post-processor's marks ([CLS] [SEP]; <bos>) and the appended EOS.
      marks = (1 if self.offset else self._specials + self._append_eos) if add_eos else 0
      keep = max(max_length - marks, 0)
      if len(enc.ids) > keep:
        enc.truncate(keep)
    if not self.offset:
      if not add_eos:
        return np.asarray(enc.ids, dtype=np.int32)
      ids = self._tok.post_process(enc).ids + ([self.eos_id] if self._append_eos else [])
      return np.asarray(ids, dtype=np.int32)
    ids = [EOS_ID if i == self.eos_id else i + self.offset for i in enc.ids]
    if add_eos:
      ids.append(EOS_ID)
    return np.asarray(ids, dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of the ids up to the first EOS (shifted layout), without padding, special
    tokens and ids beyond the vocabulary."""
    size = self.vocab_size
    keep = []
    for i in np.asarray(ids).tolist():
      if self.offset and i == EOS_ID:
        break
      if i >= self.offset and i != PAD_ID and i < size:
        keep.append(i - self.offset)
    return self._tok.decode(keep, skip_special_tokens=True)

  def id_texts(self) -> list[str]:
    """The text of each of our ids alone (as `decode` gives it), in one call."""
    own = self._tok.decode_batch([[i] for i in range(self.own_vocab_size)],
                                 skip_special_tokens=True)
    if not self.offset:
      return own
    return ["", ""] + [("" if i == self.eos_id else text) for i, text in enumerate(own)]

  def pieces(self, text: str) -> list[str]:
    return self._tok.encode(text, add_special_tokens=False).tokens

  def id_pieces(self, ids: Sequence[int] | np.ndarray) -> list[str]:
    """The token of each id (`<pad>`, `</s>` for the ids the shifted layout adds)."""
    out = []
    for i in np.asarray(ids).tolist():
      if self.offset and i == PAD_ID:
        out.append("<pad>")
      elif self.offset and i == EOS_ID:
        out.append("</s>")
      else:
        out.append(self._tok.id_to_token(i - self.offset) or f"<{i}>")
    return out


def is_hf(path: str) -> bool:
  return path.startswith(PREFIX)


def load(path: str) -> HfTokenizer:
  """The tokenizer of "hf:FOLDER", parsed once per version of its tokenizer.json (a run reads
  it while configuring, building its task and loading weights: Gemma 3's takes 1.6 s)."""
  folder = path[len(PREFIX):]
  try:
    stat = os.stat(os.path.join(folder, "tokenizer.json"))
  except OSError:
    return HfTokenizer(folder)  # which names the missing file.
  try:  # it names the end-of-text token.
    config = os.stat(os.path.join(folder, "tokenizer_config.json"))
    config_version = (config.st_mtime_ns, config.st_size)
  except OSError:
    config_version = None
  return _parsed(folder, (stat.st_mtime_ns, stat.st_size, config_version))


@functools.lru_cache(maxsize=4)
def _parsed(folder: str, version: tuple) -> HfTokenizer:
  del version  # the cache's key: a rewritten file is parsed again.
  return HfTokenizer(folder)


def open_tokenizer(path: str):
  """The tokenizer at `path`: "hf:FOLDER" (tokenizer.json) or a sentencepiece model file."""
  if is_hf(path):
    return load(path)
  return Tokenizer.load(path)
