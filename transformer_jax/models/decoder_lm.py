"""A decoder-only language model (GPT-style) built from the Transformer's decoder.

The same layers as the encoder-decoder's decoder, without cross-attention:
token embedding + positions (`config.positions`: sinusoidal, a learned table
"decoder/pos_embedding", or rotary inside attention), causal self-attention
and MLP blocks, and the output projection tied to the embedding
(`logits_via_embedding=True`) or its own "decoder/logits" [D, V]. Packed
batches pass segment ids and positions. Its parameters carry the same logical
names, so the config's sharding rules apply unchanged.
"""

from __future__ import annotations

import flax.linen as nn

from transformer_jax.models import layers
from transformer_jax.models.layers import Array
from transformer_jax.models.transformer import (Decoder, TransformerConfig, decoder_self_mask,
                                                default_positions, shift_right)


class DecoderLM(nn.Module):
  """Token ids -> next-token logits [B, L, V] (float32). Uses `config.num_decoder_layers`."""
  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.shared_embedding = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.dtype)
    self.decoder = Decoder(cfg, self.shared_embedding)

  def logits(self, decoder_inputs_BL: Array, positions_BL: Array | None = None,
             segment_ids_BL: Array | None = None) -> Array:
    """Logits for already-shifted inputs; in decode mode L is 1 and the KV cache is used."""
    self_mask, _ = decoder_self_mask(self.config, decoder_inputs_BL, segment_ids_BL)
    if positions_BL is None:
      positions_BL = default_positions(decoder_inputs_BL)
    return self.decoder(decoder_inputs_BL, positions_BL, None, self_mask, None)

  def __call__(self, targets_BL: Array, targets_positions_BL: Array | None = None,
               targets_segment_ids_BL: Array | None = None) -> Array:
    """Teacher forcing: position t sees targets[:t] (start token 0 first) and predicts targets[t]."""
    decoder_inputs_BL = shift_right(targets_BL, targets_segment_ids_BL)
    return self.logits(decoder_inputs_BL, targets_positions_BL, targets_segment_ids_BL)
