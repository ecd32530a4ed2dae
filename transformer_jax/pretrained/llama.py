"""Today's decoders (LlamaForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM) <-> our
`decoder_lm` with the decoder recipe's options (models/config.py).

The three share one recipe: pre-RMSNorm blocks, a gated MLP (gate_proj, up_proj,
down_proj: our wi_0, wi_1, wo), rotary positions and grouped-query attention. They
differ in a few options:

  llama        no biases (or all four with attention_bias), SiLU, optional Llama 3 RoPE
               scaling, tied or untied output.
  qwen2        biases on the query, key and value projections only.
  gemma3_text  QK-norm, a norm after each block as well as before it, embeddings times
               sqrt(D), GELU (tanh), queries scaled by query_pre_attn_scalar**-0.5,
               sliding-window layers with their own RoPE base and every Nth layer global;
               its RMSNorm weights w act as (1 + w): ours hold 1 + w.

PyTorch's linear weights are [out, in]; ours are [in, ...out] with heads apart:
q_proj [H*K, D] -> query [D, H, K], k_proj/v_proj [N*K, D] -> key/value [D, N, K],
o_proj [D, H*K] -> out [H, K, D].
"""

from __future__ import annotations

import dataclasses

import numpy as np

from transformer_jax.pretrained import common
from transformer_jax.pretrained.tensors import PretrainedError, Tensors, pad_rows

VOCAB_TABLES = {"shared_embedding/embedding": 0, "decoder/logits": 1}  # token id axis.
PREFIXES = ("model.",)
_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "gemma3_text": "Gemma3ForCausalLM"}


def _rope(hf: dict, source: str, layer_type: str = "full_attention") -> tuple[float, dict]:
  """(rope_theta, the scaling's parameters or {}) from transformers 5's rope_parameters
  (one dict, or one per layer type) or 4's rope_theta / rope_scaling."""
  params = hf.get("rope_parameters")
  if isinstance(params, dict) and layer_type in params:
    params = params[layer_type]
  if not isinstance(params, dict):
    params = {"rope_theta": hf.get("rope_theta", 10000.0), **(hf.get("rope_scaling") or {})}
  kind = params.get("rope_type", params.get("type", "default"))
  if kind not in ("default", "linear", "llama3"):
    raise PretrainedError(f"{source}: rope type {kind!r} is not supported "
                          "(supported: default, linear, llama3)")
  return float(params.get("rope_theta", 10000.0)), ({} if kind == "default" else
                                                    {**params, "rope_type": kind})


def _rope_fields(theta: float, scaling: dict) -> dict:
  fields = {"rotary_base": theta, "rotary_scaling": scaling.get("rope_type", "none")}
  if scaling:
    fields["rotary_scaling_factor"] = float(scaling["factor"])
  if scaling.get("rope_type") == "llama3":
    fields.update(rotary_low_freq_factor=float(scaling["low_freq_factor"]),
                  rotary_high_freq_factor=float(scaling["high_freq_factor"]),
                  rotary_original_length=int(scaling["original_max_position_embeddings"]))
  return fields


def _global_every(layer_types: list, source: str) -> int:
  """N such that layer i attends fully exactly when (i + 1) % N == 0 (0: none does)."""
  full = [i for i, t in enumerate(layer_types) if t == "full_attention"]
  n = full[0] + 1 if full else 0
  if [t == "full_attention" for t in layer_types] != [
      bool(n) and (i + 1) % n == 0 for i in range(len(layer_types))]:
    raise PretrainedError(f"{source}: layer_types {layer_types} are not every Nth layer "
                          "global (the pattern we model)")
  return n


