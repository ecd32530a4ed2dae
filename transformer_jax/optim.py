"""optax learning-rate schedules and the optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from transformer_jax import sparsity


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then the decay that `lr_schedule` names.

  rsqrt: lr * sqrt(warmup / step) (the paper's, in its peak-normalised form);
  cosine and linear: decay to 0 at `num_train_steps`; constant: flat.
  """
  peak, warmup, total = config.learning_rate, config.warmup_steps, config.num_train_steps
  decay_steps = max(total - warmup, 1)
  if config.lr_schedule == "rsqrt":
    shift = max(warmup, 1)
    decay = lambda step: peak * jax.lax.rsqrt(jnp.maximum(step, 0) / shift + 1.0)
  elif config.lr_schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps)
  elif config.lr_schedule == "linear":
    decay = optax.linear_schedule(peak, 0.0, decay_steps)
  elif config.lr_schedule == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f"config.lr_schedule={config.lr_schedule!r} is unknown")
  if warmup == 0:
    return decay
  warm = optax.linear_schedule(0.0, peak, warmup)
  return optax.join_schedules([warm, decay], [warmup])


def make_optimizer(config, param_names=None) -> optax.GradientTransformation:
  """AdamW with optional global-norm clipping; decay skips biases and norms.

  With config.pruning.sparsity, magnitude pruning goes last (`sparsity.prune`, which
  needs the parameters' logical names).
  """
  tx = _adamw(config)
  p = config.pruning
  if p.sparsity > 0:
    tx = optax.chain(tx, sparsity.prune(param_names, p.sparsity, p.start_step, p.end_step,
                                        p.update_every, p.scope, p.structure))
  return tx


def _adamw(config) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(config)
  adamw = optax.adamw(
      schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
      weight_decay=config.weight_decay,
      mask=_decay_mask)
  if config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adamw)
  return adamw


def _decay_mask(params):
  """Weight decay on matrices only (rank >= 2), not on biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)
