"""A tokenizer.json as llama.cpp's GGUF metadata (`tokenizer.ggml.*`): gguf_writer.py's
tokenizer half.

Byte-level BPE is written as llama.cpp's "gpt2" model with a pre-tokenizer name it knows;
SentencePiece-style BPE with byte fallback (Gemma's) as its "llama" model with scores
ranked from the merges; the special tokens, their types and the chat template with them.
A tokenizer of neither kind, or a pre-tokenizer llama.cpp has no name for, is a
PretrainedError that names it.
"""

from __future__ import annotations

import json
import os
import re

from transformer_jax.pretrained.tensors import PretrainedError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# The byte-level pre-tokenizers llama.cpp knows by name (llama-vocab.cpp), each as our
# reader (gguf_tokenizer.py) rebuilds it: "gpt-2" is GPT-2's own split (llama.cpp's
# "default" is another regex).
BYTE_LEVEL_PRES = ("gpt-2", "llama-bpe", "qwen2", "smollm")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
_SPACE = "\u2581"


def _content(entry) -> str | None:
  """A tokenizer_config.json token entry ("<s>", or an AddedToken dict) as its text."""
  if isinstance(entry, dict):
    entry = entry.get("content")
  return entry if isinstance(entry, str) else None


def _strip(node):
  """A pre-tokenizer's JSON without the fields that do not change how text is split."""
  if isinstance(node, dict):
    return {k: _strip(v) for k, v in node.items() if k != "trim_offsets"}
  if isinstance(node, list):
    return [_strip(v) for v in node]
  return node


def _byte_level_pre(spec: dict, source_pre: str | None, where: str) -> str:
  """llama.cpp's name of the tokenizer's split: the source GGUF file's `tokenizer.ggml.pre`
  where the tokenizer still splits as that name does, else the known name that does."""
  from transformer_jax.pretrained import gguf_tokenizer  # pylint: disable=import-outside-toplevel
  if spec.get("normalizer") is not None:
    raise PretrainedError(f"{where}: the byte-level tokenizer has a normalizer "
                          f"({spec['normalizer'].get('type')}), which GGUF cannot express")
  want = _strip(spec.get("pre_tokenizer"))
  for name in ([source_pre] if source_pre else []) + list(BYTE_LEVEL_PRES):
    candidate, _ = gguf_tokenizer._byte_level(  # pylint: disable=protected-access
        {"tokenizer.ggml.tokens": [], "tokenizer.ggml.pre": name})
    if _strip(json.loads(candidate.to_str())["pre_tokenizer"]) == want:
      return name
  raise PretrainedError(f"{where}: the byte-level tokenizer's pre-tokenizer "
                        f"{json.dumps(spec.get('pre_tokenizer'))[:200]} is none that llama.cpp "
                        f"names (supported: {', '.join(BYTE_LEVEL_PRES)})")


def _space_prefix(spec: dict, arch: str, where: str) -> bool:
  """Whether a SentencePiece-style tokenizer.json puts "▁" before the text (Llama 2's) or
  not (Gemma's): the forms that llama.cpp's SPM tokenizer and our reader share."""
  norm, pre = spec.get("normalizer"), spec.get("pre_tokenizer")
  steps = (norm or {}).get("normalizers", [norm] if norm else [])
  replace = any(s.get("type") == "Replace" and s.get("pattern") == {"String": " "}
                and s.get("content") == _SPACE for s in steps)
  prepend = any(s.get("type") == "Prepend" and s.get("prepend") == _SPACE for s in steps)
  known_steps = all(s.get("type") in ("Replace", "Prepend") for s in steps)
  if known_steps and replace and (pre is None or pre == {
      "type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
      "invert": False}):
    prefix = prepend
  elif norm is None and pre and pre.get("type") == "Metaspace" and pre.get(
      "replacement") == _SPACE and not pre.get("split", False):
    prefix = pre.get("prepend_scheme", "always") != "never"
  else:
    raise PretrainedError(f"{where}: the SentencePiece-style tokenizer's normalizer / "
                          f"pre-tokenizer ({(norm or {}).get('type')} / "
                          f"{(pre or {}).get('type')}) is not one GGUF expresses")
  if arch == "gemma3" and prefix:
    raise PretrainedError(f"{where}: the tokenizer puts a space before the text, which "
                          "llama.cpp's gemma3 (and Gemma's tokenizer) does not")
  return prefix


def _merges(model: dict) -> list[str]:
  """tokenizer.json's merges as GGUF's "left right" strings (a space inside a part as
  chr(256 + 32), as gguf's SpecialVocab writes it)."""
  out = []
  for m in model.get("merges") or []:
    if isinstance(m, str):
      out.append(m)
    else:
      out.append(" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part)
                          for part in m))
  return out


