"""optax learning-rate schedules and the optimizer.

The schedule's end (where cosine and linear decay reach 0) is a number in the
optimizer state, `HorizonState.horizon`, not a constant of the compiled step:
it starts at config.num_train_steps, and a run trained for a time budget
(`budget.py`) moves it from the host while training (`with_horizon`), with no
recompile.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer_jax.compress import sparsity


class HorizonState(NamedTuple):
  """The schedule's state: updates applied, and the step at which it ends."""
  count: jax.Array  # int32
  horizon: jax.Array  # int32


def learning_rate_schedule(config):
  """Linear warmup to `learning_rate`, then the decay that `lr_schedule` names:
  `schedule(step, horizon=config.num_train_steps)`.

  rsqrt: lr * sqrt(warmup / step) (the paper's, in its peak-normalised form);
  cosine and linear: decay to 0 at `horizon`; constant: flat.
  """
  peak, warmup, kind = config.learning_rate, config.warmup_steps, config.lr_schedule
  if kind not in ("rsqrt", "cosine", "linear", "constant"):
    raise ValueError(f"config.lr_schedule={kind!r} is unknown")

  def decay(step, horizon):
    if kind == "rsqrt":
      return peak * jax.lax.rsqrt(jnp.maximum(step, 0) / max(warmup, 1) + 1.0)
    if kind == "constant":
      return jnp.asarray(peak, jnp.float32)
    length = jnp.maximum(jnp.asarray(horizon, jnp.float32) - warmup, 1.0)
    done = jnp.clip(jnp.asarray(step, jnp.float32), 0.0, length) / length
    if kind == "cosine":
      return peak * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
    return peak * (1.0 - done)

  def schedule(step, horizon=config.num_train_steps):
    if warmup == 0:
      return decay(step, horizon)
    warm = peak * jnp.clip(jnp.asarray(step, jnp.float32), 0.0, warmup) / warmup
    return jnp.where(step < warmup, warm, decay(step - warmup, horizon))

  return schedule


def scale_by_horizon_schedule(config) -> optax.GradientTransformation:
  """optax.scale_by_learning_rate with the schedule's end kept in the state."""
  schedule = learning_rate_schedule(config)

  def init(params):
    del params
    return HorizonState(count=jnp.zeros([], jnp.int32),
                        horizon=jnp.asarray(config.num_train_steps, jnp.int32))

  def update(updates, state, params=None):
    del params
    lr = schedule(state.count, state.horizon)
    updates = jax.tree.map(lambda g: jnp.asarray(-lr, g.dtype) * g, updates)
    return updates, HorizonState(optax.safe_increment(state.count), state.horizon)

  return optax.GradientTransformation(init, update)


def _is_horizon(node) -> bool:
  return isinstance(node, HorizonState)


def horizon_of(opt_state: Any) -> int:
  """The schedule's end that `opt_state` holds."""
  found = [n for n in jax.tree.leaves(opt_state, is_leaf=_is_horizon) if _is_horizon(n)]
  if not found:
    raise ValueError("the optimizer state holds no HorizonState")
  return int(jax.device_get(found[0].horizon))


def with_horizon(opt_state: Any, horizon: int) -> Any:
  """`opt_state` with the schedule ending at `horizon`: a new scalar on the old one's
  sharding (every process passes the same value), so the compiled step takes it."""

  def put(node):
    if not _is_horizon(node):
      return node
    old = node.horizon
    new = jax.make_array_from_callback(
        old.shape, old.sharding, lambda _: np.asarray(horizon, old.dtype))
    return node._replace(horizon=new)

  return jax.tree.map(put, opt_state, is_leaf=_is_horizon)


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
  # optax.adamw's chain, with the schedule's end in the state.
  adamw = optax.chain(
      optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
      optax.add_decayed_weights(config.weight_decay, _decay_mask),
      scale_by_horizon_schedule(config))
  if config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adamw)
  return adamw


def _decay_mask(params):
  """Weight decay on matrices only (rank >= 2), not on biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)
