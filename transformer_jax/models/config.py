"""The model config derived from a run's config: vocabulary padding, dtype, lengths."""

from __future__ import annotations

import ml_collections

from transformer_jax.config.checks import DTYPES
from transformer_jax.models.transformer import TransformerConfig

VOCAB_MULTIPLE = 128  # the model's vocabulary is padded up to a multiple of this.


def padded_vocab_size(vocab_size: int) -> int:
  """The model's vocabulary: the tokenizer's, rounded up so that it shards evenly."""
  return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def model_config(config: ml_collections.ConfigDict, vocab_size: int,
                 num_classes: int = 0) -> TransformerConfig:
  """The frozen training-mode model config; derive eval/decode with .replace().

  `vocab_size` is the tokenizer's (0 for images); the model pads it to a
  multiple of VOCAB_MULTIPLE (the extra ids are never targets, and decoding
  drops them). `num_classes` (classifiers) is the data's, unless
  config.model.num_classes sets it.
  """
  m = config.model
  return TransformerConfig(
      vocab_size=padded_vocab_size(max(vocab_size, 1)),
      num_classes=m.num_classes or num_classes,
      positions=m.positions,
      max_length=m.max_length or max(config.max_target_length, config.max_predict_length) + 1,
      attention=m.attention,
      pooling=m.pooling,
      patch_size=m.patch_size,
      emb_dim=m.emb_dim,
      num_heads=m.num_heads,
      head_dim=m.qkv_dim // m.num_heads,
      mlp_dim=m.mlp_dim,
      num_encoder_layers=m.num_encoder_layers,
      num_decoder_layers=m.num_decoder_layers,
      dropout_rate=m.dropout_rate,
      attention_dropout_rate=m.attention_dropout_rate,
      norm_position=m.norm_position,
      activation=m.activation,
      layer_norm_epsilon=m.layer_norm_epsilon,
      attention_bias=m.attention_bias,
      logits_via_embedding=m.logits_via_embedding,
      scale_tied_logits=m.scale_tied_logits,
      num_token_types=m.num_token_types,
      class_vector=m.class_vector,
      embedding_norm=m.embedding_norm,
      dtype=DTYPES[m.dtype],
      remat=m.remat,
      scan_layers=m.scan_layers,
      subsample=m.subsample,
      frontend_channels=m.frontend_channels,
      ctc_weight=m.ctc_weight,
  )
