"""A llama.cpp GGUF file read back into Hugging Face conventions.

  model = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
  model.hf_config, model.arrays, model.tokenizer      # config.json, state dict, tokenizer
  save_hf_folder(model, "smollm2")                     # a folder transformers opens

Every tensor is dequantized to float32 and renamed to the state-dict names of
transformers' LlamaForCausalLM / Gemma3ForCausalLM, with what llama.cpp's converter
(convert_hf_to_gguf.py) changed undone: Llama's q/k rows permuted for its rotary layout,
Gemma's RMSNorm weights stored with 1 added. Needs the `gguf` package (PyPI).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from tokenizers import Tokenizer

from transformer_jax.pretrained.gguf_tokenizer import build_tokenizer
from transformer_jax.pretrained.tensors import PretrainedError

ARCHITECTURES = ("llama", "gemma3")

# GGUF's per-layer tensor names -> the Hugging Face module names.
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
}
_LLAMA_NAMES = {**_LAYER_NAMES, "ffn_norm": "post_attention_layernorm"}
# Gemma 3 norms around both the attention and the MLP, and of the queries and keys.
_GEMMA3_NAMES = {**_LAYER_NAMES, "attn_q_norm": "self_attn.q_norm",
                 "attn_k_norm": "self_attn.k_norm",
                 "post_attention_norm": "post_attention_layernorm",
                 "ffn_norm": "pre_feedforward_layernorm",
                 "post_ffw_norm": "post_feedforward_layernorm"}


@dataclasses.dataclass(frozen=True, eq=False)
class GGUFModel:
  path: str
  hf_config: dict            # config.json as Hugging Face transformers has it
  arrays: dict               # HF state-dict name -> float32 array, PyTorch shapes
  tokenizer: Tokenizer
  chat_template: str | None
  special_tokens: dict       # bos/eos/pad/unk _token and _token_id, add_bos_token, add_eos_token


def _metadata(reader) -> dict:
  import gguf  # pylint: disable=import-outside-toplevel
  meta = {}
  for key, field in reader.fields.items():
    if key.startswith("GGUF."):
      continue
    value = field.contents()
    if field.types and field.types[-1] == gguf.GGUFValueType.FLOAT32:
      # A float32 as its shortest decimal (1e-05, not 9.999999747378752e-06): the
      # number config.json had before the converter stored it.
      value = ([float(str(np.float32(v))) for v in value] if isinstance(value, list)
               else float(str(np.float32(value))))
    meta[key] = value
  return meta


def _need(meta: dict, key: str, where: str):
  if key not in meta:
    raise PretrainedError(f"{where}: metadata {key!r} is missing")
  return meta[key]


def _rope_scaling(meta: dict, arch: str) -> dict | None:
  """rope_scaling from `{arch}.rope.scaling.*` (linear, yarn); None where there is none."""
  kind = meta.get(f"{arch}.rope.scaling.type")
  if kind in (None, "none"):
    return None
  scaling = {"rope_type": kind, "factor": meta.get(f"{arch}.rope.scaling.factor", 1.0)}
  if f"{arch}.rope.scaling.original_context_length" in meta:
    scaling["original_max_position_embeddings"] = meta[
        f"{arch}.rope.scaling.original_context_length"]
  return scaling


def _common_config(meta: dict, arch: str, vocab_size: int, tied: bool, where: str) -> dict:
  hidden = _need(meta, f"{arch}.embedding_length", where)
  heads = _need(meta, f"{arch}.attention.head_count", where)
  return {
      "hidden_size": hidden,
      "intermediate_size": _need(meta, f"{arch}.feed_forward_length", where),
      "num_hidden_layers": _need(meta, f"{arch}.block_count", where),
      "num_attention_heads": heads,
      "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv", heads),
      "head_dim": meta.get(f"{arch}.attention.key_length", hidden // heads),
      "rms_norm_eps": _need(meta, f"{arch}.attention.layer_norm_rms_epsilon", where),
      "max_position_embeddings": _need(meta, f"{arch}.context_length", where),
      "rope_scaling": _rope_scaling(meta, arch),
      "vocab_size": vocab_size,
      "tie_word_embeddings": tied,
      "attention_bias": False,
      "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
      "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
      "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
  }


def _layer_types(meta: dict, layers: int) -> list[str]:
  """Gemma 3's sliding/full attention per layer: every 6th layer full, as llama.cpp's
  gemma3 and transformers' Gemma3TextConfig (sliding_window_pattern 6) both fix it, unless
  the file gives the pattern (an int, or one bool per layer, true for sliding)."""
  pattern = meta.get("gemma3.attention.sliding_window_pattern", 6)
  if isinstance(pattern, list):
    return ["sliding_attention" if p else "full_attention" for p in pattern]
  return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)]


def _hf_config(meta: dict, arch: str, vocab_size: int, tied: bool, where: str) -> dict:
  c = _common_config(meta, arch, vocab_size, tied, where)
  if arch == "llama":
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **c,
            "rope_theta": meta.get("llama.rope.freq_base", 10000.0),
            "hidden_act": "silu", "mlp_bias": False}
  return {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", **c,
          # The global layers' rope base (transformers' default: 1e6) and the sliding
          # layers' (converters before rope.freq_base_swa wrote none: llama.cpp uses 10000).
          "rope_theta": meta.get("gemma3.rope.freq_base", 1_000_000.0),
          "rope_local_base_freq": meta.get("gemma3.rope.freq_base_swa", 10000.0),
          "sliding_window": meta.get("gemma3.attention.sliding_window", 4096),
          "layer_types": _layer_types(meta, c["num_hidden_layers"]),
          "query_pre_attn_scalar": c["head_dim"],
          "hidden_activation": "gelu_pytorch_tanh",
          "final_logit_softcapping": None, "attn_logit_softcapping": None}


def _names_and_shapes(c: dict, arch: str) -> dict[str, tuple[str, tuple[int, ...]]]:
  """GGUF tensor name -> (HF state-dict name, PyTorch shape) of every tensor the model has."""
  hidden, layers, head_dim = c["hidden_size"], c["num_hidden_layers"], c["head_dim"]
  q, kv, ff = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim, \
      c["intermediate_size"]
  shapes = {"attn_q": (q, hidden), "attn_k": (kv, hidden), "attn_v": (kv, hidden),
            "attn_output": (hidden, q), "ffn_gate": (ff, hidden), "ffn_up": (ff, hidden),
            "ffn_down": (hidden, ff), "attn_q_norm": (head_dim,), "attn_k_norm": (head_dim,)}
  out = {"token_embd.weight": ("model.embed_tokens.weight", (c["vocab_size"], hidden)),
         "output_norm.weight": ("model.norm.weight", (hidden,))}
  if not c["tie_word_embeddings"]:
    out["output.weight"] = ("lm_head.weight", (c["vocab_size"], hidden))
  for i in range(layers):
    for gguf_name, hf_name in (_LLAMA_NAMES if arch == "llama" else _GEMMA3_NAMES).items():
      out[f"blk.{i}.{gguf_name}.weight"] = (f"model.layers.{i}.{hf_name}.weight",
                                            shapes.get(gguf_name, (hidden,)))
  return out


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """Undoes convert_hf_to_gguf.py's LlamaModel.permute of q_proj / k_proj rows.

  Hugging Face rotates the two halves of each head (rotate_half); llama.cpp's "normal"
  rope rotates adjacent pairs. The converter reorders each head's rows from
  [x_0..x_{d/2-1}, y_0..y_{d/2-1}] to [x_0, y_0, x_1, y_1, ...]:
  reshape(heads, 2, d/2, in).swapaxes(1, 2). This is its inverse.
  """
  rows = w.shape[0]
  return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(tensor, where: str) -> np.ndarray:
  from gguf.quants import dequantize  # pylint: disable=import-outside-toplevel
  try:
    array = dequantize(tensor.data, tensor.tensor_type)
  except NotImplementedError as e:
    raise PretrainedError(f"{where}: tensor {tensor.name!r} is of type "
                          f"{tensor.tensor_type.name}, which gguf cannot dequantize") from e
  # GGUF lists dimensions innermost first ([in, out]); numpy's order is the reverse, which
  # is PyTorch's [out, in]. np.array copies out of the file's memory map.
  shape = tuple(int(d) for d in reversed(tensor.shape))
  return np.array(array, dtype=np.float32).reshape(shape)


def _open(path: str):
  try:
    import gguf  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise PretrainedError(f"{path}: reading GGUF files needs the gguf package "
                          "(pip install gguf)") from e
  if not os.path.isfile(path):
    raise PretrainedError(f"{path}: {'not a file' if os.path.exists(path) else 'no such file'}")
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # pylint: disable=broad-except
    # The reader raises ValueError for a wrong magic number, other errors for a cut file.
    raise PretrainedError(f"{path}: not a readable GGUF file ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from e


def read_gguf(path: str) -> GGUFModel:
  """A GGUF file's model as Hugging Face has it: config, float32 state dict, tokenizer."""
  reader = _open(path)
  meta = _metadata(reader)
  arch = meta.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise PretrainedError(f"{path}: GGUF architecture {arch!r} is not supported "
                          f"(supported: {', '.join(ARCHITECTURES)})")
  tensors = {t.name: t for t in reader.tensors}
  if "token_embd.weight" not in tensors:
    raise PretrainedError(f"{path}: tensor 'token_embd.weight' is missing")
  vocab_size = int(tensors["token_embd.weight"].shape[1])
  config = _hf_config(meta, arch, vocab_size, "output.weight" not in tensors, path)
  wanted = _names_and_shapes(config, arch)
  if "rope_freqs.weight" in tensors:
    raise PretrainedError(f"{path}: tensor 'rope_freqs.weight' (Llama 3.1-style rope "
                          "scaling) is not supported")
  extra = sorted(set(tensors) - set(wanted))
  if extra:
    raise PretrainedError(f"{path}: tensor {extra[0]!r} has no counterpart in "
                          f"{config['architectures'][0]} ({len(extra)} such tensors)")
  arrays = {}
  for gguf_name, (hf_name, shape) in wanted.items():
    if gguf_name not in tensors:
      raise PretrainedError(f"{path}: tensor {gguf_name!r} ({hf_name}) is missing")
    w = _dequantize(tensors[gguf_name], path)
    if w.shape != shape:
      raise PretrainedError(f"{path}: tensor {gguf_name!r} has shape {w.shape}, the "
                            f"metadata implies {shape} ({hf_name})")
    if arch == "llama" and ".attn_q." in gguf_name:
      w = _unpermute(w, config["num_attention_heads"])
    elif arch == "llama" and ".attn_k." in gguf_name:
      w = _unpermute(w, config["num_key_value_heads"])
    elif arch == "gemma3" and gguf_name.endswith("norm.weight"):
      # Gemma's RMSNorm scales by (1 + weight); the converter stored 1 + weight.
      w = w - np.float32(1)
    arrays[hf_name] = w
  tokenizer, special = build_tokenizer(meta, arch, path)
  return GGUFModel(path=path, hf_config=config, arrays=arrays, tokenizer=tokenizer,
                   chat_template=meta.get("tokenizer.chat_template"), special_tokens=special)


