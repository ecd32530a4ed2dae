"""Data, FSDP and tensor parallelism on 8 simulated devices: same losses, real shards."""

import math

import jax
import numpy as np
import pytest

from transformer_jax.parallel import sharding
from transformer_jax.train import programs

from conftest import tiny_config

# Wide enough to split 8 ways on every sharded dimension (heads, MLP, width, vocab).
MODEL = {"model.emb_dim": 32, "model.num_heads": 8, "model.qkv_dim": 32, "model.mlp_dim": 64}
VOCAB = 100  # padded to 128 by the model.
GLOBAL_BATCH = 16


def _config(mesh_shape, rules="fsdp_tensor"):
  c = tiny_config(learning_rate=1e-2, warmup_steps=0, lr_schedule="constant",
                  logical_axis_rules=rules, **MODEL)
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh_shape
  c.per_device_batch_size = GLOBAL_BATCH // math.prod(mesh_shape)
  return c


def _batches(n, length=16):
  rng = np.random.default_rng(0)
  out = []
  for _ in range(n):
    inputs = rng.integers(3, VOCAB, (GLOBAL_BATCH, length)).astype(np.int32)
    targets = rng.integers(3, VOCAB, (GLOBAL_BATCH, length)).astype(np.int32)
    inputs[:, -4:] = 0
    targets[:, -3:] = 0
    out.append({"inputs": inputs, "targets": targets})
  return out


def _losses(mesh_shape, num_steps=3):
  devices = jax.devices()[:math.prod(mesh_shape)]
  config = _config(mesh_shape)
  progs = programs.build(config, sharding.make_mesh(config, devices), VOCAB)
  state = progs.init_state(jax.random.key(0))
  losses = []
  with progs.context():
    for batch in _batches(num_steps):
      state, m = progs.train_step(state, sharding.global_batch(batch, progs.batch_sharding))
      m = jax.device_get(m)
      losses.append(float(m["loss_sum"] / m["weight_sum"]))
  return losses


@pytest.fixture(scope="module")
def single_device_losses():
  return _losses((1, 1, 1))


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 1, 8)])
def test_losses_match_a_single_device(mesh_shape, single_device_losses):
  """Dropout included: its random bits do not depend on how arrays are split."""
  losses = _losses(mesh_shape)
  assert losses[-1] < losses[0]  # it trains at all.
  np.testing.assert_allclose(losses, single_device_losses, rtol=2e-5)


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 4, 2), (1, 2, 4)])
def test_parameters_are_sharded_as_the_rules_say(mesh_shape):
  config = _config(mesh_shape)
  progs = programs.build(config, sharding.make_mesh(config), VOCAB)
  state = progs.init_state(jax.random.key(0))
  _, fsdp, tensor = mesh_shape
  p = state.params
  shapes = {  # parameter: (full shape, expected shard shape) under "fsdp_tensor".
      "embedding (vocab, embed)": (p["shared_embedding"]["embedding"], (128 // tensor, 32 // fsdp)),
      "mlp wi (embed, mlp)": (p["encoder"]["layer_0"]["mlp"]["wi"], (32 // fsdp, 64 // tensor)),
      "mlp wo (mlp, embed)": (p["encoder"]["layer_0"]["mlp"]["wo"], (64 // tensor, 32 // fsdp)),
      "query (embed, heads, kv)": (p["decoder"]["layer_0"]["self_attention"]["query"],
                                   (32 // fsdp, 8 // tensor, 4)),
      "out (heads, kv, embed)": (p["decoder"]["layer_0"]["cross_attention"]["out"],
                                 (8 // tensor, 4, 32 // fsdp)),
  }
  for name, (array, want) in shapes.items():
    assert {s.data.shape for s in array.addressable_shards} == {want}, name
  # Layer-norm scales are split along the width too; Adam's moments follow their parameters.
  scale = p["encoder"]["final_norm"]["scale"]
  assert scale.addressable_shards[0].data.shape == (32 // fsdp,)
  mu = state.opt_state[1][0].mu["encoder"]["layer_0"]["mlp"]["wi"]
  assert mu.sharding == p["encoder"]["layer_0"]["mlp"]["wi"].sharding


def _bytes_on_device_0(tree):
  device = jax.devices()[0]
  return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
             if s.device == device)


def test_per_device_state_bytes_fall_as_fsdp_grows():
  sizes = []
  for fsdp in (1, 2, 4, 8):
    config = _config((8 // fsdp, fsdp, 1), rules="fsdp")
    progs = programs.build(config, sharding.make_mesh(config), VOCAB)
    state = progs.init_state(jax.random.key(0))
    sizes.append(_bytes_on_device_0((state.params, state.opt_state)))
  assert sizes[0] > sizes[1] > sizes[2] > sizes[3], sizes
  assert sizes[3] < 0.15 * sizes[0], sizes  # about 1/8: every weight has a width axis.
