"""Loss, optimizer schedule and the sharded train step on 8 simulated devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer_jax import config as config_lib
from transformer_jax.metrics import objectives, summaries
from transformer_jax.parallel import sharding
from transformer_jax.train import optim, programs, steps

from conftest import tiny_config


def test_label_smoothed_loss_matches_explicit_soft_targets():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, (2, 3)))
  loss, nll = objectives.cross_entropy(logits, targets, label_smoothing=0.2)
  soft = optax.smooth_labels(jax.nn.one_hot(targets, 7), 0.0)
  soft = soft * 0.8 + (1 - soft) * 0.2 / 6
  explicit = optax.softmax_cross_entropy(logits, soft)
  min_entropy = -(0.8 * np.log(0.8) + 0.2 * np.log(0.2 / 6))
  np.testing.assert_allclose(loss, explicit - min_entropy, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(nll, optax.softmax_cross_entropy_with_integer_labels(
      logits, targets), rtol=1e-6)
  plain, _ = objectives.cross_entropy(logits, targets, 0.0)
  np.testing.assert_allclose(plain, nll)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_gradient_is_softmax_minus_the_soft_target(smoothing):
  """The hand-written backward pass (one pass over the logits) against autodiff of the
  plain formula, for any mix of loss and NLL cotangents."""
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 5, 11)) * 3, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 11, (2, 5)))
  w_loss = jnp.asarray(rng.random((2, 5)), jnp.float32)
  w_nll = jnp.asarray(rng.random((2, 5)), jnp.float32)

  def reference(x):
    log_probs = jax.nn.log_softmax(x)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    soft = jax.nn.one_hot(targets, 11) * (1 - smoothing) + (
        1 - jax.nn.one_hot(targets, 11)) * smoothing / 10
    return (-(soft * log_probs).sum(-1) * w_loss).sum() + (nll * w_nll).sum()

  def ours(x):
    loss, nll = objectives.cross_entropy(x, targets, smoothing)
    return (loss * w_loss).sum() + (nll * w_nll).sum()

  np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits),
                             rtol=1e-5, atol=1e-6)
  # Under jit and with bfloat16 logits (cast to float32 inside) too.
  np.testing.assert_allclose(jax.jit(jax.grad(ours))(logits), jax.grad(reference)(logits),
                             rtol=1e-5, atol=1e-6)
  g16 = jax.grad(ours)(logits.astype(jnp.bfloat16))
  assert g16.dtype == jnp.bfloat16


@pytest.mark.parametrize("schedule", config_lib.LR_SCHEDULES)
def test_schedules_warm_up_then_decay(schedule):
  c = tiny_config(lr_schedule=schedule, learning_rate=1.0, warmup_steps=10,
                  num_train_steps=100)
  lr = optim.learning_rate_schedule(c)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(10)), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(lr(5)), 0.5, rtol=1e-6)
  late = float(lr(99))
  if schedule == "constant":
    assert late == pytest.approx(1.0)
  else:
    assert late < 0.5


def _setup(config):
  progs = programs.build(config, sharding.make_mesh(config), 64)
  return progs, progs.init_state(jax.random.key(0))


def _batch(config, seed=0):
  bs = config.per_device_batch_size * jax.device_count()
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, 64, (bs, config.max_target_length)).astype(np.int32)
  ids[:, -3:] = 0
  ids[:, -4] = 1
  return {"inputs": ids, "targets": ids[:, ::-1].copy()}


def test_train_step_lowers_the_loss_on_a_tiny_batch():
  config = tiny_config(learning_rate=1e-2, warmup_steps=0, lr_schedule="constant")
  progs, state = _setup(config)
  assert jax.device_count() == 8 and dict(progs.mesh.shape)["data"] == 8
  batch = sharding.global_batch(_batch(config), progs.batch_sharding)
  losses = []
  with progs.context():
    for _ in range(30):
      state, metrics = progs.train_step(state, batch)
      m = jax.device_get(metrics)
      losses.append(float(m["loss_sum"] / m["weight_sum"]))
  assert int(state.step) == 30
  assert losses[-1] < 0.5 * losses[0], losses
  assert np.isfinite(losses).all()
  # Inputs are sharded over the data axis: 8 shards of 2 rows.
  assert batch["inputs"].sharding.shard_shape(batch["inputs"].shape)[0] == 2


def test_fsdp_rules_shard_parameters():
  config = tiny_config(logical_axis_rules="fsdp")
  config.mesh.data, config.mesh.fsdp = 2, 4
  _, state = _setup(config)
  wi = state.params["encoder"]["layer_0"]["mlp"]["wi"]  # (embed, mlp)
  assert wi.addressable_shards[0].data.shape == (wi.shape[0] // 4, wi.shape[1])
  mu = state.opt_state[1][0].mu["encoder"]["layer_0"]["mlp"]["wi"]
  assert mu.sharding == wi.sharding  # optimizer state follows the parameters.


def test_eval_step_counts_only_real_tokens():
  config = tiny_config()
  progs, state = _setup(config)
  b = _batch(config)
  with progs.context():
    m = jax.device_get(progs.eval_step(state.params,
                                       sharding.global_batch(b, progs.batch_sharding)))
  assert m["weight_sum"] == (b["targets"] > 0).sum()
  s = summaries.summarize(m)
  assert 0 <= s["accuracy"] <= 1 and s["perplexity"] == pytest.approx(np.exp(s["nll"]), rel=1e-5)
