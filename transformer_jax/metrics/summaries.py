"""Summed metrics -> the figures a run logs: per-token means, perplexity, F1."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from transformer_jax.metrics import scores as evaluation


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
  if "ctc_sum" in metric_sums:  # speech with a CTC head: its loss per target token.
    out["ctc"] = float(metric_sums["ctc_sum"]) / w
  if "confusion_sum" in metric_sums:
    scores = evaluation.classification_scores(np.asarray(metric_sums["confusion_sum"]))
    out.update({k: scores[k] for k in ("precision", "recall", "f1")})
  for k, v in metric_sums.items():
    if not k.endswith("_sum"):
      out[k] = float(v) / num_steps
  return out
