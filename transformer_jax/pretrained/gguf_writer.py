"""A Hugging Face Llama / Gemma 3 model written as a llama.cpp GGUF file: gguf_file.py's inverse.

  write_gguf(hf_config, state_dict, "run_tokenizer/tokenizer.json", tokenizer_config,
             "model.gguf", "q8_0")

What llama.cpp's converter (convert_hf_to_gguf.py) does, from a config.json dict, a float32
state dict with transformers' names and a tokenizer.json: the architecture's metadata, the
tensors under gguf's names (gguf.get_tensor_name_map) with Llama's q/k rows permuted for
llama.cpp's rotary layout (the key's by the key/value heads) and Gemma's RMSNorm weights
stored as 1 + w, `output.weight` left out when tied, and the tokenizer as
`tokenizer.ggml.*` (byte-level BPE as "gpt2"; SentencePiece-style BPE with byte fallback,
Gemma's, as "llama" with scores) with its special tokens and chat template.

What llama.cpp cannot hold, or would compute differently, is refused with a
PretrainedError that names it: another architecture, biases, an activation or RoPE that
llama.cpp's `llama` / `gemma3` do not have, Gemma 3 layouts that llama.cpp's gemma3 fixes
(every 6th layer global, the sliding layers' RoPE base 10000, queries scaled by
1/sqrt(head_dim)), a tokenizer that is neither of the two kinds, or a pre-tokenizer
llama.cpp has no name for. Needs the `gguf` package (PyPI).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile

import numpy as np

from transformer_jax.pretrained.tensors import PretrainedError

# Hugging Face model_type -> llama.cpp's architecture.
ARCHITECTURES = {"llama": "llama", "gemma3_text": "gemma3"}
QTYPES = ("f32", "f16", "q8_0")
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# The byte-level pre-tokenizers llama.cpp knows by name (llama-vocab.cpp), each as our
# reader (gguf_tokenizer.py) rebuilds it: "gpt-2" is GPT-2's own split (llama.cpp's
# "default" is another regex).
BYTE_LEVEL_PRES = ("gpt-2", "llama-bpe", "qwen2", "smollm")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
_SPACE = "\u2581"


def _qtype(name: str, where: str):
  import gguf  # pylint: disable=import-outside-toplevel
  types = {"f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
           "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
           "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)}
  if name not in types:
    raise PretrainedError(f"{where}: GGUF type {name!r} is not supported "
                          f"(supported: {', '.join(QTYPES)})")
  return types[name]


# ---------------------------------------------------------------------------- the model


def _family(hf_config: dict, where: str):
  """(llama.cpp's architecture, our llama.Family) of `hf_config`, or a PretrainedError."""
  from transformer_jax.pretrained import llama  # pylint: disable=import-outside-toplevel
  model_type = hf_config.get("model_type")
  if model_type not in ARCHITECTURES:
    what = "/".join(hf_config.get("architectures") or []) or "no architectures"
    raise PretrainedError(f"{where}: a {model_type!r} model ({what}) has no GGUF form here "
                          f"(supported: {', '.join(ARCHITECTURES)})")
  return ARCHITECTURES[model_type], llama.Family(model_type)


def _check(arch: str, fields: dict, hf_config: dict, where: str) -> None:
  """What llama.cpp's `arch` fixes or lacks, against the model's fields (llama.py's)."""
  bad = []
  layers = fields["num_decoder_layers"]
  head_dim = fields["qkv_dim"] // fields["num_heads"]
  if fields["attention_bias"] or fields["mlp_bias"]:
    bad.append("biases (attention_bias / mlp_bias), which the GGUF writer does not write")
  if arch == "llama":
    if fields["activation"] != "silu":
      bad.append(f"hidden_act={hf_config.get('hidden_act')!r} (llama.cpp's llama: silu)")
  else:
    if fields["activation"] != "gelu":
      bad.append(f"hidden_activation={hf_config.get('hidden_activation')!r} "
                 "(llama.cpp's gemma3: gelu_pytorch_tanh)")
    every = fields["global_every"]
    ours = [bool(every) and (i + 1) % every == 0 for i in range(layers)]
    if ours != [(i + 1) % 6 == 0 for i in range(layers)]:
      bad.append(f"global layers {[i for i, g in enumerate(ours) if g]} (llama.cpp's gemma3: "
                 "every 6th layer global, the rest sliding)")
    if fields["rotary_base_local"] != 10000.0:
      bad.append(f"the sliding layers' RoPE base {fields['rotary_base_local']:g} "
                 "(llama.cpp's gemma3: 10000)")
    # llama.cpp scales queries by 1/sqrt(head_dim), by 1/sqrt(hidden/heads) for 62 layers.
    scalar = round(fields["attention_scale"] ** -2)
    want = fields["emb_dim"] // fields["num_heads"] if layers == 62 else head_dim
    if scalar != want:
      bad.append(f"query_pre_attn_scalar={scalar} (llama.cpp's gemma3 with {layers} layers: "
                 f"{want})")
    if fields["rotary_scaling"] not in ("none", "linear"):
      bad.append(f"RoPE scaling {fields['rotary_scaling']!r} (llama.cpp's gemma3: linear)")
  if bad:
    raise PretrainedError(f"{where}: this {hf_config['model_type']!r} model cannot be written "
                          f"as llama.cpp's {arch!r}: {'; '.join(bad)}")


def _llama3_rope_factors(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
  """The converter's `rope_freqs.weight` for Llama 3's RoPE scaling: per frequency, the
  divisor llama.cpp applies to base**(-2i/d), so that it equals transformers' llama3
  inverse frequency (rope_utils._compute_llama3_parameters)."""
  factor = float(scaling["factor"])
  low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
  old = float(scaling["original_max_position_embeddings"])
  freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  out = []
  for freq in freqs:
    wavelen = 2 * math.pi / freq
    if wavelen < old / high:
      out.append(1.0)
    elif wavelen > old / low:
      out.append(factor)
    else:
      smooth = (old / wavelen - low) / (high - low)
      out.append(1.0 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
  """convert_hf_to_gguf.py's LlamaModel.permute: each head's rows from Hugging Face's
  halves [x_0..x_{d/2-1}, y_0..y_{d/2-1}] to llama.cpp's pairs [x_0, y_0, x_1, y_1, ...]."""
  return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
      w.shape)


def _tensors(arch: str, fields: dict, state_dict: dict, tied: bool, where: str) -> dict:
  """GGUF name -> float32 array (numpy's [out, in], which GGUF lists as [in, out])."""
  import gguf  # pylint: disable=import-outside-toplevel
  names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama"
                                   else gguf.MODEL_ARCH.GEMMA3, fields["num_decoder_layers"])
  heads, kv_heads = fields["num_heads"], fields["num_kv_heads"]
  out = {}
  for hf_name, array in state_dict.items():
    if hf_name == "lm_head.weight" and tied:
      continue  # llama.cpp uses token_embd for the output when there is no output.weight.
    name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
      raise PretrainedError(f"{where}: tensor {hf_name!r} has no GGUF name in llama.cpp's "
                            f"{arch!r}")
    w = np.asarray(array, np.float32)
    if arch == "llama" and name.endswith(".attn_q.weight"):
      w = _permute(w, heads)
    elif arch == "llama" and name.endswith(".attn_k.weight"):
      w = _permute(w, kv_heads)
    elif arch == "gemma3" and name.endswith("norm.weight"):
      w = w + np.float32(1)  # Gemma's RMSNorm scales by (1 + w); llama.cpp's by its weight.
    out[name] = np.ascontiguousarray(w)
  for name in ("token_embd.weight", "output_norm.weight"):
    if name not in out:
      raise PretrainedError(f"{where}: the state dict has no tensor for GGUF {name!r}")
  return out


# ---------------------------------------------------------------------------- the tokenizer


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

  # Special tokens: tokenizer_config.json's, by text, else config.json's ids (as gguf's
  # SpecialVocab reads them), else BOS / EOS as tokenizer.json puts them around a text.
  first, last = _template_ends(spec)
  vocab = tokenizer.get_vocab(with_added_tokens=True)
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


def write_gguf(hf_config: dict, state_dict: dict[str, np.ndarray], tokenizer,
               tokenizer_config: dict, output: str, qtype: str = "f32", *,
               source_pre_name: str | None = None, name: str | None = None) -> str:
  """Writes the model (`hf_config`: config.json; `state_dict`: transformers' names, float)
  with its tokenizer (a tokenizer.json path or `tokenizers.Tokenizer`; `tokenizer_config`:
  tokenizer_config.json) to the GGUF file `output`, which must not exist: 2-D weights in
  `qtype` (f32, f16, q8_0; a row that Q8_0's blocks do not divide in f16, as the converter
  does), norms and 1-D tensors in f32. `source_pre_name`: the `tokenizer.ggml.pre` of the
  GGUF file the model came from. Returns a one-line summary."""
  try:
    import gguf  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise PretrainedError(f"{output}: writing GGUF files needs the gguf package "
                          "(pip install gguf)") from e
  from transformer_jax.pretrained import llama  # pylint: disable=import-outside-toplevel
  where = output
  data_type, file_type = _qtype(qtype, where)
  arch, family = _family(hf_config, where)
  fields = family.model_fields(hf_config, where)
  _check(arch, fields, hf_config, where)
  tied = fields["logits_via_embedding"]
  tensors = _tensors(arch, fields, state_dict, tied, where)
  vocab_size, hidden = tensors["token_embd.weight"].shape
  layers, heads = fields["num_decoder_layers"], fields["num_heads"]
  head_dim = fields["qkv_dim"] // heads
  theta, scaling = llama._rope(hf_config, where)  # pylint: disable=protected-access
  if scaling.get("rope_type") == "llama3":
    tensors["rope_freqs.weight"] = _llama3_rope_factors(head_dim, theta, scaling)
  tok_meta = tokenizer_metadata(tokenizer, tokenizer_config, hf_config, arch, vocab_size,
                                source_pre_name, where)

  output = os.path.abspath(output)
  if os.path.lexists(output):
    raise PretrainedError(f"--output={output}: exists (nothing was written)")
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".gguf", dir=parent)
  os.close(fd)
  umask = os.umask(0)
  os.umask(umask)
  try:
    w = gguf.GGUFWriter(tmp, arch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name or os.path.basename(output).removesuffix(".gguf"))
    w.add_context_length(int(hf_config["max_position_embeddings"]))
    w.add_embedding_length(int(hidden))
    w.add_block_count(layers)
    w.add_feed_forward_length(fields["mlp_dim"])
    w.add_head_count(heads)
    w.add_head_count_kv(fields["num_kv_heads"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(fields["layer_norm_epsilon"])
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if arch == "llama":
      w.add_vocab_size(int(vocab_size))
      w.add_rope_dimension_count(head_dim)
    else:
      w.add_sliding_window(fields["sliding_window"])
      w.add_rope_freq_base_swa(fields["rotary_base_local"])
    if scaling.get("rope_type") == "linear":
      w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
      w.add_rope_scaling_factor(float(scaling["factor"]))
    _add_tokenizer(w, tok_meta)
    counts = {}
    for tensor_name, array in tensors.items():
      kind = data_type
      if array.ndim <= 1 or tensor_name.endswith("_norm.weight"):
        kind = gguf.GGMLQuantizationType.F32
      try:
        data = gguf.quants.quantize(array, kind)
      except gguf.QuantError:  # rows the blocks do not divide: f16, as the converter.
        kind = gguf.GGMLQuantizationType.F16
        data = gguf.quants.quantize(array, kind)
      w.add_tensor(tensor_name, data, raw_dtype=kind)
      counts[kind.name] = counts.get(kind.name, 0) + 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.chmod(tmp, 0o666 & ~umask)
    os.rename(tmp, output)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  kinds = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
  return (f"{hf_config['model_type']} as llama.cpp's {arch!r} ({len(tensors)} tensors: "
          f"{kinds}; {vocab_size} tokens, {tok_meta['tokenizer.ggml.model']}/"
          f"{tok_meta['tokenizer.ggml.pre']})")


def _add_tokenizer(w, meta: dict) -> None:
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