def save_hf_folder(model: GGUFModel, output: str) -> None:
  """Writes `model` as a Hugging Face folder: config.json, model.safetensors,
  tokenizer.json, tokenizer_config.json, generation_config.json."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
    raise PretrainedError(f"{output}: exists and is not an empty folder; give a new one")
  os.makedirs(output, exist_ok=True)
  c, s = model.hf_config, model.special_tokens

  def write_json(name: str, value: dict) -> None:
    with open(os.path.join(output, name), "w", encoding="utf-8") as f:
      json.dump(value, f, indent=2, ensure_ascii=False)
      f.write("\n")

  write_json("config.json", {**c, "torch_dtype": "float32"})
  weights = os.path.join(output, "model.safetensors")
  save_file({k: np.ascontiguousarray(v) for k, v in model.arrays.items()}, weights,
            metadata={"format": "pt"})
  os.chmod(weights, 0o644)  # safetensors creates it owner-only, unlike the other files
  model.tokenizer.save(os.path.join(output, "tokenizer.json"))
  tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast",
                      "clean_up_tokenization_spaces": False,
                      "add_bos_token": s["add_bos_token"], "add_eos_token": s["add_eos_token"]}
  for name in ("bos", "eos", "pad", "unk"):
    if s[f"{name}_token"] is not None:
      tokenizer_config[f"{name}_token"] = s[f"{name}_token"]
  if model.chat_template:
    tokenizer_config["chat_template"] = model.chat_template
  write_json("tokenizer_config.json", tokenizer_config)
  write_json("generation_config.json", {
      k: c[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if c.get(k) is not None})


def hf_folder_of(path: str) -> str:
  """The Hugging Face folder of a GGUF file, converted once (float32) into the user cache
  (config/cache_dirs.py: transformer_jax/gguf/NAME-HASH, the hash of the file's absolute
  path, size and modification time) and read from there afterwards; so every tool that
  takes a folder (load_hf, init_from.hf, export_hf, transformers) takes a GGUF file too."""
  import hashlib  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  from transformer_jax.config import cache_dirs  # pylint: disable=import-outside-toplevel
  _open(path)  # a clear error for a missing or broken file before anything is written.
  path = os.path.abspath(path)
  stat = os.stat(path)
  key = hashlib.sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:12]
  name = os.path.basename(path).removesuffix(".gguf")
  folder = cache_dirs.user_cache_dir("gguf", f"{name}-{key}")
  if os.path.exists(os.path.join(folder, "config.json")):
    return folder
  model = read_gguf(path)
  os.makedirs(os.path.dirname(folder), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(folder))
  try:
    save_hf_folder(model, tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, folder)  # whole or not at all (another process may have won: fine).
  except OSError:
    if not os.path.exists(os.path.join(folder, "config.json")):
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return folder
