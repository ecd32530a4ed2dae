"""Speed switches compute the same thing: gradient accumulation, bfloat16 compute, scanned layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import kinds
from transformer_jax.decode import search as decoding
from transformer_jax.errors import ConfigError
from transformer_jax.models import config as models_config
from transformer_jax.models.transformer import EncoderDecoder, unstack_layers
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

from conftest import tiny_config


def _batch(rows: int, length: int, seed: int = 0) -> dict:
  """Rows of varied real length (so micro-batches weigh differently), padding after."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, 64, (rows, length)).astype(np.int32)
  for r in range(rows):
    ids[r, rng.integers(length // 4, length):] = 0
  return {"inputs": ids, "targets": np.roll(ids, 1, axis=1)}


def _one_step(config, batch):
  progs = programs.build(config, sharding.make_mesh(config), 64)
  state = progs.init_state(jax.random.key(0))
  with progs.context():
    state, metrics = progs.train_step(state, progs.global_batch(batch))
  return jax.device_get(state.params), jax.device_get(metrics)


def _mesh_config(**overrides):
  config = tiny_config(global_batch_size=16, warmup_steps=0, lr_schedule="constant",
                       learning_rate=1e-2, **{"model.dropout_rate": 0.0,
                                                "model.attention_dropout_rate": 0.0},
                       **overrides)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  return config


def test_accumulated_micro_batches_make_the_one_big_batch_update():
  batch = _batch(16, 16)
  params_1, metrics_1 = _one_step(_mesh_config(), batch)
  params_4, metrics_4 = _one_step(_mesh_config(gradient_accumulation_steps=4), batch)
  for k in ("loss_sum", "nll_sum", "weight_sum", "correct_sum", "units_sum"):
    np.testing.assert_allclose(metrics_4[k], metrics_1[k], rtol=1e-5)
  np.testing.assert_allclose(metrics_4["grad_norm"], metrics_1["grad_norm"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_4, params_1)
  # The update itself is not trivially zero.
  params_0 = jax.device_get(programs.build(
      _mesh_config(), sharding.make_mesh(_mesh_config()), 64).init_state(
          jax.random.key(0)).params)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params_4, params_0)
  assert max(jax.tree.leaves(moved)) > 1e-4


def test_accumulation_steps_must_split_the_batch_over_its_shards():
  config = _mesh_config(gradient_accumulation_steps=3)
  with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
    kinds.validate(config, 8)
  # 16 rows / 8 = 2-row micro-batches do not divide over the 4 data x fsdp shards.
  config = _mesh_config(gradient_accumulation_steps=8)
  with pytest.raises(ConfigError, match="global_batch_size / gradient_accumulation_steps"):
    kinds.validate(config, 8)


def _stack(params):
  """Unscanned "layer_i" subtrees -> one "layers" subtree stacked on axis 0."""
  out, layers = {}, {}
  for key, value in params.items():
    if key.startswith("layer_"):
      layers[int(key[6:])] = value
    else:
      out[key] = _stack(value) if isinstance(value, dict) else value
  if layers:
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *[layers[i] for i in sorted(layers)])
  return out


@pytest.mark.parametrize("remat", ["none", pytest.param("full", marks=pytest.mark.long)])
def test_scanned_layers_compute_what_the_unscanned_layers_compute(remat):
  config = tiny_config(**{"model.remat": remat, "model.num_encoder_layers": 3,
                          "model.num_decoder_layers": 2, "model.dropout_rate": 0.0,
                          "model.attention_dropout_rate": 0.0})
  cfg = models_config.model_config(config, 64)
  batch = _batch(4, 16)
  unscanned, scanned = EncoderDecoder(cfg), EncoderDecoder(cfg.replace(scan_layers=True))
  params = jax.device_get(unscanned.init(jax.random.key(0), batch["inputs"],
                                         batch["targets"])["params"])
  params = jax.tree.map(np.asarray, nn.meta.unbox(params))
  stacked = _stack(params)
  # The scanned model's own parameters have exactly these shapes.
  own = nn.meta.unbox(scanned.init(jax.random.key(0), batch["inputs"], batch["targets"])["params"])
  assert jax.tree.map(np.shape, own) == jax.tree.map(np.shape, stacked)
  assert own["encoder"]["layers"]["mlp"]["wi"].shape == (3, 32, 64)
  assert jax.tree.map(np.shape, unstack_layers(stacked)) == jax.tree.map(np.shape, params)

  def loss(model, p):
    return jnp.mean(model.apply({"params": p}, batch["inputs"], batch["targets"]) ** 2)

  np.testing.assert_allclose(loss(scanned, stacked), loss(unscanned, params), rtol=1e-5)
  grads_s = unstack_layers(jax.grad(lambda p: loss(scanned, p))(stacked))
  grads_u = jax.grad(lambda p: loss(unscanned, p))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               grads_s, grads_u)
  # Decoding unstacks: the same translations from either layout.
  options = decoding.DecodeOptions.from_config(config.decoding)
  out_s = decoding.translate(stacked, batch["inputs"], None, config=cfg.replace(scan_layers=True),
                             options=options, max_length=12)
  out_u = decoding.translate(params, batch["inputs"], None, config=cfg, options=options,
                             max_length=12)
  np.testing.assert_array_equal(out_s, out_u)


