"""The encoder-decoder Transformer of "Attention Is All You Need", in Flax Linen.

One frozen `TransformerConfig` (models/config.py; also used by the decoder-only LM,
the encoder classifier, the Vision Transformer and speech); train, eval and decode
variants are derived with `.replace(deterministic=..., decode=...)`. Token embeddings
are shared by encoder, decoder and (optionally) the output projection.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.models import attention, layers
from transformer_jax.models.config import TransformerConfig
from transformer_jax.models.dropout import Dropout
from transformer_jax.models.layers import ACT_BLD, ACT_BLV, Array, constrain

REMAT_POLICIES = {
    "full": None,  # keep only each layer's input; recompute everything inside.
    "dots": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,  # keep weight matmuls.
}


class _Residual(nn.Module):
  """x + dropout(sublayer(norm(x))) for pre-LN; norm(x + dropout(sublayer(x))) for post-LN.

  With cfg.post_norms (Gemma's), pre-LN normalises the sublayer's output too ("post_norm")
  before the residual sum."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BLD: Array, sublayer) -> Array:
    cfg = self.config
    norm = layers.norm(cfg.norm, cfg.layer_norm_epsilon, cfg.dtype, "norm")
    y_BLD = sublayer(norm(x_BLD) if cfg.norm_position == "pre" else x_BLD)
    if cfg.post_norms and cfg.norm_position == "pre":
      y_BLD = layers.norm(cfg.norm, cfg.layer_norm_epsilon, cfg.dtype, "post_norm")(y_BLD)
    y_BLD = Dropout(cfg.dropout_rate)(y_BLD, deterministic=cfg.deterministic)
    out_BLD = x_BLD + y_BLD
    return out_BLD if cfg.norm_position == "pre" else norm(out_BLD)


def _attention(cfg: TransformerConfig, name: str, decode: bool = False, rotary: bool = False,
               layer: int | None = None):
  """Attention with cfg's options; `layer` (a decoder's self-attention) takes that layer's
  sliding window and RoPE base."""
  # In decode mode every attention of the decoder lays keys and values out heads first:
  # the cross-attention's, the same at every step, are then transposed once per decode.
  base, scaling = cfg.layer_rotary(layer or 0)
  return attention.MultiHeadAttention(
      num_heads=cfg.num_heads, head_dim=cfg.head_dim,
      dropout_rate=cfg.attention_dropout_rate, dtype=cfg.dtype,
      deterministic=cfg.deterministic, decode=decode, rotary=rotary,
      rotary_base=base, rotary_scaling=scaling,
      attention=cfg.attention, use_bias=cfg.attention_bias, heads_first=cfg.decode,
      out_bias=cfg.attention_out_bias, num_kv_heads=cfg.num_kv_heads, qk_norm=cfg.qk_norm,
      norm_epsilon=cfg.layer_norm_epsilon,
      window=cfg.layer_window(layer) if layer is not None else 0,
      scale=cfg.attention_scale, name=name)


def _mlp(cfg: TransformerConfig):
  return layers.Mlp(mlp_dim=cfg.mlp_dim, dropout_rate=cfg.dropout_rate,
                    activation=cfg.activation, dtype=cfg.dtype,
                    deterministic=cfg.deterministic, gated=cfg.mlp_gated,
                    use_bias=cfg.mlp_bias, name="mlp")


class EncoderLayer(nn.Module):
  config: TransformerConfig
  index: int = 0  # the layer's place in the stack.

  @nn.compact
  def __call__(self, x_BLD: Array, mask_B1LL: Array | None,
               positions_BL: Array | None = None) -> Array:
    """Self-attention and MLP blocks; `positions_BL` are used by rotary positions only."""
    cfg = self.config
    attn = _attention(cfg, "self_attention", rotary=cfg.positions == "rotary")
    x_BLD = _Residual(cfg, name="attention_block")(
        x_BLD, lambda h: attn(h, h, mask_B1LL, positions_BL, positions_BL))
    x_BLD = _Residual(cfg, name="mlp_block")(x_BLD, _mlp(cfg))
    x_BLD = constrain(x_BLD, ACT_BLD)
    return (x_BLD, None) if cfg.scan_layers else x_BLD


class DecoderLayer(nn.Module):
  config: TransformerConfig
  index: int = 0  # the layer's place in the stack (its sliding window, RoPE base).

  @nn.compact
  def __call__(self, y_BLD: Array, encoded_BSD: Array | None, self_mask_B1LL: Array | None,
               cross_mask_B1LS: Array | None, positions_BL: Array | None = None) -> Array:
    """Self-attention, cross-attention (skipped when `encoded_BSD` is None: decoder-only), MLP.

    Rotary positions (`positions_BL`) apply to self-attention only.
    """
    cfg = self.config
    self_attn = _attention(cfg, "self_attention", decode=cfg.decode,
                           rotary=cfg.positions == "rotary", layer=self.index)
    y_BLD = _Residual(cfg, name="self_attention_block")(
        y_BLD, lambda h: self_attn(h, h, self_mask_B1LL, positions_BL, positions_BL))
    if encoded_BSD is not None:
      cross_attn = _attention(cfg, "cross_attention")
      y_BLD = _Residual(cfg, name="cross_attention_block")(
          y_BLD, lambda h: cross_attn(h, encoded_BSD, cross_mask_B1LS))
    y_BLD = _Residual(cfg, name="mlp_block")(y_BLD, _mlp(cfg))
    y_BLD = constrain(y_BLD, ACT_BLD)
    return (y_BLD, None) if cfg.scan_layers else y_BLD


def _maybe_remat(layer_class, cfg: TransformerConfig):
  """The layer class, rematerialised (jax.checkpoint) when training with cfg.remat set."""
  if cfg.remat == "none" or cfg.decode:
    return layer_class
  return nn.remat(layer_class, policy=REMAT_POLICIES[cfg.remat], prevent_cse=True)


def run_layers(layer_class, cfg: TransformerConfig, num_layers: int, x_BLD: Array,
               *args) -> Array:
  """`num_layers` layers in sequence: submodules "layer_i", or with cfg.scan_layers one
  nn.scan over a "layers" module whose parameters carry a leading "layers" axis
  (`args` are the same for every layer)."""
  layer_class = _maybe_remat(layer_class, cfg)
  if not cfg.scan_layers:
    for i in range(num_layers):
      x_BLD = layer_class(cfg, index=i, name=f"layer_{i}")(x_BLD, *args)
    return x_BLD
  if cfg.decode:
    raise ValueError("scanned layers do not decode: unstack_layers() the parameters and "
                     "decode with scan_layers=False")
  scanned = nn.scan(layer_class, variable_axes={"params": 0},
                    split_rngs={"params": True, "dropout": True},
                    in_axes=(nn.broadcast,) * len(args), length=num_layers,
                    metadata_params={nn.PARTITION_NAME: "layers"})
  x_BLD, _ = scanned(cfg, name="layers")(x_BLD, *args)
  return x_BLD


def unstack_layers(params):
  """Scanned parameters ("layers", stacked on axis 0) -> "layer_0", "layer_1", ... as an
  unscanned model names them; other parameters unchanged."""
  if not isinstance(params, dict):
    return params
  out = {}
  for key, value in params.items():
    if key == "layers" and isinstance(value, dict):
      n = jax.tree.leaves(value)[0].shape[0]
      out.update({f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], value) for i in range(n)})
    else:
      out[key] = unstack_layers(value)
  return out


