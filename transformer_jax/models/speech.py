"""Speech to text: log-mel frames -> a strided convolutional front-end -> our encoder ->
our decoder with cross-attention (the Speech-Transformer / Whisper layout).

The encoder input is one array [B, T, F + 1]: F log-mel bins per 10 ms frame and,
last, the frame's segment: 0 for padding, 1 for the (only) utterance of a row, or
1, 2, ... for the utterances packed into one training row. Keeping the mask inside
the features keeps a single input array, so decoding (greedy, beam, sampling, the
key/value cache) is the translation decoder's with this module in its place. Two
1-D convolutions of width 3 (GELU) bring the frames to the model width and
subsample time by `config.subsample` (2: strides 1 and 2, as Whisper; 4: strides 2
and 2); with `config.frontend_channels` C > 0, two 3x3 convolutions over time and
frequency with C channels stride both instead, and a linear map takes each frame's
C x bins to the model width (ESPnet's Conv2dSubsampling). A window never reaches
into another utterance, so a packed utterance is encoded exactly as it would be alone.
Sinusoidal positions (restarting at each utterance) follow. The decoder and its tied
output projection are the translation model's; packed transcripts attend only to their
own utterance.

With `config.ctc_weight` > 0 a linear head on the encoder is trained with CTC
(blank: id 0, the padding id, never a target) next to the decoder's loss (hybrid
CTC/attention training, Watanabe et al. 2017): the monotonic alignment it forces
on the encoder is what the cross-attention then learns quickly. Training then
returns {"logits", "aux_loss_sum" (ctc_weight x the summed CTC loss), "ctc_sum"};
decoding uses the decoder only.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from transformer_jax.models import layers
from transformer_jax.models.layers import ACT_BLD, Array, constrain
from transformer_jax.models.transformer import (Decoder, TransformerConfig, add_positions,
                                                cross_decode, encoder_stack, shift_right)

SUBSAMPLING = {2: (1, 2), 4: (2, 2)}  # config.subsample -> the two convolutions' strides.


def _windows(x_BT_, k: int, stride: int) -> Array:
  """[B, ceil(T/s), k, ...]: the k frames around every stride-th frame (zeros outside)."""
  pad = [(0, 0), (k // 2, k // 2)] + [(0, 0)] * (x_BT_.ndim - 2)
  x = jnp.pad(x_BT_, pad)
  t_out = -(-x_BT_.shape[1] // stride)
  return jnp.stack([x[:, i:i + stride * (t_out - 1) + 1:stride] for i in range(k)], axis=2)


def _time_windows(x_BT_, k: int, stride: int, segments_BT: Array | None) -> Array:
  """_windows over time; with `segments_BT`, each window's frames of another segment than
  its centre frame's are zeroed (a window never reaches into another utterance)."""
  windows = _windows(x_BT_, k, stride)
  if segments_BT is None:
    return windows
  same_BTK = _windows(segments_BT, k, stride) == segments_BT[:, ::stride, None]
  return windows * same_BTK.reshape(same_BTK.shape + (1,) * (x_BT_.ndim - 2)).astype(
      windows.dtype)


def conv1d(x_BTC: Array, w_KCD: Array, stride: int, segments_BT: Array | None = None) -> Array:
  """A 'same'-padded 1-D convolution over time: [B, T, C] x [K, C, D] -> [B, ceil(T/s), D],
  output frame j centred on input frame j * stride; one 2-D matmul (layers.project).
  With `segments_BT`, a window sees only frames of its centre frame's segment."""
  return layers.project(_time_windows(x_BTC, w_KCD.shape[0], stride, segments_BT), w_KCD,
                        n_in=2)


def segment_positions(segments_BT: Array) -> Array:
  """Each frame's index within its segment (0 at every segment's first frame)."""
  t = jnp.arange(segments_BT.shape[1])
  starts = jnp.concatenate([jnp.ones_like(segments_BT[:, :1], bool),
                            segments_BT[:, 1:] != segments_BT[:, :-1]], axis=1)
  return t - jax.lax.cummax(jnp.where(starts, t, 0), axis=1)


