"""The tokenizer that a GGUF file's metadata describes, as a `tokenizers.Tokenizer`.

llama.cpp stores no tokenizer.json, only its parts: `tokenizer.ggml.model` (the algorithm:
"gpt2" for byte-level BPE, "llama" for SentencePiece-style BPE), the tokens with their
types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), the merges
(byte-level BPE, and some SentencePiece files), the scores (SentencePiece) and
`tokenizer.ggml.pre`, the name of the pre-tokenizer llama.cpp splits text with. The
choices below follow llama.cpp and the original tokenizer.json files, as transformers'
GGUF loader does (it is the reference in tests/test_gguf.py).
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors

from transformer_jax.pretrained.tensors import PretrainedError

CONTROL, USER_DEFINED = 3, 4

# `tokenizer.ggml.pre` -> the split regex of the model's own tokenizer.json (llama.cpp
# hard-codes the same per name). Byte-level vocabularies not named here split as GPT-2
# does (ByteLevel's own regex), which is also transformers' fallback.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
           "smaug-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table, in which byte-level vocabularies are spelled."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def _byte_level(meta: dict) -> tuple[Tokenizer, set[str]]:
  spelling = bytes_to_unicode()
  alphabet = set(spelling.values())
  # A token with characters outside the byte alphabet (rare: some added tokens) is respelled
  # byte by byte, as a tokenizer.json would hold it.
  vocab = {}
  for i, t in enumerate(meta["tokenizer.ggml.tokens"]):
    vocab[t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))] = i
  merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
  tok = Tokenizer(models.BPE(vocab, merges, dropout=None, continuing_subword_prefix="",
                             end_of_word_suffix="", fuse_unk=False))
  pre = meta.get("tokenizer.ggml.pre")
  if pre == "smollm":
    # SmolLM's tokenizer.json (and llama.cpp's "smollm" regex): every digit on its own,
    # then GPT-2's split.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
  elif pre in _SPLITS:
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  else:
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  return tok, alphabet


def _merges_from_vocab(tokens: list[str], priority: list[float]) -> list[tuple[str, str]]:
  """The BPE merges a SentencePiece vocabulary implies, best first: every split of a token
  into two tokens, ranked by the token's priority (as transformers' `generate_merges`)."""
  index = {t: i for i, t in enumerate(tokens)}
  ranked = []
  for t, p in zip(tokens, priority):
    pairs = [(t[:k], t[k:]) for k in range(1, len(t)) if t[:k] in index and t[k:] in index]
    pairs.sort(key=lambda lr: (index[lr[0]], index[lr[1]]))
    ranked.extend((p, left, right) for left, right in pairs)
  ranked.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)
  return [(left, right) for _, left, right in ranked]


def _sentencepiece(meta: dict, architecture: str) -> Tokenizer:
  tokens = list(meta["tokenizer.ggml.tokens"])
  gemma = architecture.startswith("gemma")
  if gemma:
    # Gemma files spell a token of spaces with real spaces; text is looked up as "▁"s.
    tokens = ["\u2581" * len(t) if t and set(t) == {" "} else t for t in tokens]
  if "tokenizer.ggml.merges" in meta:
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
  else:
    # No merges in the file (Gemma's converter writes none): rebuild them from the
    # vocabulary. Gemma's scores do not follow its merge order; the tokens' order does.
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    merges = _merges_from_vocab(tokens, [-i for i in range(len(tokens))] if gemma else scores)
  unk_id = meta.get("tokenizer.ggml.unknown_token_id")
  vocab = {t: i for i, t in enumerate(tokens)}
  tok = Tokenizer(models.BPE(vocab, merges, dropout=None, fuse_unk=True, byte_fallback=True,
                             unk_token=tokens[unk_id] if unk_id is not None else None))
  steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
  if gemma:
    # GemmaTokenizer: spaces become "▁" and stay with the piece before them; no prefix space.
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
  else:
    # LlamaTokenizer: "▁" for spaces and, unless the file says not to, one before the text.
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if prefix else "never", split=False)
    if prefix:
      steps.append(decoders.Strip(content=" ", left=1, right=0))
  tok.decoder = decoders.Sequence(steps)
  return tok


def _token(tokens: list[str], meta: dict, key: str) -> tuple[str | None, int | None]:
  token_id = meta.get(f"tokenizer.ggml.{key}")
  if token_id is None or not 0 <= token_id < len(tokens):
    return None, None
  return tokens[token_id], token_id


def build_tokenizer(meta: dict, architecture: str, where: str) -> tuple[Tokenizer, dict]:
  """(the tokenizer, its special tokens: {"bos_token": text, "bos_token_id": id, ... for
  bos/eos/pad/unk, "add_bos_token", "add_eos_token"}) from a GGUF file's metadata."""
  kind = meta.get("tokenizer.ggml.model")
  if "tokenizer.ggml.tokens" not in meta:
    raise PretrainedError(f"{where}: no tokenizer in the metadata (tokenizer.ggml.tokens)")
  tokens = meta["tokenizer.ggml.tokens"]
  types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
  if kind == "gpt2":
    tok, alphabet = _byte_level(meta)
  elif kind == "llama":
    tok, alphabet = _sentencepiece(meta, architecture), None
  else:
    raise PretrainedError(f"{where}: tokenizer.ggml.model={kind!r} is not supported "
                          "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece)")
  # Control tokens (<|im_start|>, <bos>) are matched whole and are special; user-defined
  # ones (<think>) are matched whole but are text. In a byte-level vocabulary a "control"
  # token spelled outside the byte alphabet is a converter's mislabel, left as it is.
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                          for t, k in zip(tokens, types)
                          if k == CONTROL and (alphabet is None or set(t) <= alphabet)])
  vocab = tok.get_vocab()
  tok.add_tokens([AddedToken(t, special=False, normalized=False)
                  for t, k in zip(tokens, types) if k == USER_DEFINED and t in vocab])

  special = {}
  for name, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"),
                    ("pad", "padding_token_id"), ("unk", "unknown_token_id")):
    special[f"{name}_token"], special[f"{name}_token_id"] = _token(tokens, meta, key)
  # llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
  special["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
  special["add_eos_token"] = bool(meta.get("tokenizer.ggml.add_eos_token", False))
  # BOS / EOS added around each sequence where the file says so (llama.cpp's add_bos_token).
  around = {name: (special[f"{name}_token"], special[f"{name}_token_id"])
            for name in ("bos", "eos")
            if special[f"add_{name}_token"] and special[f"{name}_token"] is not None}

  def sequence(piece: str, type_id: int) -> list[str]:
    bos = [f"{around['bos'][0]}:{type_id}"] if "bos" in around else []
    eos = [f"{around['eos'][0]}:{type_id}"] if "eos" in around else []
    return [*bos, f"{piece}:{type_id}", *eos]

  if around:
    tok.post_processor = processors.TemplateProcessing(
        single=sequence("$A", 0), pair=sequence("$A", 0) + sequence("$B", 1),
        special_tokens=list(dict(around.values()).items()))
  elif kind == "gpt2":
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
  return tok, special