def add_positions(module: nn.Module, cfg: TransformerConfig, x_BLD: Array,
                  positions_BL: Array) -> Array:
  """x plus cfg.positions' embedding; rotary adds none (attention rotates queries and keys).

  A learned table ("pos_embedding", cfg.max_length rows) is created in `module`.
  """
  if cfg.positions == "sinusoidal":
    x_BLD = x_BLD + layers.sinusoidal_positions(positions_BL, x_BLD.shape[-1]).astype(cfg.dtype)
  elif cfg.positions == "learned":
    x_BLD = x_BLD + layers.learned_positions(module, positions_BL, cfg.max_length,
                                             x_BLD.shape[-1], cfg.dtype)
  return constrain(x_BLD, ACT_BLD)


def encoder_stack(cfg: TransformerConfig, x_BLD: Array, mask_B1LL: Array | None,
                  positions_BL: Array) -> Array:
  """Dropout, cfg.num_encoder_layers EncoderLayers ("layer_i", or scanned "layers") and, for
  pre-LN, "final_norm".

  Call from a compact method: the layers become the caller's submodules.
  """
  x_BLD = Dropout(cfg.dropout_rate)(x_BLD, deterministic=cfg.deterministic)
  x_BLD = run_layers(EncoderLayer, cfg, cfg.num_encoder_layers, x_BLD, mask_B1LL, positions_BL)
  if cfg.norm_position == "pre":
    x_BLD = layers.norm(cfg.norm, cfg.layer_norm_epsilon, cfg.dtype, "final_norm")(x_BLD)
  return constrain(x_BLD, ACT_BLD)