@dataclasses.dataclass(frozen=True)
class Family:
  """One model_type of the Llama family, with the interface of pretrained/bert.py."""
  model_type: str

  @property
  def MODEL_TYPES(self) -> tuple[str, ...]:  # pylint: disable=invalid-name
    return (self.model_type,)

  PREFIXES = PREFIXES
  VOCAB_TABLES = VOCAB_TABLES

  @property
  def gemma(self) -> bool:
    return self.model_type == "gemma3_text"

  # ------------------------------------------------------------------- config.json

  def model_fields(self, hf: dict, source: str) -> dict:
    get = common.getter(hf, source)
    h = get("num_attention_heads")
    head_dim = hf.get("head_dim") or get("hidden_size") // h
    bias = bool(hf.get("attention_bias", False))
    fields = {
        "emb_dim": get("hidden_size"), "num_heads": h,
        "num_kv_heads": hf.get("num_key_value_heads") or h, "qkv_dim": h * head_dim,
        "mlp_dim": get("intermediate_size"), "num_decoder_layers": get("num_hidden_layers"),
        "norm_position": "pre", "norm": "rmsnorm", "mlp_gated": True,
        "mlp_bias": bool(hf.get("mlp_bias", False)),
        "activation": common.activation(
            hf.get("hidden_activation") or hf.get("hidden_act", "silu"), source,
            "hidden_activation" if self.gemma else "hidden_act"),
        "layer_norm_epsilon": float(hf.get("rms_norm_eps", 1e-6)),
        "attention_bias": bias or self.model_type == "qwen2",
        "attention_out_bias": bias and self.model_type == "llama",
        "positions": "rotary", "logits_via_embedding": bool(hf.get("tie_word_embeddings",
                                                                   self.gemma)),
        "scale_tied_logits": False,
        "dropout_rate": 0.0, "attention_dropout_rate": float(hf.get("attention_dropout", 0.0)),
        "qk_norm": False, "post_norms": False, "embed_scale": False, "attention_scale": 0.0,
        "sliding_window": 0, "global_every": 0, "rotary_base_local": 0.0,
        **_rope_fields(*_rope(hf, source)),
    }
    if self.model_type == "qwen2" and hf.get("use_sliding_window"):
      raise PretrainedError(f"{source}: use_sliding_window=true is not supported for qwen2")
    if self.gemma:
      for field in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(field) is not None:
          raise PretrainedError(f"{source}: {field}={hf[field]} is not supported")
      if hf.get("use_bidirectional_attention"):
        raise PretrainedError(f"{source}: use_bidirectional_attention=true is not supported")
      types = hf.get("layer_types") or [
          "full_attention" if (i + 1) % hf.get("sliding_window_pattern", 6) == 0
          else "sliding_attention" for i in range(fields["num_decoder_layers"])]
      local_theta, local_scaling = _rope(hf, source, "sliding_attention")
      if "rope_parameters" not in hf:
        local_theta, local_scaling = float(hf.get("rope_local_base_freq", 10000.0)), {}
      if local_scaling:
        raise PretrainedError(f"{source}: RoPE scaling on sliding layers is not supported")
      fields.update(
          qk_norm=True, post_norms=True, embed_scale=True,
          attention_scale=float(hf.get("query_pre_attn_scalar") or head_dim) ** -0.5,
          sliding_window=int(get("sliding_window")),
          global_every=_global_every(types, source), rotary_base_local=local_theta)
    return fields

  def hf_config(self, cfg, vocab_size: int, labels) -> dict:
    del labels
    out = {
        "architectures": [_CLASSES[self.model_type]], "model_type": self.model_type,
        "vocab_size": vocab_size, "hidden_size": cfg.emb_dim,
        "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_decoder_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads or cfg.num_heads, "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.layer_norm_epsilon, "tie_word_embeddings": cfg.logits_via_embedding,
        "max_position_embeddings": cfg.max_length,
        "attention_dropout": cfg.attention_dropout_rate,
        "hidden_activation" if self.gemma else "hidden_act": (
            "gelu_pytorch_tanh" if self.gemma and cfg.activation == "gelu"
            else common.hf_activation(cfg.activation)),
        "rope_theta": cfg.rotary_base,
    }
    if cfg.rotary_scaling:
      kind, *rest = cfg.rotary_scaling
      out["rope_scaling"] = {"rope_type": kind, "factor": rest[0]} if kind == "linear" else {
          "rope_type": kind, "factor": rest[0], "low_freq_factor": rest[1],
          "high_freq_factor": rest[2], "original_max_position_embeddings": int(rest[3])}
    if self.model_type == "llama":
      out.update(attention_bias=cfg.attention_bias, mlp_bias=cfg.mlp_bias)
    if self.gemma:
      out.update(
          query_pre_attn_scalar=round(cfg.attention_scale ** -2),
          sliding_window=cfg.sliding_window, rope_local_base_freq=cfg.rotary_base_local,
          layer_types=["sliding_attention" if cfg.layer_window(i) else "full_attention"
                       for i in range(cfg.num_decoder_layers)],
          final_logit_softcapping=None, attn_logit_softcapping=None)
    return out

  def check_exportable(self, cfg) -> list[str]:
    want = {"norm": "rmsnorm", "norm_position": "pre", "mlp_gated": True,
            "positions": "rotary", "scale_tied_logits": False,
            "qk_norm": self.gemma, "post_norms": self.gemma, "embed_scale": self.gemma}
    if self.model_type == "qwen2":
      want.update(attention_bias=True, attention_out_bias=False)
    elif self.gemma:
      want["attention_bias"] = False
    elif cfg.attention_bias:  # llama's attention_bias: all four projections.
      want["attention_out_bias"] = True
    if self.model_type != "llama":
      want["mlp_bias"] = False
    if not self.gemma:
      want.update(sliding_window=0, attention_scale=0.0)
    bad = [f"model.{k}={getattr(cfg, k)!r} ({self.model_type}: {v!r})" for k, v in want.items()
           if getattr(cfg, k) != v]
    if self.gemma and cfg.rotary_base_local == 0:
      bad.append("model.rotary_base_local=0 (gemma3_text: the sliding layers' base)")
    return bad

  # ------------------------------------------------------------------- tensors

  def _norm(self, w: np.ndarray) -> np.ndarray:
    return w + 1.0 if self.gemma else w

  def _norm_hf(self, scale: np.ndarray) -> np.ndarray:
    return scale - 1.0 if self.gemma else scale

  def _norms(self) -> dict[str, str]:
    """Their norm name -> ours, per layer."""
    if self.gemma:
      return {"input_layernorm": "self_attention_block/norm",
              "post_attention_layernorm": "self_attention_block/post_norm",
              "pre_feedforward_layernorm": "mlp_block/norm",
              "post_feedforward_layernorm": "mlp_block/post_norm"}
    return {"input_layernorm": "self_attention_block/norm",
            "post_attention_layernorm": "mlp_block/norm"}

  def to_ours(self, t: Tensors, cfg, vocab_size: int) -> dict[str, np.ndarray]:
    d, h, k, f = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    n = cfg.num_kv_heads or h
    out = {"shared_embedding/embedding": pad_rows(t.take("embed_tokens.weight", (vocab_size, d)),
                                                  cfg.vocab_size),
           "decoder/final_norm/scale": self._norm(t.take("norm.weight", (d,)))}
    for i in range(cfg.num_decoder_layers):
      hf, us = f"layers.{i}.", f"decoder/layer_{i}/"
      for theirs, ours in self._norms().items():
        out[f"{us}{ours}/scale"] = self._norm(t.take(f"{hf}{theirs}.weight", (d,)))
      heads = {"q": ("query", h), "k": ("key", n), "v": ("value", n)}
      for short, (name, count) in heads.items():
        w = t.take(f"{hf}self_attn.{short}_proj.weight", (count * k, d))
        out[f"{us}self_attention/{name}"] = w.T.reshape(d, count, k)
        if cfg.attention_bias:
          out[f"{us}self_attention/{name}_bias"] = t.take(
              f"{hf}self_attn.{short}_proj.bias", (count * k,)).reshape(count, k)
      out[f"{us}self_attention/out"] = t.take(f"{hf}self_attn.o_proj.weight",
                                              (d, h * k)).T.reshape(h, k, d)
      if cfg.attention_bias and cfg.attention_out_bias:
        out[f"{us}self_attention/out_bias"] = t.take(f"{hf}self_attn.o_proj.bias", (d,))
      if cfg.qk_norm:
        for short, name in (("q", "query"), ("k", "key")):
          out[f"{us}self_attention/{name}_norm/scale"] = self._norm(
              t.take(f"{hf}self_attn.{short}_norm.weight", (k,)))
      for theirs, ours, shape in (("gate_proj", "wi_0", (f, d)), ("up_proj", "wi_1", (f, d)),
                                  ("down_proj", "wo", (d, f))):
        out[f"{us}mlp/{ours}"] = t.take(f"{hf}mlp.{theirs}.weight", shape).T
        if cfg.mlp_bias:
          out[f"{us}mlp/{ours.replace('w', 'b', 1)}"] = t.take(f"{hf}mlp.{theirs}.bias",
                                                                 shape[:1])
    if not cfg.logits_via_embedding:
      out["decoder/logits"] = pad_rows(t.take("lm_head.weight", (vocab_size, d)),
                                       cfg.vocab_size).T
    elif t.has("lm_head.weight"):  # tied: a saved copy of the embedding.
      t.take("lm_head.weight", (vocab_size, d))
    return out

  def to_hf(self, p: dict[str, np.ndarray], cfg, vocab_size: int) -> dict[str, np.ndarray]:
    d, h, k = cfg.emb_dim, cfg.num_heads, cfg.head_dim
    out = {"model.embed_tokens.weight": p["shared_embedding/embedding"][:vocab_size],
           "model.norm.weight": self._norm_hf(p["decoder/final_norm/scale"])}
    for i in range(cfg.num_decoder_layers):
      hf, us = f"model.layers.{i}.", f"decoder/layer_{i}/"
      for theirs, ours in self._norms().items():
        out[f"{hf}{theirs}.weight"] = self._norm_hf(p[f"{us}{ours}/scale"])
      for short, name in (("q", "query"), ("k", "key"), ("v", "value")):
        w = p[f"{us}self_attention/{name}"]
        out[f"{hf}self_attn.{short}_proj.weight"] = w.reshape(d, -1).T
        if f"{us}self_attention/{name}_bias" in p:
          out[f"{hf}self_attn.{short}_proj.bias"] = p[f"{us}self_attention/{name}_bias"].reshape(-1)
      out[f"{hf}self_attn.o_proj.weight"] = p[f"{us}self_attention/out"].reshape(h * k, d).T
      if f"{us}self_attention/out_bias" in p:
        out[f"{hf}self_attn.o_proj.bias"] = p[f"{us}self_attention/out_bias"]
      for short, name in (("q", "query"), ("k", "key")):
        if f"{us}self_attention/{name}_norm/scale" in p:
          out[f"{hf}self_attn.{short}_norm.weight"] = self._norm_hf(
              p[f"{us}self_attention/{name}_norm/scale"])
      for theirs, ours in (("gate_proj", "wi_0"), ("up_proj", "wi_1"), ("down_proj", "wo")):
        out[f"{hf}mlp.{theirs}.weight"] = p[f"{us}mlp/{ours}"].T
        if f"{us}mlp/{ours.replace('w', 'b', 1)}" in p:
          out[f"{hf}mlp.{theirs}.bias"] = p[f"{us}mlp/{ours.replace('w', 'b', 1)}"]
    if not cfg.logits_via_embedding:
      out["lm_head.weight"] = p["decoder/logits"].T[:vocab_size]
    return out


LLAMA, QWEN2, GEMMA3 = Family("llama"), Family("qwen2"), Family("gemma3_text")
FAMILIES = (LLAMA, QWEN2, GEMMA3)
