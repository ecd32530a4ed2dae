"""A BERT-style encoder classifier: token ids (and token types) -> class logits.

The encoder-decoder's encoder layers over token + token type + position
embeddings, with a learned class vector prepended at position 0 (so the
tokenizer needs no CLS id). Pooling is either that class position's state
through a BERT pooler (Dense + tanh), or the mean over the real tokens; a
Dense head gives the class logits. Id 0 is padding: padded positions are
masked out of attention and pooling, so extra padding leaves the logits
unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from transformer_jax.models import layers
from transformer_jax.models.dropout import Dropout
from transformer_jax.models.layers import ACT_BC, ACT_BD, Array, constrain
from transformer_jax.models.transformer import (TransformerConfig, add_positions,
                                                default_positions, encoder_stack)


def sentence_embedding(hidden_BLD: Array, ids_BL: Array, class_vector: bool) -> Array:
  """[B, D] float32: the encoder's output averaged over each row's real tokens (ids > 0)
  and L2-normalised, as sentence-transformers pools all-MiniLM-L6-v2 (a learned class
  vector in front is not a token)."""
  if class_vector:
    hidden_BLD = hidden_BLD[:, 1:]
  w_BL = (ids_BL > 0).astype(jnp.float32)
  mean_BD = (jnp.einsum("BLD,BL->BD", hidden_BLD.astype(jnp.float32), w_BL)
             / jnp.maximum(w_BL.sum(1, keepdims=True), 1e-9))
  return mean_BD / jnp.maximum(jnp.linalg.norm(mean_BD, axis=-1, keepdims=True), 1e-12)


def check_num_classes(cfg: TransformerConfig, model: str) -> None:
  if cfg.num_classes < 1:
    raise ValueError(f"{model}: config.num_classes must be at least 1, got {cfg.num_classes}")


def prepend_class_vector(module: nn.Module, x_BLD: Array) -> Array:
  """[B, 1 + L, D]: a learned vector "cls" [D] at position 0, then x."""
  b, _, d = x_BLD.shape
  cls_D = layers.param_with_names(module, "cls", nn.initializers.normal(stddev=0.02), (d,),
                                  ("embed",))
  cls_B1D = jnp.broadcast_to(cls_D.astype(x_BLD.dtype), (b, 1, d))
  return jnp.concatenate([cls_B1D, x_BLD], axis=1)


def classification_head(cfg: TransformerConfig, pooled_BD: Array) -> Array:
  """Dropout, then Dense "head" [D, C] -> float32 logits [B, C]."""
  pooled_BD = Dropout(cfg.dropout_rate)(pooled_BD, deterministic=cfg.deterministic)
  logits_BC = layers.Dense(cfg.num_classes, ("embed", "classes"), dtype=cfg.dtype,
                           name="head")(pooled_BD)
  return constrain(logits_BC.astype(jnp.float32), ACT_BC)


class EncoderClassifier(nn.Module):
  """Token ids [B, L] (0 = padding) and token types [B, L] -> logits [B, C] (float32).

  Uses `config.num_encoder_layers`, `num_classes`, `pooling` (cls | mean),
  `num_token_types`, `positions` (a learned class vector takes position 0; a
  learned table then needs `max_length >= L + 1`), `class_vector` and
  `embedding_norm` (False / True: BERT, whose tokenizer puts [CLS] first).
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, inputs_BL: Array, token_types_BL: Array | None = None,
               return_hidden: bool = False) -> Array:
    """Logits [B, C]; with `return_hidden`, the encoder's last hidden states [B, L', D]
    instead (L' = L + 1 with a class vector), before pooling and head."""
    cfg = self.config
    embed = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype, name="token_embedding")
    x_BLD = embed(inputs_BL)
    if token_types_BL is None:
      token_types_BL = jnp.zeros_like(inputs_BL)
    types_TD = layers.param_with_names(
        self, "token_type_embedding", nn.initializers.normal(stddev=0.02),
        (cfg.num_token_types, cfg.emb_dim), ("token_types", "embed"))
    x_BLD = x_BLD + jnp.take(types_TD, token_types_BL, axis=0).astype(cfg.dtype)

    if cfg.class_vector:  # position 0 is a learned class vector; tokens follow from 1.
      x_BLD = prepend_class_vector(self, x_BLD)
      valid_BL = jnp.pad(inputs_BL > 0, ((0, 0), (1, 0)), constant_values=True)
    else:  # the tokenizer's first token (BERT's [CLS]) is the class position.
      valid_BL = inputs_BL > 0
    positions_BL = default_positions(valid_BL)
    x_BLD = add_positions(self, cfg, x_BLD, positions_BL)
    if cfg.embedding_norm:
      x_BLD = layers.norm(cfg.norm, cfg.layer_norm_epsilon, cfg.dtype, "embedding_norm")(x_BLD)
    # Padding is masked as a key only: a padded position sees the real tokens (as in
    # BERT) but nothing sees it, so padding changes neither pooling nor the logits.
    mask_B1LL = layers.padding_mask(jnp.ones_like(valid_BL), valid_BL)
    x_BLD = encoder_stack(cfg, x_BLD, mask_B1LL, positions_BL)
    if return_hidden:
      return x_BLD
    check_num_classes(cfg, "EncoderClassifier")

    if cfg.pooling == "cls":
      pooled_BD = layers.Dense(cfg.emb_dim, ("embed", "mlp"), dtype=cfg.dtype,
                               name="pooler")(x_BLD[:, 0])
      pooled_BD = jnp.tanh(pooled_BD)
    else:  # mean over the real tokens; a learned class vector is left out.
      tokens_BL = valid_BL.at[:, 0].set(False) if cfg.class_vector else valid_BL
      count_B1 = jnp.maximum(tokens_BL.sum(axis=1, keepdims=True), 1).astype(jnp.float32)
      sum_BD = jnp.einsum("BLD,BL->BD", x_BLD.astype(jnp.float32),
                          tokens_BL.astype(jnp.float32))
      pooled_BD = (sum_BD / count_B1).astype(cfg.dtype)
    return classification_head(cfg, constrain(pooled_BD, ACT_BD))

