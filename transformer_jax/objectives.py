"""Losses and metric sums that the model kinds' records are built from.

Each returns *sums* plus a weight (tokens or rows), divided at log time, so
metrics stay exact across devices and steps (keys ending in `_sum`). Losses
are computed in float32 whatever the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]


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


def token_metrics(logits_BLV, targets_BL, weights_BL, label_smoothing: float = 0.0):
  """Sums of loss, NLL and correct predictions over the weighted tokens."""
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


# ----------------------------------------------------------------- the kinds' objectives
# (logits, batch, label_smoothing) -> sums for training; (logits, batch) -> sums for eval.


def next_token_objective(logits_BLV, batch: Batch, label_smoothing: float):
  """Every real target token (id > 0) scored."""
  targets_BL = batch["targets"]
  return token_metrics(logits_BLV, targets_BL, (targets_BL > 0).astype(jnp.float32),
                       label_smoothing)


def next_token_eval(logits_BLV, batch: Batch):
  return next_token_objective(logits_BLV, batch, 0.0)


def classification_objective(logits_BC, batch: Batch, label_smoothing: float):
  return classification_metrics(logits_BC, batch["label"], label_smoothing)


def classification_eval(logits_BC, batch: Batch):
  return classification_metrics(logits_BC, batch["label"], with_confusion=True)


# ----------------------------------------------------------------- throughput units


def count_tokens(*keys: str):
  """A counter of the real (id > 0) tokens under `keys`, for train/tokens_per_sec."""
  def count(batch: Batch) -> jax.Array:
    return sum((batch[k] > 0).sum() for k in keys).astype(jnp.float32)
  return count


def count_rows(batch: Batch) -> jax.Array:
  """Real rows (label >= 0), for train/examples_per_sec."""
  return (batch["label"] >= 0).sum().astype(jnp.float32)
