"""BERT-family encoders (BertModel, BertForSequenceClassification, MiniLM-style small BERTs)
<-> our `encoder_classifier` with BERT's options.

BERT is post-LN with a LayerNorm over the summed word, position and token type
embeddings, biases on every projection, exact-erf GELU and the tokenizer's
[CLS] at position 0: `class_vector=False`, `embedding_norm=True`,
`attention_bias=True`, `norm_position="post"`, `activation="gelu_exact"`.
PyTorch's Linear keeps weights as [out, in]; ours are [in, out] with the heads
split out ([D, H, K] for queries, keys and values, [H, K, D] for the output).
"""

from __future__ import annotations

import numpy as np

from transformer_jax.pretrained import common
from transformer_jax.pretrained.tensors import PretrainedError, Tensors, pad_rows

MODEL_TYPES = ("bert",)
PREFIXES = ("bert.",)
VOCAB_TABLES = {"token_embedding/embedding": 0}  # our parameters indexed by token id (axis).


def model_fields(hf: dict, source: str) -> dict:
  """config.json -> our config.model fields."""
  get = common.getter(hf, source)
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise PretrainedError(f"{source}: position_embedding_type="
                          f"{hf['position_embedding_type']!r} is not supported (only 'absolute')")
  return {
      "emb_dim": get("hidden_size"), "num_heads": get("num_attention_heads"),
      "qkv_dim": get("hidden_size"), "mlp_dim": get("intermediate_size"),
      "num_encoder_layers": get("num_hidden_layers"), "norm_position": "post",
      "activation": common.activation(get("hidden_act"), source, "hidden_act"),
      "layer_norm_epsilon": float(get("layer_norm_eps")), "attention_bias": True,
      "positions": "learned", "max_length": get("max_position_embeddings"),
      "num_token_types": get("type_vocab_size"), "class_vector": False,
      "embedding_norm": True, "pooling": "cls",
      "norm": "layernorm", "mlp_gated": False, "mlp_bias": True,
      "dropout_rate": float(hf.get("hidden_dropout_prob", 0.1)),
      "attention_dropout_rate": float(hf.get("attention_probs_dropout_prob", 0.1)),
  }


def to_ours(t: Tensors, cfg, vocab_size: int) -> dict[str, np.ndarray]:
  """Our flat parameters ("a/b/c" paths) from a folder's tensors."""
  d, h, k, f = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  out = {
      "token_embedding/embedding": pad_rows(
          t.take("embeddings.word_embeddings.weight", (vocab_size, d)), cfg.vocab_size),
      "pos_embedding": t.take("embeddings.position_embeddings.weight", (cfg.max_length, d)),
      "token_type_embedding": t.take("embeddings.token_type_embeddings.weight",
                                     (cfg.num_token_types, d)),
      **common.norm(t, "embeddings.LayerNorm", "embedding_norm", d),
  }
  for i in range(cfg.num_encoder_layers):
    hf, us = f"encoder.layer.{i}.", f"layer_{i}/"
    for name in ("query", "key", "value"):
      w = t.take(f"{hf}attention.self.{name}.weight", (h * k, d))
      out[f"{us}self_attention/{name}"] = w.T.reshape(d, h, k)
      out[f"{us}self_attention/{name}_bias"] = t.take(
          f"{hf}attention.self.{name}.bias", (h * k,)).reshape(h, k)
    out[f"{us}self_attention/out"] = t.take(
        f"{hf}attention.output.dense.weight", (d, h * k)).T.reshape(h, k, d)
    out[f"{us}self_attention/out_bias"] = t.take(f"{hf}attention.output.dense.bias", (d,))
    out.update(common.norm(t, f"{hf}attention.output.LayerNorm", f"{us}attention_block/norm", d))
    out[f"{us}mlp/wi"] = t.take(f"{hf}intermediate.dense.weight", (f, d)).T
    out[f"{us}mlp/bi"] = t.take(f"{hf}intermediate.dense.bias", (f,))
    out[f"{us}mlp/wo"] = t.take(f"{hf}output.dense.weight", (d, f)).T
    out[f"{us}mlp/bo"] = t.take(f"{hf}output.dense.bias", (d,))
    out.update(common.norm(t, f"{hf}output.LayerNorm", f"{us}mlp_block/norm", d))
  if t.has("pooler.dense.weight"):  # BertModel's pooler (the [CLS] state -> Dense -> tanh).
    out["pooler/kernel"] = t.take("pooler.dense.weight", (d, d)).T
    out["pooler/bias"] = t.take("pooler.dense.bias", (d,))
  if t.has("classifier.weight") and cfg.num_classes:  # BertForSequenceClassification.
    out["head/kernel"] = t.take("classifier.weight", (cfg.num_classes, d)).T
    out["head/bias"] = t.take("classifier.bias", (cfg.num_classes,))
  return out


