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

import math
import os
import tempfile

import numpy as np

from transformer_jax.pretrained import gguf_vocab
from transformer_jax.pretrained.tensors import PretrainedError

# Hugging Face model_type -> llama.cpp's architecture.
ARCHITECTURES = {"llama": "llama", "gemma3_text": "gemma3"}
QTYPES = ("f32", "f16", "q8_0")


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
  theta, scaling = llama._rope(hf_config, where)  # pylint: disable=protected-access
  if scaling.get("rope_type") == "llama3":
    tensors["rope_freqs.weight"] = _llama3_rope_factors(
        fields["qkv_dim"] // fields["num_heads"], theta, scaling)
  tok_meta = gguf_vocab.tokenizer_metadata(tokenizer, tokenizer_config, hf_config, arch, vocab_size,
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
    _add_hyperparameters(w, arch, fields, hf_config, (int(vocab_size), int(hidden)), file_type,
                         (theta, scaling))
    gguf_vocab.add_tokenizer(w, tok_meta)
    counts = _add_tensors(w, tensors, data_type)
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


def _add_hyperparameters(w, arch: str, fields: dict, hf_config: dict, shape: tuple[int, int],
                         file_type, rope: tuple[float, dict]) -> None:
  """The architecture's `{arch}.*` keys: sizes, rotary positions (`rope`: theta and the
  scaling's parameters), norms, file type."""
  import gguf  # pylint: disable=import-outside-toplevel
  vocab_size, hidden = shape
  heads = fields["num_heads"]
  head_dim = fields["qkv_dim"] // heads
  theta, scaling = rope
  w.add_context_length(int(hf_config["max_position_embeddings"]))
  w.add_embedding_length(hidden)
  w.add_block_count(fields["num_decoder_layers"])
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
    w.add_vocab_size(vocab_size)
    w.add_rope_dimension_count(head_dim)
  else:
    w.add_sliding_window(fields["sliding_window"])
    w.add_rope_freq_base_swa(fields["rotary_base_local"])
  if scaling.get("rope_type") == "linear":
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(float(scaling["factor"]))


def _add_tensors(w, tensors: dict[str, np.ndarray], data_type) -> dict[str, int]:
  """Each tensor in `data_type` (1-D ones and norms in f32; rows the quantization's blocks
  do not divide in f16, as the converter does); returns the count of each type."""
  import gguf  # pylint: disable=import-outside-toplevel
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
  return counts
