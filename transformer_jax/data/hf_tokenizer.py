"""A Hugging Face `tokenizer.json` in place of sentencepiece (config.data.tokenizer_path="hf:DIR").

Read with the `tokenizers` package. A tokenizer.json may carry padding and
truncation settings (all-MiniLM-L6-v2's pads every text to 128): both are
switched off, since the pipeline cuts and pads itself. `encode` adds the
tokenizer's own special tokens (BERT: [CLS] first, [SEP] last) and, given a
`max_length`, cuts the text so that they survive. This stack uses id 0 for
padding, so the tokenizer's padding token must be id 0 (BERT's [PAD] is).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from transformer_jax.data.tokenizer import PAD_ID, Tokenizer, TokenizerError

PREFIX = "hf:"
PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>")


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
    pads = [t for t in PAD_TOKENS if self._tok.token_to_id(t) is not None]
    if not pads or self._tok.token_to_id(pads[0]) != PAD_ID:
      zero = self._tok.id_to_token(PAD_ID)
      raise TokenizerError(
          f"{path}: id {PAD_ID} is {zero!r}, not a padding token; this stack pads with id "
          f"{PAD_ID}, so it needs a tokenizer whose padding token is id {PAD_ID} (BERT's "
          "[PAD] is; GPT-2's vocabulary is not yet supported for training)")
    self._specials = self._tok.num_special_tokens_to_add(False)

  @property
  def vocab_size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_eos: bool = True, max_length: int | None = None) -> np.ndarray:
    """Ids with the tokenizer's special tokens (add_eos=False: none); at most max_length."""
    enc = self._tok.encode(text, add_special_tokens=False)
    if max_length is not None:
      keep = max(max_length - (self._specials if add_eos else 0), 0)
      if len(enc.ids) > keep:
        enc.truncate(keep)
    if add_eos:
      enc = self._tok.post_process(enc)
    ids = enc.ids
    return np.asarray(ids, dtype=np.int32)

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of the ids, without padding, special tokens and ids beyond the vocabulary."""
    size = self.vocab_size
    keep = [i for i in np.asarray(ids).tolist() if i != PAD_ID and i < size]
    return self._tok.decode(keep, skip_special_tokens=True)

  def pieces(self, text: str) -> list[str]:
    return self._tok.encode(text, add_special_tokens=False).tokens


def is_hf(path: str) -> bool:
  return path.startswith(PREFIX)


def load(path: str) -> HfTokenizer:
  return HfTokenizer(path[len(PREFIX):])


def open_tokenizer(path: str):
  """The tokenizer at `path`: "hf:FOLDER" (tokenizer.json) or a sentencepiece model file."""
  if is_hf(path):
    return load(path)
  return Tokenizer.load(path)