def _scores(tokens: list[str], merges: list[str]) -> list[float]:
  """Scores for llama.cpp's SPM tokenizer, which merges the adjacent pair whose joined token
  scores highest: minus the rank of the first merge that makes the token; tokens no merge
  makes score below all of them."""
  rank = {}
  for r, m in enumerate(merges):
    rank.setdefault(m.replace(" ", "", 1), r)
  return [-float(rank[t]) if t in rank else -float(len(merges) + i)
          for i, t in enumerate(tokens)]


def tokenizer_metadata(tokenizer, tokenizer_config: dict, hf_config: dict, arch: str,
                       vocab_size: int, source_pre: str | None = None,
                       where: str = "GGUF") -> dict:
  """The `tokenizer.ggml.*` metadata (key -> value) of a tokenizer.json (a path, or a
  `tokenizers.Tokenizer`) whose ids are the embedding's `vocab_size` rows."""
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  if not isinstance(tokenizer, Tokenizer):
    try:
      tokenizer = Tokenizer.from_file(str(tokenizer))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file.
      raise PretrainedError(f"{where}: {tokenizer}: not a readable tokenizer.json ({e})") from e
  spec = json.loads(tokenizer.to_str())
  model = spec["model"]
  byte_level = _bpe_kind(spec, where)
  unk = model.get("unk_token")
  tokens, types = _token_table(spec, vocab_size, byte_level, where)
  merges = _merges(model)
  meta = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types}
  if byte_level:
    meta["tokenizer.ggml.model"] = "gpt2"
    meta["tokenizer.ggml.pre"] = _byte_level_pre(spec, source_pre, where)
  else:
    meta["tokenizer.ggml.model"] = "llama"
    meta["tokenizer.ggml.pre"] = "default"
    meta["tokenizer.ggml.add_space_prefix"] = _space_prefix(spec, arch, where)
    meta["tokenizer.ggml.scores"] = [-1000.0 if types[i] in (CONTROL, USER_DEFINED) else s
                                     for i, s in enumerate(_scores(tokens, merges))]
  # Merges for SentencePiece too: llama.cpp ranks by the scores, our reader (and
  # transformers' BPE) by the merges, exactly.
  meta["tokenizer.ggml.merges"] = merges
  first, last = _template_ends(spec)
  meta.update(_special_ids(tokenizer.get_vocab(with_added_tokens=True), tokenizer_config,
                           hf_config, vocab_size, first, last, unk))

  def token(key):
    i = meta.get(f"tokenizer.ggml.{key}")
    return tokens[i] if i is not None else None

  # Whether BOS / EOS go around each text: tokenizer_config.json's add_bos_token /
  # add_eos_token, else tokenizer.json's TemplateProcessing, else SentencePiece's BOS only.
  add_bos, add_eos = tokenizer_config.get("add_bos_token"), tokenizer_config.get("add_eos_token")
  if not isinstance(add_bos, bool):
    templated = first is not None or last is not None
    add_bos = (first == token("bos_token_id")) if templated else not byte_level
    add_bos = bool(add_bos and token("bos_token_id") is not None)
  if not isinstance(add_eos, bool):
    add_eos = last is not None and last == token("eos_token_id")
  meta["tokenizer.ggml.add_bos_token"], meta["tokenizer.ggml.add_eos_token"] = add_bos, add_eos
  template = tokenizer_config.get("chat_template")
  if template:
    meta["tokenizer.chat_template"] = template
  return meta


def _bpe_kind(spec: dict, where: str) -> bool:
  """True for a byte-level BPE, False for a SentencePiece-style one (byte fallback);
  PretrainedError for a tokenizer.json with no GGUF form."""
  model = spec["model"]
  if model.get("type") != "BPE":
    raise PretrainedError(f"{where}: a {model.get('type')} tokenizer.json has no GGUF form "
                          "here (supported: byte-level BPE, SentencePiece-style BPE)")
  byte_level = not model.get("byte_fallback") and "ByteLevel" in json.dumps(
      spec.get("pre_tokenizer"))
  if not byte_level and not model.get("byte_fallback"):
    raise PretrainedError(f"{where}: a BPE tokenizer.json that is neither byte-level nor "
                          "SentencePiece-style (byte fallback) has no GGUF form")
  if model.get("dropout") or model.get("continuing_subword_prefix") or model.get(
      "end_of_word_suffix"):
    raise PretrainedError(f"{where}: BPE dropout / subword prefixes or suffixes have no GGUF "
                          "form")
  return byte_level