class Encoder(nn.Module):
  config: TransformerConfig
  embed: layers.Embed

  @nn.compact
  def __call__(self, inputs_BL: Array, positions_BL: Array, mask_B1LL: Array) -> Array:
    cfg = self.config
    x_BLD = add_positions(self, cfg, self.embed(inputs_BL), positions_BL)
    return encoder_stack(cfg, x_BLD, mask_B1LL, positions_BL)


class Decoder(nn.Module):
  config: TransformerConfig
  embed: layers.Embed

  @nn.compact
  def __call__(self, decoder_inputs_BL: Array, positions_BL: Array, encoded_BSD: Array | None,
               self_mask_B1LL: Array | None, cross_mask_B1LS: Array | None) -> Array:
    cfg = self.config
    y_BLD = self.embed(decoder_inputs_BL)
    if cfg.embed_scale:  # Gemma: sqrt(D), rounded to the compute dtype as Gemma does.
      y_BLD = y_BLD * jnp.asarray(jnp.sqrt(cfg.emb_dim), cfg.dtype)
    y_BLD = add_positions(self, cfg, y_BLD, positions_BL)
    y_BLD = Dropout(cfg.dropout_rate)(y_BLD, deterministic=cfg.deterministic)
    y_BLD = run_layers(DecoderLayer, cfg, cfg.num_decoder_layers, y_BLD, encoded_BSD,
                       self_mask_B1LL, cross_mask_B1LS, positions_BL)
    if cfg.norm_position == "pre":
      y_BLD = layers.norm(cfg.norm, cfg.layer_norm_epsilon, cfg.dtype, "final_norm")(y_BLD)
    if cfg.logits_via_embedding:
      if cfg.scale_tied_logits:
        # Scaled before the projection ([B, L, D]), not after it ([B, L, V]): one
        # pass over the logits fewer each way. Exact when 1/sqrt(emb_dim) is a
        # power of two (emb_dim 64, 256, 1024, ...).
        y_BLD = y_BLD * (1.0 / jnp.sqrt(cfg.emb_dim)).astype(cfg.dtype)
      logits_BLV = self.embed.attend(y_BLD)
    else:
      w = layers.param_with_names(self, "logits", nn.initializers.xavier_uniform(),
                                  (cfg.emb_dim, cfg.vocab_size), ("embed", "vocab"))
      logits_BLV = layers.project(y_BLD, w.astype(cfg.dtype))
    return constrain(logits_BLV.astype(jnp.float32), ACT_BLV)


def shift_right(targets_BL: Array, segment_ids_BL: Array | None = None,
                start_id: int = 0) -> Array:
  """Decoder inputs: targets moved one step right, `start_id` (0: the padding id) first.

  With packing, each example's first position also gets the start token.
  """
  shifted = jnp.pad(targets_BL, ((0, 0), (1, 0)), constant_values=start_id)[:, :-1]
  if segment_ids_BL is not None:
    prev_segment = jnp.pad(segment_ids_BL, ((0, 0), (1, 0)))[:, :-1]
    shifted = jnp.where(segment_ids_BL == prev_segment, shifted, start_id)
  return shifted


def default_positions(ids_BL: Array) -> Array:
  return jnp.broadcast_to(jnp.arange(ids_BL.shape[1]), ids_BL.shape)


def decoder_self_mask(cfg: TransformerConfig, decoder_inputs_BL: Array,
                      segment_ids_BL: Array | None) -> tuple[Array | None, Array]:
  """(causal self-attention mask or None in decode mode, query validity [B, L])."""
  if cfg.decode:
    # One new position per call; the cache supplies (and masks) the past.
    return None, jnp.ones(decoder_inputs_BL.shape, bool)
  # The start token is id 0, so validity comes from the segment ids (packed
  # batches); unpacked, every position counts as valid: real queries never see
  # the trailing padding through the causal mask, and padded positions carry
  # no loss weight.
  if segment_ids_BL is not None:
    valid_BL = segment_ids_BL > 0
  else:
    valid_BL = jnp.ones(decoder_inputs_BL.shape, bool)
  mask = layers.causal_mask(decoder_inputs_BL.shape[1]) & layers.padding_mask(valid_BL, valid_BL)
  if segment_ids_BL is not None:
    mask = mask & layers.segment_mask(segment_ids_BL, segment_ids_BL)
  return mask, valid_BL


