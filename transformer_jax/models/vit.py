"""A Vision Transformer (ViT): images -> class logits, from the Transformer's encoder layers.

Images [B, H, W, C] are cut into non-overlapping patch_size x patch_size
patches, flattened to [B, N, P] (P = patch_size**2 * C pixels) and projected
to the model width by "patch_embedding" [P, D]. A learned class token is
prepended (pooling "cls") or the patches are averaged (pooling "mean"); a
learned position table "pos_embedding" sized from the input (N or N + 1 rows)
is added, whatever `config.positions` says. Encoder layers without a mask,
a final LayerNorm for pre-LN, and a Dense head give the logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from transformer_jax.models import layers
from transformer_jax.models.classifier import (check_num_classes, classification_head,
                                               prepend_class_vector)
from transformer_jax.models.layers import ACT_BD, ACT_BLD, Array, constrain
from transformer_jax.models.transformer import (TransformerConfig, default_positions,
                                                encoder_stack)


def patchify(images_BHWC: Array, patch_size: int) -> Array:
  """[B, N, P]: the patches in row-major order, each flattened as (row, column, channel)."""
  b, h, w, c = images_BHWC.shape
  p = patch_size
  if h % p or w % p:
    raise ValueError(f"image size {h}x{w} is not divisible by patch_size={p}")
  x = images_BHWC.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


class VisionTransformer(nn.Module):
  """Images [B, H, W, C] (float) -> logits [B, C] (float32).

  Uses `config.patch_size`, `num_encoder_layers`, `pooling` (cls | mean) and
  `num_classes`; `vocab_size` is unused.
  """
  config: TransformerConfig

  @nn.compact
  def __call__(self, images_BHWC: Array) -> Array:
    # The position table is learned and sized here; no rotary in the layers.
    cfg = self.config.replace(positions="learned")
    check_num_classes(cfg, "VisionTransformer")
    patches_BNP = patchify(images_BHWC, cfg.patch_size).astype(cfg.dtype)
    p = patches_BNP.shape[-1]
    w_PD = layers.param_with_names(self, "patch_embedding", nn.initializers.lecun_normal(),
                                   (p, cfg.emb_dim), ("patch", "embed"))
    b_D = layers.param_with_names(self, "patch_bias", nn.initializers.zeros, (cfg.emb_dim,),
                                  ("embed",))
    x_BLD = jnp.einsum("BNP,PD->BND", patches_BNP, w_PD.astype(cfg.dtype)) + b_D.astype(cfg.dtype)
    if cfg.pooling == "cls":
      x_BLD = prepend_class_vector(self, x_BLD)
    x_BLD = constrain(x_BLD, ACT_BLD)

    positions_BL = default_positions(x_BLD[..., 0])
    x_BLD = x_BLD + layers.learned_positions(self, positions_BL, x_BLD.shape[1], cfg.emb_dim,
                                             cfg.dtype)
    x_BLD = encoder_stack(cfg, x_BLD, None, positions_BL)

    pooled_BD = x_BLD[:, 0] if cfg.pooling == "cls" else x_BLD.mean(axis=1)
    return classification_head(cfg, constrain(pooled_BD, ACT_BD))
