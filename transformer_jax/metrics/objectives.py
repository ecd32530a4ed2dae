"""Losses and metric sums that the model kinds' records are built from.

Each returns *sums* plus a weight (tokens or rows), divided at log time, so
metrics stay exact across devices and steps (keys ending in `_sum`). Losses
are computed in float32 whatever the compute dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict[str, jax.Array]

# A batch's optional per-token loss weights [B, L] beside "targets" (a language model's
# prompted pairs: 0 on the prompt); without them every real target token (id > 0) counts.
TARGET_WEIGHTS = "targets_weights"


def cross_entropy(logits_BLV: jax.Array, targets_BL: jax.Array, label_smoothing: float = 0.0):
  """Per-token label-smoothed cross-entropy and plain NLL, in float32.

  The smoothed loss has its minimum (the entropy of the smoothed target)
  subtracted, as in the Flax WMT example, so a perfect model scores 0. Its
  gradient is written out (`_xent`'s custom VJP): softmax minus the soft target in
  one pass over the [B, L, V] logits, where autodiff of log_softmax makes several.
  """
  return _xent(logits_BLV.astype(jnp.float32), targets_BL, float(label_smoothing))


def _smoothing(vocab: int, label_smoothing: float) -> tuple[float, float, float]:
  """(confidence, low, min_entropy): the soft target puts `confidence` on the true token
  and `low` on each other one."""
  if label_smoothing == 0.0:
    return 1.0, 0.0, 0.0
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  min_entropy = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
  return confidence, low, float(min_entropy)


def _xent_fwd(logits_BLV, targets_BL, label_smoothing):
  vocab = logits_BLV.shape[-1]
  confidence, low, min_entropy = _smoothing(vocab, label_smoothing)
  lse_BL = jax.nn.logsumexp(logits_BLV, axis=-1)
  nll_BL = lse_BL - jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  if label_smoothing == 0.0:
    loss_BL = nll_BL
  else:
    #   -sum_v q_v log p_v = -(confidence - low) log p_t - low * sum_v log p_v,
    #   with sum_v log p_v = sum_v logits_v - V * lse.
    sum_log_probs_BL = logits_BLV.sum(-1) - vocab * lse_BL
    loss_BL = (confidence - low) * nll_BL - low * sum_log_probs_BL - min_entropy
  return (loss_BL, nll_BL), (logits_BLV, lse_BL, targets_BL)


def _xent_bwd(label_smoothing, residuals, cotangents):
  logits_BLV, lse_BL, targets_BL = residuals
  d_loss_BL, d_nll_BL = cotangents
  confidence, low, _ = _smoothing(logits_BLV.shape[-1], label_smoothing)
  # d loss / d logits = softmax - q;  d nll / d logits = softmax - onehot(target).
  probs_BLV = jnp.exp(logits_BLV - lse_BL[..., None])
  onehot_BLV = jnp.arange(logits_BLV.shape[-1]) == targets_BL[..., None]
  d_logits_BLV = (probs_BLV * (d_loss_BL + d_nll_BL)[..., None]
                  - low * d_loss_BL[..., None]
                  - onehot_BLV * ((confidence - low) * d_loss_BL + d_nll_BL)[..., None])
  return d_logits_BLV, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _xent(logits_BLV, targets_BL, label_smoothing):
  return _xent_fwd(logits_BLV, targets_BL, label_smoothing)[0]


_xent.defvjp(_xent_fwd, _xent_bwd)


def predicts_target(logits_BLV: jax.Array, targets_BL: jax.Array) -> jax.Array:
  """argmax(logits, -1) == targets, without the argmax.

  The target is the argmax when its logit is the maximum and no earlier entry
  ties it (argmax picks the first maximum). Two plain reductions (max, any) that
  XLA:CPU vectorises, where argmax's (value, index) reduction runs scalar: about a
  seventh of the time over the [B, L, V] logits. (Rows holding NaN differ: argmax
  points at the first NaN; here no target is counted correct.)
  """
  max_BL1 = logits_BLV.max(-1, keepdims=True)
  target_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  vocab_V = jax.lax.broadcasted_iota(jnp.int32, logits_BLV.shape, logits_BLV.ndim - 1)
  tie_before_BL = jnp.any((vocab_V < targets_BL[..., None]) & (logits_BLV == max_BL1), axis=-1)
  return (target_BL == max_BL1[..., 0]) & ~tie_before_BL


def token_metrics(logits_BLV, targets_BL, weights_BL, label_smoothing: float = 0.0):
  """Sums of loss, NLL and correct predictions over the weighted tokens."""
  loss_BL, nll_BL = cross_entropy(logits_BLV, targets_BL, label_smoothing)
  correct_BL = predicts_target(logits_BLV, targets_BL)
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
  """Every real target token (id > 0) scored; or, where the batch has TARGET_WEIGHTS
  (a language model's prompted pairs: 0 on the prompt), the tokens they weigh."""
  targets_BL = batch["targets"]
  if TARGET_WEIGHTS in batch:
    weights_BL = batch[TARGET_WEIGHTS].astype(jnp.float32)
  else:
    weights_BL = (targets_BL > 0).astype(jnp.float32)
  return token_metrics(logits_BLV, targets_BL, weights_BL, label_smoothing)


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