def cross_decode(cfg: TransformerConfig, decoder: Decoder, encoded_BSD: Array,
                 src_valid_BS: Array, decoder_inputs_BL: Array,
                 targets_positions_BL: Array | None = None,
                 inputs_segment_ids_BS: Array | None = None,
                 targets_segment_ids_BL: Array | None = None) -> Array:
  """`decoder`'s logits [B, L, V] over `encoded_BSD` (its valid positions
  `src_valid_BS`): causal self-attention, cross-attention to the source."""
  self_mask, tgt_valid_BL = decoder_self_mask(cfg, decoder_inputs_BL, targets_segment_ids_BL)
  cross_mask = layers.padding_mask(tgt_valid_BL, src_valid_BS)
  if targets_segment_ids_BL is not None and inputs_segment_ids_BS is not None:
    cross_mask = cross_mask & layers.segment_mask(targets_segment_ids_BL, inputs_segment_ids_BS)
  if targets_positions_BL is None:
    targets_positions_BL = default_positions(decoder_inputs_BL)
  return decoder(decoder_inputs_BL, targets_positions_BL, encoded_BSD, self_mask, cross_mask)


class EncoderDecoder(nn.Module):
  """Source ids -> target logits. Packed batches pass segment ids and positions."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.shared_embedding = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype)
    self.encoder = Encoder(cfg, self.shared_embedding)
    self.decoder = Decoder(cfg, self.shared_embedding)

  def encode(self, inputs_BS: Array, inputs_positions_BS: Array | None = None,
             inputs_segment_ids_BS: Array | None = None) -> Array:
    valid_BS = inputs_BS > 0
    mask = layers.padding_mask(valid_BS, valid_BS)
    if inputs_segment_ids_BS is not None:
      mask = mask & layers.segment_mask(inputs_segment_ids_BS, inputs_segment_ids_BS)
    if inputs_positions_BS is None:
      inputs_positions_BS = default_positions(inputs_BS)
    return self.encoder(inputs_BS, inputs_positions_BS, mask)

  def decode(self, encoded_BSD: Array, inputs_BS: Array, decoder_inputs_BL: Array,
             targets_positions_BL: Array | None = None,
             inputs_segment_ids_BS: Array | None = None,
             targets_segment_ids_BL: Array | None = None) -> Array:
    """Target logits [B, L, V] (float32). In decode mode L is 1 and the KV cache is used.
    `inputs_BS` marks the source positions that count (> 0)."""
    return cross_decode(self.config, self.decoder, encoded_BSD, inputs_BS > 0,
                        decoder_inputs_BL, targets_positions_BL, inputs_segment_ids_BS,
                        targets_segment_ids_BL)

  @staticmethod
  def source_valid(inputs_BS: Array, cfg: TransformerConfig) -> Array:
    """What `decode` takes as `inputs_BS` for these encoder inputs: the ids themselves."""
    del cfg
    return inputs_BS

  @staticmethod
  def dummy_source(batch_size: int, length: int, cfg: TransformerConfig) -> Array:
    """Encoder inputs of this shape, for tracing (decoding's cache shapes)."""
    del cfg
    return jnp.ones((batch_size, length), jnp.int32)

  def __call__(self, inputs_BS: Array, targets_BL: Array,
               inputs_positions_BS: Array | None = None,
               targets_positions_BL: Array | None = None,
               inputs_segment_ids_BS: Array | None = None,
               targets_segment_ids_BL: Array | None = None) -> Array:
    encoded_BSD = self.encode(inputs_BS, inputs_positions_BS, inputs_segment_ids_BS)
    decoder_inputs_BL = shift_right(targets_BL, targets_segment_ids_BL)
    return self.decode(encoded_BSD, inputs_BS, decoder_inputs_BL, targets_positions_BL,
                       inputs_segment_ids_BS, targets_segment_ids_BL)
