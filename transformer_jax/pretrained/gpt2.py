"""GPT-2-family decoders (GPT2Model, GPT2LMHeadModel) <-> our `decoder_lm` with GPT-2's options.

GPT-2 is pre-LN with a final LayerNorm, biases on every projection, the tanh
GELU ("gelu_new", our "gelu"), learned positions and an output projection tied
to the token embedding with no 1/sqrt(D) scale (`scale_tied_logits=False`).
Its Conv1D weights are already [in, out]; the query, key and value projections
are fused in one `c_attn` [D, 3D] that we split.
"""

from __future__ import annotations

import numpy as np

from transformer_jax.pretrained import common
from transformer_jax.pretrained.tensors import PretrainedError, Tensors, pad_rows

MODEL_TYPES = ("gpt2",)
PREFIXES = ("transformer.",)
VOCAB_TABLES = {"shared_embedding/embedding": 0, "decoder/logits": 1}  # token id axis.


def model_fields(hf: dict, source: str) -> dict:
  get = common.getter(hf, source)
  if not hf.get("scale_attn_weights", True):
    raise PretrainedError(f"{source}: scale_attn_weights=false is not supported")
  if hf.get("scale_attn_by_inverse_layer_idx", False):
    raise PretrainedError(f"{source}: scale_attn_by_inverse_layer_idx=true is not supported")
  d = get("n_embd")
  return {
      "emb_dim": d, "num_heads": get("n_head"), "qkv_dim": d,
      "mlp_dim": hf.get("n_inner") or 4 * d, "num_decoder_layers": get("n_layer"),
      "norm_position": "pre",
      "activation": common.activation(hf.get("activation_function", "gelu_new"), source,
                                      "activation_function"),
      "layer_norm_epsilon": float(hf.get("layer_norm_epsilon", 1e-5)), "attention_bias": True,
      "positions": "learned", "max_length": get("n_positions"),
      "logits_via_embedding": bool(hf.get("tie_word_embeddings", True)),
      "scale_tied_logits": False,
      "norm": "layernorm", "mlp_gated": False, "mlp_bias": True,
      "dropout_rate": float(hf.get("resid_pdrop", 0.1)),
      "attention_dropout_rate": float(hf.get("attn_pdrop", 0.1)),
  }


def to_ours(t: Tensors, cfg, vocab_size: int) -> dict[str, np.ndarray]:
  d, h, k, f = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  out = {
      "shared_embedding/embedding": pad_rows(t.take("wte.weight", (vocab_size, d)),
                                             cfg.vocab_size),
      "decoder/pos_embedding": t.take("wpe.weight", (cfg.max_length, d)),
      **common.norm(t, "ln_f", "decoder/final_norm", d),
  }
  for i in range(cfg.num_decoder_layers):
    hf, us = f"h.{i}.", f"decoder/layer_{i}/"
    out.update(common.norm(t, f"{hf}ln_1", f"{us}self_attention_block/norm", d))
    qkv = np.split(t.take(f"{hf}attn.c_attn.weight", (d, 3 * h * k)), 3, axis=1)
    qkv_bias = np.split(t.take(f"{hf}attn.c_attn.bias", (3 * h * k,)), 3)
    for name, w, b in zip(("query", "key", "value"), qkv, qkv_bias):
      out[f"{us}self_attention/{name}"] = w.reshape(d, h, k)
      out[f"{us}self_attention/{name}_bias"] = b.reshape(h, k)
    out[f"{us}self_attention/out"] = t.take(f"{hf}attn.c_proj.weight", (h * k, d)).reshape(h, k, d)
    out[f"{us}self_attention/out_bias"] = t.take(f"{hf}attn.c_proj.bias", (d,))
    out.update(common.norm(t, f"{hf}ln_2", f"{us}mlp_block/norm", d))
    out[f"{us}mlp/wi"] = t.take(f"{hf}mlp.c_fc.weight", (d, f))
    out[f"{us}mlp/bi"] = t.take(f"{hf}mlp.c_fc.bias", (f,))
    out[f"{us}mlp/wo"] = t.take(f"{hf}mlp.c_proj.weight", (f, d))
    out[f"{us}mlp/bo"] = t.take(f"{hf}mlp.c_proj.bias", (d,))
  if not cfg.logits_via_embedding:  # an untied head: lm_head.weight [V, D].
    out["decoder/logits"] = pad_rows(t.take("lm_head.weight", (vocab_size, d)),
                                     cfg.vocab_size).T
  elif t.has("lm_head.weight"):  # tied: a saved copy of wte.
    t.take("lm_head.weight", (vocab_size, d))
  return out