def to_hf(p: dict[str, np.ndarray], cfg, vocab_size: int) -> dict[str, np.ndarray]:
  """A state dict from our flat parameters: BertForSequenceClassification ("bert." names
  and "classifier.*") when `p` has a head, else BertModel."""
  d, h, k = cfg.emb_dim, cfg.num_heads, cfg.head_dim
  pre = "bert." if "head/kernel" in p else ""
  out = {
      f"{pre}embeddings.word_embeddings.weight": p["token_embedding/embedding"][:vocab_size],
      f"{pre}embeddings.position_embeddings.weight": p["pos_embedding"],
      f"{pre}embeddings.token_type_embeddings.weight": p["token_type_embedding"],
      **common.norm_hf(p, "embedding_norm", f"{pre}embeddings.LayerNorm"),
  }
  for i in range(cfg.num_encoder_layers):
    hf, us = f"{pre}encoder.layer.{i}.", f"layer_{i}/"
    for name in ("query", "key", "value"):
      out[f"{hf}attention.self.{name}.weight"] = p[f"{us}self_attention/{name}"].reshape(
          d, h * k).T
      out[f"{hf}attention.self.{name}.bias"] = p[f"{us}self_attention/{name}_bias"].reshape(-1)
    out[f"{hf}attention.output.dense.weight"] = p[f"{us}self_attention/out"].reshape(h * k, d).T
    out[f"{hf}attention.output.dense.bias"] = p[f"{us}self_attention/out_bias"]
    out.update(common.norm_hf(p, f"{us}attention_block/norm", f"{hf}attention.output.LayerNorm"))
    out[f"{hf}intermediate.dense.weight"] = p[f"{us}mlp/wi"].T
    out[f"{hf}intermediate.dense.bias"] = p[f"{us}mlp/bi"]
    out[f"{hf}output.dense.weight"] = p[f"{us}mlp/wo"].T
    out[f"{hf}output.dense.bias"] = p[f"{us}mlp/bo"]
    out.update(common.norm_hf(p, f"{us}mlp_block/norm", f"{hf}output.LayerNorm"))
  if "pooler/kernel" in p:
    out[f"{pre}pooler.dense.weight"] = p["pooler/kernel"].T
    out[f"{pre}pooler.dense.bias"] = p["pooler/bias"]
  if pre:
    out["classifier.weight"] = p["head/kernel"].T
    out["classifier.bias"] = p["head/bias"]
  return out


def hf_config(cfg, vocab_size: int, labels: list[str] | None) -> dict:
  """config.json with our dimensions: a BertForSequenceClassification with `labels`, or
  (labels None) a BertModel."""
  out = {
      "architectures": ["BertForSequenceClassification" if labels else "BertModel"],
      "model_type": "bert",
      "vocab_size": vocab_size, "hidden_size": cfg.emb_dim,
      "num_attention_heads": cfg.num_heads, "num_hidden_layers": cfg.num_encoder_layers,
      "intermediate_size": cfg.mlp_dim, "hidden_act": common.hf_activation(cfg.activation),
      "layer_norm_eps": cfg.layer_norm_epsilon, "max_position_embeddings": cfg.max_length,
      "type_vocab_size": cfg.num_token_types, "pad_token_id": 0,
      "position_embedding_type": "absolute",
      "hidden_dropout_prob": cfg.dropout_rate,
      "attention_probs_dropout_prob": cfg.attention_dropout_rate,
  }
  if labels:
    out["id2label"] = {str(i): label for i, label in enumerate(labels)}
    out["label2id"] = {label: i for i, label in enumerate(labels)}
  return out


def check_exportable(cfg) -> list[str]:
  """What keeps our classifier from being a BertForSequenceClassification (empty: nothing)."""
  want = {"class_vector": False, "embedding_norm": True, "attention_bias": True,
          "norm": "layernorm", "mlp_gated": False, "mlp_bias": True,
          "norm_position": "post", "positions": "learned", "pooling": "cls"}
  bad = [f"model.{k}={getattr(cfg, k)!r} (BERT: {v!r})" for k, v in want.items()
         if getattr(cfg, k) != v]
  if cfg.head_dim * cfg.num_heads != cfg.emb_dim:
    bad.append(f"model.qkv_dim={cfg.head_dim * cfg.num_heads} (BERT: emb_dim={cfg.emb_dim})")
  return bad