def subsampled_segments(segments_BT: Array, subsample: int) -> Array:
  """The segment of each encoder position: that of the input frame it is centred on."""
  for stride in SUBSAMPLING[subsample]:
    segments_BT = segments_BT[:, ::stride]
  return segments_BT


def ctc_fits(segments_BS: Array, targets_BL: Array) -> Array:
  """[B] bool: the row has labels and a CTC alignment of them fits its encoder positions
  (each label one position, each repeat of a label one blank more)."""
  labels = (targets_BL > 0).sum(axis=1)
  repeats = ((targets_BL[:, 1:] == targets_BL[:, :-1]) & (targets_BL[:, 1:] > 0)).sum(axis=1)
  return (labels > 0) & (labels + repeats <= (segments_BS > 0).sum(axis=1))


def conv2d(x_BTFC: Array, w_KKCD: Array, stride: int, segments_BT: Array) -> Array:
  """A 'same'-padded 3x3-style 2-D convolution over time and frequency, stride `stride`
  on both: [B, T, F, C] x [Kt, Kf, C, D] -> [B, ceil(T/s), ceil(F/s), D]; a window sees
  only frames of its centre frame's segment (as conv1d). One 2-D matmul (im2col)."""
  kt, kf = w_KKCD.shape[:2]
  windows = _time_windows(x_BTFC, kt, stride, segments_BT)  # [B, T', Kt, F, C]
  freq = _windows(jnp.moveaxis(windows, 3, 1), kf, stride)  # [B, F', Kf, T', Kt, C]
  return layers.project(jnp.transpose(freq, (0, 3, 1, 4, 2, 5)), w_KKCD, n_in=3)


class SpeechEncoder(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, inputs_BTF: Array) -> Array:
    cfg = self.config
    segments_BT = jnp.round(inputs_BTF[..., -1]).astype(jnp.int32)
    x = (inputs_BTF[..., :-1] * (segments_BT > 0)[..., None]).astype(cfg.dtype)
    if cfg.frontend_channels > 0:
      x, segments_BT = self._frontend_2d(x, segments_BT)
    else:
      x, segments_BT = self._frontend_1d(x, segments_BT)
    x = constrain(x, ACT_BLD)
    positions_BT = segment_positions(segments_BT)
    x = add_positions(self, cfg.replace(positions=cfg.encoder_positions or cfg.positions), x,
                      positions_BT)
    valid = segments_BT > 0
    mask = layers.padding_mask(valid, valid) & layers.segment_mask(segments_BT, segments_BT)
    return encoder_stack(cfg, x, mask, positions_BT)

  def _frontend_2d(self, x_BTF: Array, segments_BT: Array):
    """Two 3x3 convolutions over (time, frequency) with frontend_channels channels, each
    striding both (ESPnet's Conv2dSubsampling), then a linear map of each frame's
    channels x bins to the model width."""
    cfg = self.config
    c = cfg.frontend_channels
    x = x_BTF[..., None]
    for i, stride in enumerate(SUBSAMPLING[cfg.subsample]):
      w = layers.param_with_names(
          self, f"conv2d_{i}", nn.initializers.variance_scaling(1.0, "fan_in", "normal",
                                                                in_axis=(0, 1, 2), out_axis=3),
          (3, 3, x.shape[-1], c), ("conv_window", "conv_freq_window", "conv_in", "conv_out"))
      b = layers.param_with_names(self, f"conv2d_{i}_bias", nn.initializers.zeros, (c,),
                                  ("conv_out",))
      x = layers.ACTIVATIONS[cfg.frontend_activation](
          conv2d(x, w.astype(cfg.dtype), stride, segments_BT) + b.astype(cfg.dtype))
      segments_BT = segments_BT[:, ::stride]
    b_, t, f, _ = x.shape
    x = x.reshape(b_, t, f * c)
    w = layers.param_with_names(self, "frontend_out", nn.initializers.lecun_normal(),
                                (f * c, cfg.emb_dim), ("conv_in", "embed"))
    b = layers.param_with_names(self, "frontend_out_bias", nn.initializers.zeros,
                                (cfg.emb_dim,), ("embed",))
    return layers.add_bias(layers.project(x, w.astype(cfg.dtype)), b.astype(cfg.dtype)), segments_BT

  def _frontend_1d(self, x: Array, segments_BT: Array):
    cfg = self.config
    init = nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
    for i, stride in enumerate(SUBSAMPLING[cfg.subsample]):
      w = layers.param_with_names(self, f"conv_{i}", init, (3, x.shape[-1], cfg.emb_dim),
                                  ("conv_window", "mel" if i == 0 else "conv_in", "embed"))
      b = layers.param_with_names(self, f"conv_{i}_bias", nn.initializers.zeros,
                                  (cfg.emb_dim,), ("embed",))
      x = layers.ACTIVATIONS[cfg.frontend_activation](
          conv1d(x, w.astype(cfg.dtype), stride, segments_BT) + b.astype(cfg.dtype))
      segments_BT = segments_BT[:, ::stride]
    return x, segments_BT