def to_hf(p: dict[str, np.ndarray], cfg, vocab_size: int) -> dict[str, np.ndarray]:
  """A GPT2LMHeadModel state dict (the head tied to wte unless the model has its own)."""
  d, h, k = cfg.emb_dim, cfg.num_heads, cfg.head_dim
  out = {
      "transformer.wte.weight": p["shared_embedding/embedding"][:vocab_size],
      "transformer.wpe.weight": p["decoder/pos_embedding"],
      **common.norm_hf(p, "decoder/final_norm", "transformer.ln_f"),
  }
  for i in range(cfg.num_decoder_layers):
    hf, us = f"transformer.h.{i}.", f"decoder/layer_{i}/"
    out.update(common.norm_hf(p, f"{us}self_attention_block/norm", f"{hf}ln_1"))
    out[f"{hf}attn.c_attn.weight"] = np.concatenate(
        [p[f"{us}self_attention/{n}"].reshape(d, h * k) for n in ("query", "key", "value")], 1)
    out[f"{hf}attn.c_attn.bias"] = np.concatenate(
        [p[f"{us}self_attention/{n}_bias"].reshape(-1) for n in ("query", "key", "value")])
    out[f"{hf}attn.c_proj.weight"] = p[f"{us}self_attention/out"].reshape(h * k, d)
    out[f"{hf}attn.c_proj.bias"] = p[f"{us}self_attention/out_bias"]
    out.update(common.norm_hf(p, f"{us}mlp_block/norm", f"{hf}ln_2"))
    out[f"{hf}mlp.c_fc.weight"] = p[f"{us}mlp/wi"]
    out[f"{hf}mlp.c_fc.bias"] = p[f"{us}mlp/bi"]
    out[f"{hf}mlp.c_proj.weight"] = p[f"{us}mlp/wo"]
    out[f"{hf}mlp.c_proj.bias"] = p[f"{us}mlp/bo"]
  if not cfg.logits_via_embedding:
    out["lm_head.weight"] = p["decoder/logits"].T[:vocab_size]
  return out


def hf_config(cfg, vocab_size: int, labels: list[str]) -> dict:
  del labels
  return {
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
      "n_positions": cfg.max_length, "n_embd": cfg.emb_dim, "n_layer": cfg.num_decoder_layers,
      "n_head": cfg.num_heads, "n_inner": cfg.mlp_dim,
      "activation_function": common.hf_activation(cfg.activation),
      "layer_norm_epsilon": cfg.layer_norm_epsilon, "resid_pdrop": cfg.dropout_rate,
      "embd_pdrop": cfg.dropout_rate, "attn_pdrop": cfg.attention_dropout_rate,
      "tie_word_embeddings": cfg.logits_via_embedding,
  }


def check_exportable(cfg) -> list[str]:
  want = {"attention_bias": True, "norm_position": "pre", "positions": "learned",
          "norm": "layernorm", "mlp_gated": False, "mlp_bias": True,
          "scale_tied_logits": False}
  bad = [f"model.{k}={getattr(cfg, k)!r} (GPT-2: {v!r})" for k, v in want.items()
         if getattr(cfg, k) != v]
  if cfg.head_dim * cfg.num_heads != cfg.emb_dim:
    bad.append(f"model.qkv_dim={cfg.head_dim * cfg.num_heads} (GPT-2: emb_dim={cfg.emb_dim})")
  return bad
