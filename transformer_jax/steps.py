"""Losses and the pure train/eval steps.

Steps return metric *sums* plus a token count; the loop divides at log time,
so metrics stay exact across devices and steps (keys ending in `_sum`). The
loss is computed in float32 whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer_jax import evaluation

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw key data (uint32) of the dropout key: checkpointed with the rest.


TOKEN_KINDS = ("encoder_decoder", "decoder_lm")  # per-token targets
CLASSIFIER_KINDS = ("encoder_classifier", "vit")  # one label per row ("label", -1: padding)


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       batch_shapes: dict[str, jax.ShapeDtypeStruct], kind: str) -> TrainState:
  """Fresh parameters (boxed with logical names) and optimizer state.

  `batch_shapes` maps batch keys ("inputs", "targets", "image", ...) to shapes.
  """
  params_rng, dropout_rng = jax.random.split(rng)
  dummy = {k: jnp.ones(s.shape, s.dtype) for k, s in batch_shapes.items()}
  params = model.init(params_rng, **model_inputs(dummy, kind))["params"]
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(dropout_rng))


def cross_entropy(logits_BLV: jax.Array, targets_BL: jax.Array, label_smoothing: float = 0.0):
  """Per-token label-smoothed cross-entropy and plain NLL, in float32.

  The smoothed loss has its minimum (the entropy of the smoothed target)
  subtracted, as in the Flax WMT example, so a perfect model scores 0.
  """
  logits_BLV = logits_BLV.astype(jnp.float32)
  vocab = logits_BLV.shape[-1]
  log_probs_BLV = jax.nn.log_softmax(logits_BLV, axis=-1)
  nll_BL = -jnp.take_along_axis(log_probs_BLV, targets_BL[..., None], axis=-1)[..., 0]
  if label_smoothing == 0.0:
    return nll_BL, nll_BL
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  min_entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  # Soft targets: `confidence` on the true token, `low` on each of the others:
  #   -sum_v q_v log p_v = -(confidence - low) log p_t - low * sum_v log p_v.
  loss_BL = (confidence - low) * nll_BL - low * log_probs_BLV.sum(-1)
  return loss_BL - min_entropy, nll_BL


_SEQUENCE_KEYS = {"inputs": "inputs_BS", "targets": "targets_BL",
                  "inputs_positions": "inputs_positions_BS",
                  "targets_positions": "targets_positions_BL",
                  "inputs_segment_ids": "inputs_segment_ids_BS",
                  "targets_segment_ids": "targets_segment_ids_BL"}


def model_inputs(batch: Batch, kind: str) -> dict[str, jax.Array]:
  """The model's keyword arguments from a batch of the given model kind."""
  if kind == "vit":
    return {"images_BHWC": batch["image"]}
  if kind == "encoder_classifier":
    out = {"inputs_BL": batch["inputs"]}
    if "token_types" in batch:
      out["token_types_BL"] = batch["token_types"]
    return out
  return {name: batch[k] for k, name in _SEQUENCE_KEYS.items() if k in batch}


def compute_metrics(logits_BLV, targets_BL, weights_BL, label_smoothing):
  loss_BL, nll_BL = cross_entropy(logits_BLV, targets_BL, label_smoothing)
  correct_BL = (jnp.argmax(logits_BLV, axis=-1) == targets_BL)
  return {
      "loss_sum": (loss_BL * weights_BL).sum(),
      "nll_sum": (nll_BL * weights_BL).sum(),
      "correct_sum": (correct_BL * weights_BL).sum(),
      "weight_sum": weights_BL.sum(),
  }


def classification_metrics(logits_BC, labels_B, label_smoothing: float = 0.0,
                           with_confusion: bool = False):
  """Sums over the real rows (label >= 0); the confusion matrix is [true, predicted]."""
  weights_B = (labels_B >= 0).astype(jnp.float32)
  safe_B = jnp.maximum(labels_B, 0)
  loss_B1, nll_B1 = cross_entropy(logits_BC[:, None], safe_B[:, None], label_smoothing)
  pred_B = jnp.argmax(logits_BC, axis=-1)
  out = {"loss_sum": (loss_B1[:, 0] * weights_B).sum(),
         "nll_sum": (nll_B1[:, 0] * weights_B).sum(),
         "correct_sum": ((pred_B == labels_B) * weights_B).sum(),
         "weight_sum": weights_B.sum()}
  if with_confusion:
    num_classes = logits_BC.shape[-1]
    true_BC = jax.nn.one_hot(safe_B, num_classes) * weights_B[:, None]
    out["confusion_sum"] = true_BC.T @ jax.nn.one_hot(pred_B, num_classes)
  return out


def _objective(logits, batch: Batch, kind: str, label_smoothing: float):
  """(mean loss over real tokens / rows, metric sums)."""
  if kind in CLASSIFIER_KINDS:
    metrics = classification_metrics(logits, batch["label"], label_smoothing)
  else:
    targets_BL = batch["targets"]
    metrics = compute_metrics(logits, targets_BL, (targets_BL > 0).astype(jnp.float32),
                              label_smoothing)
  return metrics["loss_sum"] / jnp.maximum(metrics["weight_sum"], 1.0), metrics


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               tx: optax.GradientTransformation, label_smoothing: float,
               kind: str = "encoder_decoder"):
  """One optimizer step; dropout randomness comes from fold_in(state.rng, step)."""
  dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    logits = model.apply({"params": params}, **model_inputs(batch, kind),
                         rngs={"dropout": dropout_rng})
    # Normalised by the number of real target tokens (or rows) in the global batch.
    return _objective(logits, batch, kind, label_smoothing)

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = optax.tree.norm(grads)
  if "inputs" in batch and kind == "encoder_decoder":  # source tokens count towards throughput.
    metrics["source_tokens_sum"] = (batch["inputs"] > 0).sum().astype(jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module, kind: str = "encoder_decoder"):
  """Sums of plain NLL, correct predictions and weights over a batch (no dropout);
  classifiers add the confusion matrix."""
  logits = model.apply({"params": params}, **model_inputs(batch, kind))
  if kind in CLASSIFIER_KINDS:
    return classification_metrics(logits, batch["label"], with_confusion=True)
  targets_BL = batch["targets"]
  return compute_metrics(logits, targets_BL, (targets_BL > 0).astype(jnp.float32), 0.0)


def summarize(metric_sums: dict[str, float], num_steps: int = 1) -> dict[str, float]:
  """Turns summed metrics into per-token means; other keys are averaged over steps."""
  w = max(float(metric_sums.get("weight_sum", 0.0)), 1.0)
  out = {}
  if "loss_sum" in metric_sums:
    out["loss"] = float(metric_sums["loss_sum"]) / w
  if "nll_sum" in metric_sums:
    out["nll"] = float(metric_sums["nll_sum"]) / w
    out["perplexity"] = float(jnp.exp(jnp.minimum(out["nll"], 50.0)))
  if "correct_sum" in metric_sums:
    out["accuracy"] = float(metric_sums["correct_sum"]) / w
  if "confusion_sum" in metric_sums:
    scores = evaluation.classification_scores(np.asarray(metric_sums["confusion_sum"]))
    out.update({k: scores[k] for k in ("precision", "recall", "f1")})
  for k, v in metric_sums.items():
    if not k.endswith("_sum"):
      out[k] = float(v) / num_steps
  return out
