"""OpenAI Whisper (WhisperForConditionalGeneration) <-> our `speech_to_text` with its options.

Whisper is our speech model with these options: two 1-D convolutions of width 3 (strides
1 and 2) each followed by the exact GELU (`frontend_activation="gelu_exact"`), fixed
sinusoidal positions in the encoder (half sines, then half cosines: ours,
`encoder_positions="sinusoidal"`) and a learned table in the decoder (`positions="learned"`,
`max_target_positions` rows), pre-LayerNorm blocks (epsilon 1e-5) with a final LayerNorm
in each stack, biases on every projection but the key's, the exact GELU in the MLP, and
an output projection tied to the token embedding with no 1/sqrt(D) scale. A zero key bias
is exact: it adds q.b to every key of a query alike, which the softmax ignores (and its
gradient is zero), so our attention keeps its bias and the export drops it.

Torch Linear weights are [out, in]; ours are [in, heads, head_dim] (queries, keys,
values), [heads, head_dim, out] (the attention output) and [in, out] (the MLP); a
convolution's [out, in, width] is our [width, in, out].
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from transformer_jax.pretrained import common
from transformer_jax.pretrained.tensors import PretrainedError, Tensors, pad_rows

MODEL_TYPES = ("whisper",)
PREFIXES = ("model.",)
VOCAB_TABLES = {"embedding/embedding": 0}  # token id axis.
NUM_MEL_BINS = 80  # the speech kind's features (128-bin models, large-v3, are refused).
SOURCE_POSITIONS = 1500  # 30 s of 10 ms frames, halved by the second convolution.


def model_fields(hf: dict, source: str) -> dict:
  get = common.getter(hf, source)
  for ours, theirs in (("encoder_attention_heads", "decoder_attention_heads"),
                       ("encoder_ffn_dim", "decoder_ffn_dim")):
    if get(ours) != get(theirs):
      raise PretrainedError(f"{source}: {ours}={get(ours)} and {theirs}={get(theirs)} differ; "
                            "our speech model has one value for both stacks")
  if get("num_mel_bins") != NUM_MEL_BINS:
    raise PretrainedError(f"{source}: num_mel_bins={get('num_mel_bins')}; the speech kind's "
                          f"features have {NUM_MEL_BINS} mel bins")
  if hf.get("scale_embedding", False):
    raise PretrainedError(f"{source}: scale_embedding=true is not supported")
  act = common.activation(hf.get("activation_function", "gelu"), source, "activation_function")
  return {
      "emb_dim": get("d_model"), "num_heads": get("encoder_attention_heads"),
      "qkv_dim": get("d_model"), "mlp_dim": get("encoder_ffn_dim"),
      "num_encoder_layers": get("encoder_layers"), "num_decoder_layers": get("decoder_layers"),
      "norm_position": "pre", "norm": "layernorm", "layer_norm_epsilon": 1e-5,
      "activation": act, "frontend_activation": act, "frontend_channels": 0, "subsample": 2,
      "attention_bias": True, "attention_out_bias": True, "mlp_gated": False,
      "mlp_bias": True, "positions": "learned", "encoder_positions": "sinusoidal",
      "max_length": get("max_target_positions"),
      "logits_via_embedding": bool(hf.get("tie_word_embeddings", True)),
      "scale_tied_logits": False, "ctc_weight": 0.0,
      "dropout_rate": float(hf.get("dropout", 0.0)),
      "attention_dropout_rate": float(hf.get("attention_dropout", 0.0)),
  }


def encoder_positions(length: int, d: int, max_timescale: float = 10000.0) -> np.ndarray:
  """Whisper's encoder position table [length, d] (whisper/model.py sinusoids, which our
  encoder computes: layers.sinusoidal_positions): sin of the first half, cos of the
  second, timescales from 1 to `max_timescale`. Computed in float64, then rounded: the
  float16 tables that Whisper's CTranslate2 models store are this table rounded (all but
  ties: 0.006% of tiny.en's entries); a float32 computation (torch's, transformers' initial
  table) differs from it by up to 4e-5."""
  increment = math.log(max_timescale) / (d // 2 - 1)
  inv_timescales = np.exp(-increment * np.arange(d // 2))
  scaled = np.arange(length)[:, None] * inv_timescales[None, :]
  return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _attention(t: Tensors, hf: str, us: str, d: int, h: int, k: int) -> dict[str, np.ndarray]:
  out = {}
  for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    out[f"{us}/{name}"] = t.take(f"{hf}.{proj}.weight", (h * k, d)).T.reshape(d, h, k)
    bias = t.take(f"{hf}.{proj}.bias", (h * k,)) if t.has(f"{hf}.{proj}.bias") else None
    out[f"{us}/{name}_bias"] = (np.zeros((h, k), np.float32) if bias is None
                                else bias.reshape(h, k))
  out[f"{us}/out"] = t.take(f"{hf}.out_proj.weight", (d, h * k)).T.reshape(h, k, d)
  out[f"{us}/out_bias"] = t.take(f"{hf}.out_proj.bias", (d,))
  return out


def _mlp(t: Tensors, hf: str, us: str, d: int, f: int) -> dict[str, np.ndarray]:
  return {f"{us}/wi": t.take(f"{hf}.fc1.weight", (f, d)).T,
          f"{us}/bi": t.take(f"{hf}.fc1.bias", (f,)),
          f"{us}/wo": t.take(f"{hf}.fc2.weight", (d, f)).T,
          f"{us}/bo": t.take(f"{hf}.fc2.bias", (d,))}


def to_ours(t: Tensors, cfg, vocab_size: int) -> dict[str, np.ndarray]:
  d, h, k, f = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  rows = t.arrays.get("encoder.embed_positions.weight", np.zeros((SOURCE_POSITIONS, 0))).shape[0]
  positions = t.take("encoder.embed_positions.weight", (rows, d))
  # 1e-3: a float16 copy (CTranslate2's) is off by up to half a float16 step at 1.0.
  if not np.allclose(positions, encoder_positions(rows, d), atol=1e-3):
    raise PretrainedError(f"{t.source}: encoder.embed_positions are not Whisper's sinusoids "
                          "(our encoder computes them; trained tables are not supported)")
  out = {
      "embedding/embedding": pad_rows(t.take("decoder.embed_tokens.weight", (vocab_size, d)),
                                      cfg.vocab_size),
      "decoder/pos_embedding": t.take("decoder.embed_positions.weight", (cfg.max_length, d)),
      "encoder/conv_0": t.take("encoder.conv1.weight", (d, NUM_MEL_BINS, 3)).transpose(2, 1, 0),
      "encoder/conv_0_bias": t.take("encoder.conv1.bias", (d,)),
      "encoder/conv_1": t.take("encoder.conv2.weight", (d, d, 3)).transpose(2, 1, 0),
      "encoder/conv_1_bias": t.take("encoder.conv2.bias", (d,)),
      **common.norm(t, "encoder.layer_norm", "encoder/final_norm", d),
      **common.norm(t, "decoder.layer_norm", "decoder/final_norm", d),
  }
  for i in range(cfg.num_encoder_layers):
    hf, us = f"encoder.layers.{i}", f"encoder/layer_{i}"
    out.update(_attention(t, f"{hf}.self_attn", f"{us}/self_attention", d, h, k))
    out.update(common.norm(t, f"{hf}.self_attn_layer_norm", f"{us}/attention_block/norm", d))
    out.update(_mlp(t, hf, f"{us}/mlp", d, f))
    out.update(common.norm(t, f"{hf}.final_layer_norm", f"{us}/mlp_block/norm", d))
  for i in range(cfg.num_decoder_layers):
    hf, us = f"decoder.layers.{i}", f"decoder/layer_{i}"
    out.update(_attention(t, f"{hf}.self_attn", f"{us}/self_attention", d, h, k))
    out.update(common.norm(t, f"{hf}.self_attn_layer_norm",
                           f"{us}/self_attention_block/norm", d))
    out.update(_attention(t, f"{hf}.encoder_attn", f"{us}/cross_attention", d, h, k))
    out.update(common.norm(t, f"{hf}.encoder_attn_layer_norm",
                           f"{us}/cross_attention_block/norm", d))
    out.update(_mlp(t, hf, f"{us}/mlp", d, f))
    out.update(common.norm(t, f"{hf}.final_layer_norm", f"{us}/mlp_block/norm", d))
  if t.has("proj_out.weight"):  # tied: a saved copy of the embedding (no prefix to strip).
    t.take("proj_out.weight", (vocab_size, d))
  return out


def _attention_hf(p: dict, us: str, hf: str, d: int) -> dict[str, np.ndarray]:
  out = {}
  for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    out[f"{hf}.{proj}.weight"] = p[f"{us}/{name}"].reshape(d, -1).T
    if name != "key":  # Whisper's key has no bias (ours is ignored by the softmax).
      out[f"{hf}.{proj}.bias"] = p[f"{us}/{name}_bias"].reshape(-1)
  out[f"{hf}.out_proj.weight"] = p[f"{us}/out"].reshape(-1, d).T
  out[f"{hf}.out_proj.bias"] = p[f"{us}/out_bias"]
  return out


def _mlp_hf(p: dict, us: str, hf: str) -> dict[str, np.ndarray]:
  return {f"{hf}.fc1.weight": p[f"{us}/wi"].T, f"{hf}.fc1.bias": p[f"{us}/bi"],
          f"{hf}.fc2.weight": p[f"{us}/wo"].T, f"{hf}.fc2.bias": p[f"{us}/bo"]}


def to_hf(p: dict[str, np.ndarray], cfg, vocab_size: int) -> dict[str, np.ndarray]:
  """A WhisperForConditionalGeneration state dict (proj_out tied to the embedding)."""
  d = cfg.emb_dim
  out = {
      "model.decoder.embed_tokens.weight": p["embedding/embedding"][:vocab_size],
      "model.decoder.embed_positions.weight": p["decoder/pos_embedding"],
      "model.encoder.embed_positions.weight": encoder_positions(SOURCE_POSITIONS, d),
      "model.encoder.conv1.weight": p["encoder/conv_0"].transpose(2, 1, 0),
      "model.encoder.conv1.bias": p["encoder/conv_0_bias"],
      "model.encoder.conv2.weight": p["encoder/conv_1"].transpose(2, 1, 0),
      "model.encoder.conv2.bias": p["encoder/conv_1_bias"],
      **common.norm_hf(p, "encoder/final_norm", "model.encoder.layer_norm"),
      **common.norm_hf(p, "decoder/final_norm", "model.decoder.layer_norm"),
  }
  for i in range(cfg.num_encoder_layers):
    hf, us = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
    out.update(_attention_hf(p, f"{us}/self_attention", f"{hf}.self_attn", d))
    out.update(common.norm_hf(p, f"{us}/attention_block/norm", f"{hf}.self_attn_layer_norm"))
    out.update(_mlp_hf(p, f"{us}/mlp", hf))
    out.update(common.norm_hf(p, f"{us}/mlp_block/norm", f"{hf}.final_layer_norm"))
  for i in range(cfg.num_decoder_layers):
    hf, us = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
    out.update(_attention_hf(p, f"{us}/self_attention", f"{hf}.self_attn", d))
    out.update(common.norm_hf(p, f"{us}/self_attention_block/norm",
                              f"{hf}.self_attn_layer_norm"))
    out.update(_attention_hf(p, f"{us}/cross_attention", f"{hf}.encoder_attn", d))
    out.update(common.norm_hf(p, f"{us}/cross_attention_block/norm",
                              f"{hf}.encoder_attn_layer_norm"))
    out.update(_mlp_hf(p, f"{us}/mlp", hf))
    out.update(common.norm_hf(p, f"{us}/mlp_block/norm", f"{hf}.final_layer_norm"))
  return out


def hf_config(cfg, vocab_size: int, labels: list[str]) -> dict:
  """The architecture's config.json fields; the token ids (start, end, suppressed) come from
  the folder the run was tuned from (export.over_source_config)."""
  del labels
  return {
      "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
      "vocab_size": vocab_size, "num_mel_bins": NUM_MEL_BINS, "d_model": cfg.emb_dim,
      "encoder_layers": cfg.num_encoder_layers, "decoder_layers": cfg.num_decoder_layers,
      "encoder_attention_heads": cfg.num_heads, "decoder_attention_heads": cfg.num_heads,
      "encoder_ffn_dim": cfg.mlp_dim, "decoder_ffn_dim": cfg.mlp_dim,
      "activation_function": common.hf_activation(cfg.activation),
      "max_source_positions": SOURCE_POSITIONS, "max_target_positions": cfg.max_length,
      "scale_embedding": False, "tie_word_embeddings": True,
      "dropout": cfg.dropout_rate, "attention_dropout": cfg.attention_dropout_rate,
  }


def feature_extractor(mels: int, frames: int = 2 * SOURCE_POSITIONS) -> dict:
  """preprocessor_config.json: WhisperFeatureExtractor's settings for `mels` bins and a
  window of `frames` 10 ms frames (Whisper's 3,000; whole seconds)."""
  return {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": mels,
          "sampling_rate": 16000, "hop_length": 160, "chunk_length": frames // 100,
          "n_fft": 400, "n_samples": frames * 160, "nb_max_frames": frames,
          "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False,
          "processor_class": "WhisperProcessor"}


def tuned_window_files(hf_config: dict, tensors: dict[str, np.ndarray], frames: int,
                       source_folder: str) -> dict[str, dict]:
  """For a run tuned on windows of `frames` (data.max_frames): config.json's
  max_source_positions and the encoder's position table set to the window (transformers
  pads every input to 2 x max_source_positions frames), and the files beside config.json:
  preprocessor_config.json for that window and the source folder's generation_config.json
  (its prompt and suppressed tokens). `hf_config` and `tensors` are changed in place."""
  hf_config["max_source_positions"] = frames // 2
  tensors["model.encoder.embed_positions.weight"] = encoder_positions(frames // 2,
                                                                      hf_config["d_model"])
  files = {"preprocessor_config.json": feature_extractor(NUM_MEL_BINS, frames)}
  path = os.path.join(source_folder or "", "generation_config.json")
  if source_folder and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      files["generation_config.json"] = json.load(f)
  return files


def check_exportable(cfg) -> list[str]:
  want = {"attention_bias": True, "attention_out_bias": True, "norm_position": "pre",
          "positions": "learned", "encoder_positions": "sinusoidal", "norm": "layernorm",
          "mlp_gated": False, "mlp_bias": True, "scale_tied_logits": False,
          "logits_via_embedding": True, "frontend_channels": 0, "subsample": 2,
          "num_mel_bins": NUM_MEL_BINS, "ctc_weight": 0.0,
          "frontend_activation": cfg.activation, "num_kv_heads": 0}
  bad = [f"model.{k}={getattr(cfg, k)!r} (Whisper: {v!r})" for k, v in want.items()
         if getattr(cfg, k) != v]
  if cfg.head_dim * cfg.num_heads != cfg.emb_dim:
    bad.append(f"model.qkv_dim={cfg.head_dim * cfg.num_heads} (Whisper: emb_dim "
               f"{cfg.emb_dim})")
  return bad
