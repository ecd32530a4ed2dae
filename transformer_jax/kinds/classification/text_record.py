"""encoder_classifier: a BERT-style text classifier.

One text per row, cut to max_target_length tokens; a class vector or mean
pooling and a linear head; accuracy, precision, recall and macro F1 next to
always guessing the most frequent training label.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from transformer_jax.kinds.base import ModelKind, lazy_task, register
from transformer_jax.metrics import objectives
from transformer_jax.models.classifier import EncoderClassifier
from transformer_jax.observe import flops

CLASSIFIER_METRICS = ("loss", "accuracy", "f1", "precision", "recall")
# What every classifier kind's record shares: one label per row (-1 on padding rows),
# cross-entropy on the label, accuracy / precision / recall / F1, examples per second.
CLASSIFIER_FIELDS = dict(
    objective=objectives.classification_objective,
    eval_sums=objectives.classification_eval,
    eval_metrics=lambda config: CLASSIFIER_METRICS,
    unit="examples",
    count_units=objectives.count_rows,
    uses_classes=True,
    padding={"label": -1},
)


def _batch_shapes(config, global_batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  return {"inputs": jax.ShapeDtypeStruct((global_batch_size, config.max_target_length),
                                         jnp.int32),
          "label": jax.ShapeDtypeStruct((global_batch_size,), jnp.int32)}


def _model_inputs(batch) -> dict[str, jax.Array]:
  out = {"inputs_BL": batch["inputs"]}
  if "token_types" in batch:
    out["token_types_BL"] = batch["token_types"]
  return out


KIND = register(ModelKind(
    name="encoder_classifier",
    description="text classifier: BERT-style encoder, accuracy and macro F1",
    model=EncoderClassifier,
    batch_shapes=_batch_shapes,
    model_inputs=_model_inputs,
    task=lazy_task("transformer_jax.kinds.classification.task", "TextClassificationTask"),
    data_sources=("debian", "files"),
    file_format='TSV text<TAB>label or JSONL {"text": ..., "label": ...}',
    forward_flops=flops.encoder_classifier_forward,
    hf_architectures=("bert",),
    embeds=True,
    **CLASSIFIER_FIELDS,
))