def _token_table(spec: dict, vocab_size: int, byte_level: bool,
                 where: str) -> tuple[list[str], list[int]]:
  """Each embedding row's token text and GGUF token type."""
  model = spec["model"]
  added = {t["id"]: t for t in spec.get("added_tokens", [])}
  ids = {**{i: t for t, i in model["vocab"].items()}, **{i: t["content"] for i, t in added.items()}}
  if max(ids) >= vocab_size:
    raise PretrainedError(f"{where}: the tokenizer has id {max(ids)}, the embedding only "
                          f"{vocab_size} rows")
  unk = model.get("unk_token")
  tokens, types = [], []
  for i in range(vocab_size):
    if i not in ids:  # as the converter: a placeholder for an id the tokenizer lacks.
      tokens.append(f"[PAD{i}]")
      types.append(UNUSED)
      continue
    token = ids[i]
    if i in added:
      if added[i].get("special"):
        types.append(CONTROL)
      else:
        types.append(USER_DEFINED)
        if not byte_level:
          token = token.replace(_SPACE, " ")  # the converter's pre-normalized spaces.
    elif not byte_level and token == unk:
      types.append(UNKNOWN)
    elif not byte_level and _BYTE_TOKEN.fullmatch(token):
      types.append(BYTE)
    else:
      types.append(NORMAL)
    tokens.append(token)
  return tokens, types


def _special_ids(vocab: dict, tokenizer_config: dict, hf_config: dict, vocab_size: int,
                 first: str | None, last: str | None, unk: str | None) -> dict:
  """The special tokens' ids: tokenizer_config.json's, by text, else config.json's ids (as
  gguf's SpecialVocab reads them), else BOS / EOS as tokenizer.json puts them around a
  text (`first`, `last`)."""
  meta = {}
  for name, key, fallback in (("bos", "bos_token_id", first), ("eos", "eos_token_id", last),
                              ("pad", "padding_token_id", None),
                              ("unk", "unknown_token_id", unk)):
    text = _content(tokenizer_config.get(f"{name}_token"))
    token_id = vocab.get(text) if text is not None else None
    if token_id is None:
      token_id = hf_config.get(f"{name}_token_id")
      if isinstance(token_id, list):
        token_id = token_id[0] if token_id else None
    if token_id is None and fallback is not None:
      token_id = vocab.get(fallback)
    if isinstance(token_id, int) and 0 <= token_id < vocab_size:
      meta[f"tokenizer.ggml.{key}"] = token_id
  return meta


def _template_ends(spec: dict) -> tuple[str | None, str | None]:
  """The special tokens tokenizer.json's TemplateProcessing puts before and after a single
  text (None: none, or no such processor)."""
  post = spec.get("post_processor") or {}
  for p in post.get("processors", [post]):
    if p.get("type") == "TemplateProcessing":
      single = [s.get("SpecialToken", {}).get("id") for s in p.get("single", [])]
      if len(single) > 1:
        return single[0], single[-1]
  return None, None


def source_pre(path: str) -> str | None:
  """A GGUF file's `tokenizer.ggml.pre` (None: no file, or no such key)."""
  if not path or not os.path.isfile(path):
    return None
  try:
    import gguf  # pylint: disable=import-outside-toplevel
    field = gguf.GGUFReader(path).fields.get("tokenizer.ggml.pre")
    return field.contents() if field is not None else None
  except Exception:  # pylint: disable=broad-except
    return None  # an unreadable source: the pre-tokenizer is named from the tokenizer.


# ---------------------------------------------------------------------------- the file


def add_tokenizer(w, meta: dict) -> None:
  w.add_tokenizer_model(meta["tokenizer.ggml.model"])
  w.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
  w.add_token_list(meta["tokenizer.ggml.tokens"])
  w.add_token_types(meta["tokenizer.ggml.token_type"])
  if "tokenizer.ggml.scores" in meta:
    w.add_token_scores(meta["tokenizer.ggml.scores"])
  if meta["tokenizer.ggml.merges"]:
    w.add_token_merges(meta["tokenizer.ggml.merges"])
  if "tokenizer.ggml.add_space_prefix" in meta:
    w.add_add_space_prefix(meta["tokenizer.ggml.add_space_prefix"])
  for key, method in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                      ("padding_token_id", w.add_pad_token_id),
                      ("unknown_token_id", w.add_unk_token_id)):
    if f"tokenizer.ggml.{key}" in meta:
      method(meta[f"tokenizer.ggml.{key}"])
  w.add_add_bos_token(meta["tokenizer.ggml.add_bos_token"])
  w.add_add_eos_token(meta["tokenizer.ggml.add_eos_token"])
  if "tokenizer.chat_template" in meta:
    w.add_chat_template(meta["tokenizer.chat_template"])
