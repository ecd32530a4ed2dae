"""The pure train and eval steps, for any model kind.

What differs between kinds (the model's inputs, the objective, the metric
sums, the throughput count) comes from the kind's record
(`transformer_jax.kinds`); the steps themselves never ask which kind they run.
Steps return metric *sums* plus a weight; the loop divides at log time, so
metrics stay exact across devices and steps (keys ending in `_sum`).
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
from transformer_jax.kinds import ModelKind

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw key data (uint32) of the dropout key: checkpointed with the rest.


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       batch_shapes: dict[str, jax.ShapeDtypeStruct],
                       kind: ModelKind) -> TrainState:
  """Fresh parameters (boxed with logical names) and optimizer state.

  `batch_shapes` maps the kind's batch keys ("inputs", "targets", "image", ...) to shapes.
  """
  params_rng, dropout_rng = jax.random.split(rng)
  dummy = {k: jnp.ones(s.shape, s.dtype) for k, s in batch_shapes.items()}
  params = model.init(params_rng, **kind.model_inputs(dummy))["params"]
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(dropout_rng))


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               tx: optax.GradientTransformation, label_smoothing: float, kind: ModelKind):
  """One optimizer step; dropout randomness comes from fold_in(state.rng, step).

  The loss is the kind's objective, normalised by its weight (real target
  tokens, or rows) in the global batch. `units_sum` counts what the kind's
  throughput is measured in (kind.unit).
  """
  dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    logits = model.apply({"params": params}, **kind.model_inputs(batch),
                         rngs={"dropout": dropout_rng})
    metrics = kind.objective(logits, batch, label_smoothing)
    return metrics["loss_sum"] / jnp.maximum(metrics["weight_sum"], 1.0), metrics

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["units_sum"] = kind.count_units(batch)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module, kind: ModelKind):
  """The kind's eval sums over a batch (no dropout): NLL, correct predictions and
  weights; classifiers add the confusion matrix."""
  logits = model.apply({"params": params}, **kind.model_inputs(batch))
  return kind.eval_sums(logits, batch)


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
