"""Speech to text: log-mel frames -> a strided convolutional front-end -> our encoder ->
our decoder with cross-attention (the Speech-Transformer / Whisper layout).

The encoder input is one array [B, T, F + 1]: F log-mel bins per 10 ms frame and,
last, 1 for a real frame and 0 for padding. Keeping the mask inside the features
keeps a single input array, so decoding (greedy, beam, sampling, the key/value
cache) is the translation decoder's with this module in its place. Two 1-D
convolutions of width 3 (GELU) bring the frames to the model width and subsample
time by `config.subsample` (2: strides 1 and 2, as Whisper; 4: strides 2 and 2);
sinusoidal positions follow. The decoder and its tied output projection are the
translation model's.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.models import layers
from transformer_jax.models.layers import ACT_BLD, Array, constrain
from transformer_jax.models.transformer import (Decoder, TransformerConfig, add_positions,
                                                cross_decode, default_positions, encoder_stack,
                                                shift_right)

SUBSAMPLING = {2: (1, 2), 4: (2, 2)}  # config.subsample -> the two convolutions' strides.


def conv1d(x_BTC: Array, w_KCD: Array, stride: int) -> Array:
  """A 'same'-padded 1-D convolution over time: [B, T, C] x [K, C, D] -> [B, ceil(T/s), D],
  output frame j centred on input frame j * stride; one 2-D matmul (layers.project)."""
  k = w_KCD.shape[0]
  x = jnp.pad(x_BTC, ((0, 0), (k // 2, k // 2), (0, 0)))
  t_out = -(-x_BTC.shape[1] // stride)
  windows_BTKC = jnp.stack(
      [x[:, i:i + stride * (t_out - 1) + 1:stride] for i in range(k)], axis=2)
  return layers.project(windows_BTKC, w_KCD, n_in=2)


def subsampled_valid(valid_BT: Array, subsample: int) -> Array:
  """Which encoder positions are real frames: the validity of the input frame each
  output frame is centred on."""
  for stride in SUBSAMPLING[subsample]:
    valid_BT = valid_BT[:, ::stride]
  return valid_BT


class SpeechEncoder(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, inputs_BTF: Array) -> Array:
    cfg = self.config
    valid_BT = inputs_BTF[..., -1]
    x = (inputs_BTF[..., :-1] * valid_BT[..., None]).astype(cfg.dtype)
    init = nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
    for i, stride in enumerate(SUBSAMPLING[cfg.subsample]):
      w = layers.param_with_names(self, f"conv_{i}", init, (3, x.shape[-1], cfg.emb_dim),
                                  ("conv_window", "mel" if i == 0 else "conv_in", "embed"))
      b = layers.param_with_names(self, f"conv_{i}_bias", nn.initializers.zeros,
                                  (cfg.emb_dim,), ("embed",))
      x = jax.nn.gelu(conv1d(x, w.astype(cfg.dtype), stride) + b.astype(cfg.dtype))
      valid_BT = valid_BT[:, ::stride]
    x = constrain(x, ACT_BLD)
    positions_BT = default_positions(valid_BT)
    x = add_positions(self, cfg, x, positions_BT)
    valid = valid_BT > 0
    return encoder_stack(cfg, x, layers.padding_mask(valid, valid), positions_BT)


class SpeechToText(nn.Module):
  """Features with their frame mask [B, T, F + 1] -> transcript logits [B, L, V]."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.embedding = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype)
    self.encoder = SpeechEncoder(cfg)
    self.decoder = Decoder(cfg, self.embedding)

  def encode(self, inputs_BTF: Array) -> Array:
    return self.encoder(inputs_BTF)

  def decode(self, encoded_BSD: Array, src_valid_BS: Array, decoder_inputs_BL: Array,
             targets_positions_BL: Array | None = None,
             inputs_segment_ids_BS: Array | None = None,
             targets_segment_ids_BL: Array | None = None) -> Array:
    """As EncoderDecoder.decode; `src_valid_BS` (> 0 for real frames) is `source_valid`'s."""
    return cross_decode(self.config, self.decoder, encoded_BSD, src_valid_BS > 0,
                        decoder_inputs_BL, targets_positions_BL, inputs_segment_ids_BS,
                        targets_segment_ids_BL)

  @staticmethod
  def source_valid(inputs_BTF: Array, cfg: TransformerConfig) -> Array:
    """The encoder positions that are real frames, as int32 (decode's `src_valid_BS`)."""
    return subsampled_valid(inputs_BTF[..., -1], cfg.subsample).astype(jnp.int32)

  @staticmethod
  def dummy_source(batch_size: int, length: int, cfg: TransformerConfig) -> Array:
    """Inputs of `length` encoder positions, for tracing (decoding's cache shapes)."""
    return jnp.ones((batch_size, length * cfg.subsample, cfg.num_mel_bins + 1), jnp.float32)

  def __call__(self, inputs_BTF: Array, targets_BL: Array,
               targets_positions_BL: Array | None = None,
               targets_segment_ids_BL: Array | None = None) -> Array:
    encoded_BSD = self.encode(inputs_BTF)
    decoder_inputs_BL = shift_right(targets_BL, targets_segment_ids_BL)
    return self.decode(encoded_BSD, self.source_valid(inputs_BTF, self.config),
                       decoder_inputs_BL, targets_positions_BL, None, targets_segment_ids_BL)
