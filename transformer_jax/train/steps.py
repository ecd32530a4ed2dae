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
import optax

from transformer_jax.kinds import ModelKind
from transformer_jax.models import layers

Batch = dict[str, jax.Array]
LORA_RNG = 0x10A  # folded into a step's dropout key for the adapters' rank dropout.


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # raw key data (uint32) of the dropout key: checkpointed with the rest.
  # An adapter run's frozen base (adapters/lora.py): no gradient, no optimizer state, not
  # in its checkpoints (rebuilt from its source and checked by its fingerprint); else None.
  frozen: Any = None


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
               tx: optax.GradientTransformation, label_smoothing: float, kind: ModelKind,
               accum_steps: int = 1, prepare=None, activation_bits: int = 0,
               skip_nonfinite: bool = False, adapt=None):
  """One optimizer step; dropout randomness comes from fold_in(state.rng, step).

  The loss is the kind's objective, normalised by its weight (real target
  tokens, or rows) in the global batch. `units_sum` counts what the kind's
  throughput is measured in (kind.unit).

  With `accum_steps` = k > 1 the batch is cut into k micro-batches (row i goes to
  micro-batch i mod k, so each device keeps its own rows), run one after another
  in a `lax.scan`; their summed losses and gradients are divided by the weight of
  the whole batch, so the update is the one-big-batch update, for 1/k of the
  activation memory.

  `prepare` maps the parameters to the ones the model computes with (quantization-
  aware training: `Programs` passes the fake-quantizer, whose gradient goes straight
  through to the float parameters); `activation_bits` rounds the matmul inputs.

  `adapt(frozen, params, rng)` makes the model's parameters of an adapter run's frozen
  base and its trainable parameters (adapters/lora.py's merge): only those are
  differentiated and updated.

  `nonfinite_sum` is 1 when the loss or the gradient is not finite; with
  `skip_nonfinite` such a step leaves parameters and optimizer state as they were.
  """
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_sum_fn(params, micro_batch, rng):
    if adapt is not None:
      params = adapt(state.frozen, params, jax.random.fold_in(rng, LORA_RNG))
    with layers.activation_quantization(activation_bits):
      logits = model.apply({"params": prepare(params) if prepare else params},
                           **kind.model_inputs(micro_batch), rngs={"dropout": rng})
    metrics = kind.objective(logits, micro_batch, label_smoothing)
    return metrics["loss_sum"], metrics

  grad_fn = jax.grad(loss_sum_fn, has_aux=True)
  if accum_steps == 1:
    grad_sums, metrics = grad_fn(state.params, batch, step_rng)
  else:
    micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // accum_steps, accum_steps,
                                             *x.shape[1:]).swapaxes(0, 1), batch)

    def accumulate(carry, i_and_batch):
      i, micro_batch = i_and_batch
      grads, metrics = grad_fn(state.params, micro_batch, jax.random.fold_in(step_rng, i))
      return jax.tree.map(jnp.add, carry, (grads, metrics)), None

    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
        grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), step_rng))
    (grad_sums, metrics), _ = jax.lax.scan(accumulate, zeros,
                                           (jnp.arange(accum_steps), micro))
  grads = jax.tree.map(lambda g: g / jnp.maximum(metrics["weight_sum"], 1.0), grad_sums)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["grad_norm"] = optax.tree.norm(grads)
  finite = jnp.isfinite(metrics["loss_sum"]) & jnp.isfinite(metrics["grad_norm"])
  metrics["nonfinite_sum"] = 1.0 - finite.astype(jnp.float32)
  if skip_nonfinite:
    keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    params = jax.tree.map(keep, params, state.params)
    opt_state = jax.tree.map(keep, opt_state, state.opt_state)
  metrics["units_sum"] = kind.count_units(batch)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module, kind: ModelKind, prepare=None,
              activation_bits: int = 0):
  """The kind's eval sums over a batch (no dropout): NLL, correct predictions and
  weights; classifiers add the confusion matrix."""
  with layers.activation_quantization(activation_bits):
    logits = model.apply({"params": prepare(params) if prepare else params},
                         **kind.model_inputs(batch))
  return kind.eval_sums(logits, batch)