class SpeechToText(nn.Module):
  """Features with their frame segments [B, T, F + 1] -> transcript logits [B, L, V];
  packed rows pass the transcripts' segment ids and positions."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.embedding = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype)
    self.encoder = SpeechEncoder(cfg)
    self.decoder = Decoder(cfg, self.embedding)
    if cfg.ctc_weight > 0:
      self.ctc_head = layers.param_with_names(
          self, "ctc_head", nn.initializers.lecun_normal(), (cfg.emb_dim, cfg.vocab_size),
          ("embed", "vocab"))

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
    """The segment of every encoder position, int32 (decode's `src_valid_BS`: > 0 where
    it is a real frame)."""
    return subsampled_segments(jnp.round(inputs_BTF[..., -1]).astype(jnp.int32), cfg.subsample)

  @staticmethod
  def dummy_source(batch_size: int, length: int, cfg: TransformerConfig) -> Array:
    """Inputs of `length` encoder positions, for tracing (decoding's cache shapes)."""
    return jnp.ones((batch_size, length * cfg.subsample, cfg.num_mel_bins + 1), jnp.float32)

  def ctc_logits(self, encoded_BSD: Array) -> Array:
    """The CTC head's logits [B, S, V] at every encoder position (id 0: blank)."""
    return layers.project(encoded_BSD, self.ctc_head.astype(encoded_BSD.dtype))

  def ctc_loss(self, encoded_BSD: Array, segments_BS: Array, targets_BL: Array) -> Array:
    """[B] CTC loss of each row's transcripts (all of a packed row's, in order) against the
    encoder head's frame-wise logits; 0 for rows without one, and for rows that no
    alignment fits (more labels, plus a blank between repeats, than encoder positions)."""
    logits_BSV = self.ctc_logits(encoded_BSD)
    loss_B = optax.ctc_loss(logits_BSV.astype(jnp.float32),
                            (segments_BS == 0).astype(jnp.float32), targets_BL,
                            (targets_BL == 0).astype(jnp.float32))
    return jnp.where(ctc_fits(segments_BS, targets_BL), loss_B, 0.0)

  def __call__(self, inputs_BTF: Array, targets_BL: Array,
               targets_positions_BL: Array | None = None,
               targets_segment_ids_BL: Array | None = None):
    encoded_BSD = self.encode(inputs_BTF)
    decoder_inputs_BL = shift_right(targets_BL, targets_segment_ids_BL,
                                    self.config.decoder_start_id)
    segments_BS = self.source_valid(inputs_BTF, self.config)
    logits = self.decode(encoded_BSD, segments_BS, decoder_inputs_BL, targets_positions_BL,
                         segments_BS if targets_segment_ids_BL is not None else None,
                         targets_segment_ids_BL)
    if self.config.ctc_weight <= 0:
      return logits
    ctc_sum = self.ctc_loss(encoded_BSD, segments_BS, targets_BL).sum()
    return {"logits": logits, "aux_loss_sum": self.config.ctc_weight * ctc_sum,
            "ctc_sum": ctc_sum}