def test_a_deep_scanned_model_lowers_to_a_fraction_of_the_program():
  """24 layers: the scanned step's program holds one layer, the unscanned one 24."""
  sizes = {}
  for scan in (False, True):
    config = tiny_config(**{"model.kind": "decoder_lm", "model.num_decoder_layers": 24,
                            "model.scan_layers": scan, "mesh.data": 1})
    progs = programs.build(config, sharding.make_mesh(config, jax.devices()[:1]), 64)
    with progs.context():
      text = progs.train_step.lower(progs.abstract_state, progs.batch_specs()).as_text()
    sizes[scan] = len(text.splitlines())
  assert sizes[True] * 3 < sizes[False], sizes


def test_bfloat16_compute_keeps_float32_parameters_and_loss_and_tracks_float32():
  batch = _batch(16, 16)
  runs = {}
  for dtype in ("float32", "bfloat16"):
    config = _mesh_config(**{"model.dtype": dtype})
    progs = programs.build(config, sharding.make_mesh(config), 64)
    assert progs.model_config.dtype == (jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
    state = progs.init_state(jax.random.key(0))
    before = jax.device_get(state.params)
    with progs.context():
      state, metrics = progs.train_step(state, progs.global_batch(batch))
    assert {x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
            if x.ndim} == {jnp.dtype(jnp.float32)}
    assert metrics["loss_sum"].dtype == jnp.float32
    moved = jax.tree.map(lambda a, b: np.ravel(a - b), jax.device_get(state.params), before)
    runs[dtype] = (np.concatenate(jax.tree.leaves(moved)), jax.device_get(metrics))
  (u32, m32), (u16, m16) = runs["float32"], runs["bfloat16"]
  np.testing.assert_allclose(m16["loss_sum"], m32["loss_sum"], rtol=2e-2)
  np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=5e-2)
  # The bf16 update goes where the f32 one goes.
  assert np.abs(u32).max() > 1e-3
  assert np.corrcoef(u16, u32)[0, 1] > 0.95


def test_tied_projection_backward_matches_autodiff():
  from transformer_jax.models import layers
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(11, 8)), jnp.float32)
  cot = jnp.asarray(rng.normal(size=(2, 3, 11)), jnp.float32)

  def ours(x, t):
    return (layers.tied_logits(x, t) * cot).sum()

  def plain(x, t):
    return (jnp.einsum("BLD,VD->BLV", x, t) * cot).sum()

  np.testing.assert_allclose(ours(x, table), plain(x, table), rtol=1e-6)
  for a, b in zip(jax.grad(ours, (0, 1))(x, table), jax.grad(plain, (0, 1))(x, table)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bias_backward_matches_autodiff(dtype):
  from transformer_jax.models import layers
  rng = np.random.default_rng(0)
  y = jnp.asarray(rng.normal(size=(3, 5, 7)), dtype)
  b = jnp.asarray(rng.normal(size=(7,)), jnp.float32)
  cot = jnp.asarray(rng.normal(size=(3, 5, 7)), dtype)

  def ours(y, b):
    out = layers.add_bias(y, b)
    assert out.dtype == y.dtype
    return (out.astype(jnp.float32) * cot.astype(jnp.float32)).sum()

  def plain(y, b):
    return ((y + b.astype(y.dtype)).astype(jnp.float32) * cot.astype(jnp.float32)).sum()

  np.testing.assert_allclose(ours(y, b), plain(y, b), rtol=1e-6)
  (dy, db), (dy_ref, db_ref) = jax.grad(ours, (0, 1))(y, b), jax.grad(plain, (0, 1))(y, b)
  assert dy.dtype == y.dtype and db.dtype == b.dtype
  np.testing.assert_array_equal(np.asarray(dy, np.float32), np.asarray(dy_ref, np.float32))
  # The bias gradient sums all 15 rows (in float32 either way).
  np.testing.assert_allclose(db, np.asarray(cot, np.float32).sum((0, 1)), rtol=1e-5, atol=1e-5)
  # Autodiff's sum ends in y's dtype: bf16 rounds it (to about 3 significant digits).
  tol = 2e-2 if dtype == "bfloat16" else 1e-5
  np.testing.assert_allclose(db, db_ref, rtol=tol, atol=tol)
