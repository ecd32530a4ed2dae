"""The frozen model config, and its derivation from a run's config (vocabulary padding,
dtype, lengths)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections

from transformer_jax.config.checks import DTYPES
from transformer_jax.models import layers

POSITIONS = ("sinusoidal", "learned", "rotary")
ATTENTIONS = ("xla", "dot_product")
POOLINGS = ("cls", "mean")
REMATS = ("none", "full", "dots")  # models/transformer.py REMAT_POLICIES, and none.


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab_size: int
  emb_dim: int = 256
  num_heads: int = 4
  head_dim: int = 64
  mlp_dim: int = 1024
  num_encoder_layers: int = 3
  num_decoder_layers: int = 3
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  norm_position: str = "pre"  # "pre" (pre-LN, default) or "post" (the paper's).
  activation: str = "relu"  # a key of layers.ACTIVATIONS.
  layer_norm_epsilon: float = 1e-6
  norm: str = "layernorm"  # layernorm | rmsnorm (Llama's: no mean, no bias).
  mlp_gated: bool = False  # activation(x wi_0) * (x wi_1): SwiGLU with silu (Llama), GeGLU.
  mlp_bias: bool = True  # biases in the MLP (Llama: none).
  rotary_base: float = 1e4  # positions="rotary": RoPE's base.
  # RoPE's stretch (layers.rotary_frequencies): () or ("linear", f) or ("llama3", ...).
  rotary_scaling: tuple = ()
  attention_bias: bool = False  # biases on the attention projections (BERT, GPT-2).
  attention_out_bias: bool = True  # with attention_bias, on the output projection too.
  num_kv_heads: int = 0  # key/value heads (grouped-query attention); 0: num_heads.
  qk_norm: bool = False
  sliding_window: int = 0  # 0: every layer attends to all earlier positions.
  global_every: int = 0  # with a window: every Nth layer attends to all.
  rotary_base_local: float = 0.0  # the sliding layers' RoPE base; 0: rotary_base.
  post_norms: bool = False  # a norm on each block's output before the residual (Gemma).
  embed_scale: bool = False  # embeddings times sqrt(emb_dim) (Gemma).
  attention_scale: float = 0.0  # 0: 1 / sqrt(head_dim).
  logits_via_embedding: bool = True
  # Tied output projection divided by sqrt(emb_dim) (the Flax WMT example's); GPT-2: off.
  scale_tied_logits: bool = True
  dtype: Any = jnp.float32
  remat: str = "none"  # recompute layer activations in the backward pass: none | full | dots.
  # One layer traced and compiled once, run num_layers times by nn.scan: its parameters
  # are stacked under "layers" with a leading "layers" axis (decoding unstacks them).
  scan_layers: bool = False
  deterministic: bool = False
  decode: bool = False
  positions: str = "sinusoidal"  # sinusoidal | learned | rotary.
  # speech: the encoder's positions where they differ from the decoder's ("": positions);
  # Whisper: fixed sinusoids in the encoder, a learned table in the decoder.
  encoder_positions: str = ""
  max_length: int = 512  # rows of a learned position table (incl. any class token).
  attention: str = "xla"  # xla (einsums) | dot_product (jax.nn.dot_product_attention).
  num_classes: int = 0  # classifier and ViT heads.
  pooling: str = "cls"  # classifier and ViT: cls | mean.
  num_token_types: int = 2  # classifier: rows of the token type table.
  # Classifier: a learned class vector prepended at position 0 (True), or the
  # tokenizer's own first token ([CLS]) in its place (False: BERT).
  class_vector: bool = True
  embedding_norm: bool = False  # classifier: LayerNorm over the summed embeddings (BERT).
  patch_size: int = 4  # ViT: square patches of patch_size x patch_size pixels.
  num_mel_bins: int = 80  # speech: log-mel features per frame.
  subsample: int = 2  # speech: the front-end's time reduction (2 or 4).
  # speech: 0: two 1-D convolutions over time; C > 0: two 2-D ones over time and
  # frequency with C channels.
  frontend_channels: int = 0
  frontend_activation: str = "gelu"  # speech: after each convolution (Whisper: gelu_exact).
  # speech: weight of the CTC loss of a linear head on the encoder (hybrid CTC/attention
  # training); 0: no head.
  ctc_weight: float = 0.0
  decoder_start_id: int = 0  # fed first to the decoder (Whisper: <|startoftranscript|>).

  def __post_init__(self):
    for field, allowed in (("positions", POSITIONS), ("attention", ATTENTIONS),
                           ("pooling", POOLINGS), ("norm_position", ("pre", "post")),
                           ("norm", tuple(layers.NORMS)),
                           ("remat", REMATS),
                           ("activation", tuple(layers.ACTIVATIONS)),
                           ("frontend_activation", tuple(layers.ACTIVATIONS)),
                           ("encoder_positions", ("",) + POSITIONS),
                           ("subsample", (2, 4))):
      if getattr(self, field) not in allowed:
        raise ValueError(f"TransformerConfig.{field} must be one of {allowed}, "
                         f"got {getattr(self, field)!r}")

  def layer_window(self, i: int) -> int:
    """Layer i's sliding window (0: it attends to every earlier position)."""
    if self.global_every and (i + 1) % self.global_every == 0:
      return 0
    return self.sliding_window

  def layer_rotary(self, i: int) -> tuple[float, tuple]:
    """(RoPE base, scaling) of layer i: a sliding layer's own base and no scaling."""
    if self.layer_window(i) and self.rotary_base_local:
      return self.rotary_base_local, ()
    return self.rotary_base, self.rotary_scaling

  def replace(self, **kw) -> "TransformerConfig":
    return dataclasses.replace(self, **kw)


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
      vocab_size=padded_vocab_size(max(vocab_size, m.min_vocab_size, 1)),
      num_classes=m.num_classes or num_classes,
      positions=m.positions,
      encoder_positions=m.encoder_positions,
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
      norm=m.norm,
      mlp_gated=m.mlp_gated,
      mlp_bias=m.mlp_bias,
      rotary_base=float(m.rotary_base),
      rotary_scaling=rotary_scaling(m),
      attention_bias=m.attention_bias,
      attention_out_bias=m.attention_out_bias,
      num_kv_heads=m.num_kv_heads,
      qk_norm=m.qk_norm,
      sliding_window=m.sliding_window,
      global_every=m.global_every,
      rotary_base_local=float(m.rotary_base_local),
      post_norms=m.post_norms,
      embed_scale=m.embed_scale,
      attention_scale=float(m.attention_scale),
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
      frontend_activation=m.frontend_activation,
      ctc_weight=m.ctc_weight,
      decoder_start_id=m.decoder_start_id,
  )



def rotary_scaling(m) -> tuple:
  """config.model's RoPE scaling fields as layers.rotary_frequencies takes them."""
  if m.rotary_scaling == "none":
    return ()
  if m.rotary_scaling == "linear":
    return ("linear", float(m.rotary_scaling_factor))
  return ("llama3", float(m.rotary_scaling_factor), float(m.rotary_low_freq_factor),
          float(m.rotary_high_freq_factor), float(m.rotary_original_length))
