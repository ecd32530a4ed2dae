"""Today's decoder recipe as options of our layers (issue 43, first step): RMSNorm, gated
MLPs without biases, RoPE's base. The defaults leave every existing model as it was."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import kinds
from transformer_jax.errors import ConfigError
from transformer_jax.models import config as models_config, layers
from transformer_jax.observe import flops
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

from conftest import tiny_config

RECIPE = {"model.kind": "decoder_lm", "model.norm": "rmsnorm", "model.mlp_gated": True,
          "model.mlp_bias": False, "model.activation": "silu", "model.positions": "rotary",
          "model.rotary_base": 5e5}


def test_rmsnorm_is_x_over_its_root_mean_square_times_scale():
  x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
  norm = layers.RMSNorm(1e-5)
  params = norm.init(jax.random.key(0), x)
  assert set(params["params"]) == {"scale"}
  scale = np.linspace(0.5, 2, 8).astype(np.float32)
  y = norm.apply({"params": {"scale": scale}}, x)
  want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5) * scale
  np.testing.assert_allclose(y, want, rtol=1e-5)


def test_a_gated_mlp_without_biases_is_silu_gate_times_up_then_down():
  x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype(np.float32)
  mlp = layers.Mlp(mlp_dim=16, activation="silu", gated=True, use_bias=False)
  params = jax.tree.map(np.asarray, nn_unbox(mlp.init(jax.random.key(0), x)["params"]))
  assert set(params) == {"wi_0", "wi_1", "wo"}
  y = mlp.apply({"params": params}, x)
  gate = x @ params["wi_0"]
  want = (gate / (1 + np.exp(-gate))) * (x @ params["wi_1"]) @ params["wo"]
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def nn_unbox(tree):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  return nn.meta.unbox(tree)


def test_the_default_mlp_keeps_its_parameters_and_values():
  x = np.ones((1, 2, 8), np.float32)
  params = layers.Mlp(mlp_dim=16).init(jax.random.key(3), x)["params"]
  assert set(params) == {"wi", "bi", "wo", "bo"}


def test_rotary_base_sets_the_frequencies():
  x = np.random.default_rng(2).normal(size=(1, 4, 1, 8)).astype(np.float32)
  positions = np.arange(4)[None]
  for base in (1e4, 5e5):
    y = np.asarray(layers.rotary_embedding(jnp.asarray(x), positions, base))
    inv = base ** (-np.arange(0, 8, 2) / 8)
    angle = positions[0, :, None] * inv  # [L, 4]
    lo, hi = x[0, :, 0, :4], x[0, :, 0, 4:]
    want = np.concatenate([lo * np.cos(angle) - hi * np.sin(angle),
                           hi * np.cos(angle) + lo * np.sin(angle)], -1)
    np.testing.assert_allclose(y[0, :, 0], want, rtol=1e-5, atol=1e-6)


def test_a_decoder_with_the_recipe_trains_and_counts_its_third_mlp_product():
  config = tiny_config(**RECIPE, learning_rate=1e-2, warmup_steps=0, lr_schedule="constant",
                       **{"data.source": "python_stdlib"})
  kinds.validate(config, 8)
  progs = programs.build(config, sharding.make_mesh(config), 64)
  names = programs.param_names(progs.kind.model(progs.model_config), progs.kind,
                               progs.batch_shapes)
  paths = {"/".join(str(getattr(k, "key", k)) for k in p)
           for p, _ in jax.tree_util.tree_flatten_with_path(
               names, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]}
  assert "decoder/layer_0/mlp/wi_0" in paths and "decoder/layer_0/mlp/bi" not in paths
  assert "decoder/final_norm/scale" in paths and "decoder/final_norm/bias" not in paths
  state = progs.init_state(jax.random.key(0))
  rng = np.random.default_rng(0)
  ids = rng.integers(3, 64, (progs.global_batch_size, config.max_target_length)).astype(np.int32)
  batch = progs.global_batch({"inputs": ids, "targets": ids})
  batch = {k: v for k, v in batch.items() if k in progs.batch_shapes}
  losses = []
  with progs.context():
    for _ in range(10):
      state, m = progs.train_step(state, batch)
      losses.append(float(m["loss_sum"] / m["weight_sum"]))
  assert losses[-1] < 0.7 * losses[0], losses
  plain = models_config.model_config(tiny_config(**{"model.kind": "decoder_lm"}), 64)
  gated = plain.replace(mlp_gated=True)
  shapes = progs.batch_shapes
  lm = kinds.get("decoder_lm").forward_flops
  rows, length = shapes["targets"].shape
  mlp = flops.mlp_flops(rows, length, plain.emb_dim, plain.mlp_dim)
  assert lm(gated, shapes) - lm(plain, shapes) == pytest.approx(
      0.5 * mlp * plain.num_decoder_layers)


@pytest.mark.parametrize("field,value,match", [
    ("model.norm", "batchnorm", "one of"), ("model.rotary_base", 1.0, "> 1")])
def test_bad_recipe_fields_are_config_errors(field, value, match):
  with pytest.raises(ConfigError, match=f"config.{field}.*{match}"):
    kinds.validate(tiny_config(**{field: value}), 8)
