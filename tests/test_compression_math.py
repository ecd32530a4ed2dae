"""Quantization and pruning numerics: error bounds, exact zeros, schedules, storage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from transformer_jax import kinds
from transformer_jax.compress import quant, sparsity, stored as compressed
from transformer_jax.errors import ConfigError
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

from conftest import tiny_config

NAMES_AND_CHANNELS = [
    # logical names, shape, the axes one scale spans.
    (("embed", "mlp"), (48, 40), (0,)),
    (("embed", "heads", "kv"), (48, 4, 6), (0,)),
    (("heads", "kv", "embed"), (4, 6, 48), (0, 1)),
    (("vocab", "embed"), (50, 48), (1,)),
    (("layers", "embed", "mlp"), (3, 48, 40), (1,)),
]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("names,shape,axes", NAMES_AND_CHANNELS)
def test_per_channel_quantization_error_is_at_most_half_a_step(bits, names, shape, axes):
  assert quant.reduce_axes(names, len(shape)) == axes
  rng = np.random.default_rng(0)
  w = (rng.standard_t(3, size=shape) * rng.uniform(0.01, 2, size=shape[-1])).astype(np.float32)
  q = quant.quantize(w, bits, axes)
  scale = np.asarray(q.scale)
  assert scale.shape == tuple(1 if a in axes else n for a, n in enumerate(shape))
  # One scale per output channel: each channel's largest weight lands on the top level.
  top = 2 ** (bits - 1) - 1
  np.testing.assert_allclose(np.abs(w).max(axis=axes, keepdims=True), scale * top, rtol=1e-6)
  err = np.abs(np.asarray(q.dequantize()) - w)
  assert (err <= scale / 2 * (1 + 1e-5)).all()
  assert err.max() > 0  # really rounded.
  ints = quant.unpack_int4(q.qvalue, shape) if bits == 4 else q.qvalue
  assert ints.dtype == jnp.int8 and int(jnp.abs(ints).max()) == top
  stored = q.qvalue.size * q.qvalue.dtype.itemsize
  assert stored == (w.size + 1) // 2 if bits == 4 else stored == w.size


def test_int4_packing_round_trips_odd_sizes():
  q = jnp.asarray(np.random.default_rng(1).integers(-7, 8, size=(5, 7)), jnp.int8)
  packed = quant.pack_int4(q)
  assert packed.dtype == jnp.uint8 and packed.shape == (18,)
  np.testing.assert_array_equal(quant.unpack_int4(packed, (5, 7)), q)


def test_the_nf4_levels_are_the_normal_quantiles_qlora_defines():
  # QLoRA (Dettmers et al. 2023, Appendix E): 8 quantiles of N(0, 1) above zero and 7 below,
  # from the probabilities linspace(offset, 0.5, 9) and linspace(offset, 0.5, 8) less their
  # last, with zero, scaled to [-1, 1].
  offset = 0.9677083
  above = jax.scipy.special.ndtri(jnp.linspace(offset, 0.5, 9)[:-1])
  below = -jax.scipy.special.ndtri(jnp.linspace(offset, 0.5, 8)[:-1])
  levels = np.sort(np.concatenate([np.asarray(above), [0.0], np.asarray(below)]))
  np.testing.assert_allclose(quant.NF4, levels / np.abs(levels).max(), atol=2e-6)


def test_nf4_keeps_each_blocks_maximum_and_the_nearest_level_of_every_value():
  rng = np.random.default_rng(3)
  w = rng.normal(0, 0.02, size=(37, 29)).astype(np.float32)  # 1,073 values: 17 blocks.
  w[5, 3] = 0.5  # an outlier costs its block alone.
  q = quant.quantize_nf4(w)
  assert q.qvalue.dtype == jnp.uint8 and q.qvalue.size == 17 * 32 and q.scale.shape == (17,)
  blocks = np.pad(w.reshape(-1), (0, 17 * 64 - w.size)).reshape(17, 64)
  np.testing.assert_allclose(np.asarray(q.scale), np.abs(blocks).max(axis=1), rtol=1e-6)
  back = np.asarray(q.dequantize())
  assert back.shape == w.shape and back[5, 3] == np.float32(0.5)
  # Each value is the level nearest to it: no other level is closer.
  scale = np.repeat(np.asarray(q.scale), 64)[:w.size].reshape(w.shape)
  gaps = np.abs(w[..., None] - quant.NF4 * scale[..., None]).min(axis=-1)
  np.testing.assert_allclose(np.abs(back - w), gaps, atol=1e-7)
  # Normal weights: NF4 in blocks of 64 beats int4 with a scale per output channel.
  g = rng.normal(0, 0.02, size=(256, 300)).astype(np.float32)
  err = lambda x: np.linalg.norm(np.asarray(x.dequantize()) - g) / np.linalg.norm(g)  # noqa
  assert err(quant.quantize_nf4(g)) < 0.8 * err(quant.quantize(g, 4, (0,)))


def test_fake_quant_equals_the_stored_integers_and_passes_the_gradient_through():
  w = jnp.asarray(np.random.default_rng(2).normal(size=(16, 8)), jnp.float32)
  q = quant.quantize(w, 8, (0,))
  np.testing.assert_array_equal(quant.fake_quant(w, 8, (0,)), q.dequantize())
  grad = jax.grad(lambda x: jnp.sum(quant.fake_quant(x, 8, (0,)) * 3.0))(w)
  np.testing.assert_array_equal(grad, jnp.full_like(w, 3.0))


def test_cubic_schedule_reaches_the_target_at_the_end_step():
  got = [float(sparsity.sparsity_at(t, 0.8, 10, 30)) for t in (0, 9, 10, 20, 30, 99)]
  np.testing.assert_allclose(got, [0, 0, 0, 0.8 * (1 - 0.5 ** 3), 0.8, 0.8], rtol=1e-6)
  assert float(sparsity.sparsity_at(5, 0.5, 5, 5)) == 0.5  # one shot.


def _params_and_names():
  rng = np.random.default_rng(3)
  params = {"mlp": {"wi": rng.normal(size=(8, 16)), "bi": rng.normal(size=(16,)),
                    "wo": rng.normal(size=(16, 8))},
            "att": {"query": rng.normal(size=(8, 4, 2)), "out": rng.normal(size=(4, 2, 8))},
            "embedding": rng.normal(size=(30, 8))}
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  names = {"mlp": {"wi": P("embed", "mlp"), "bi": P("mlp"), "wo": P("mlp", "embed")},
           "att": {"query": P("embed", "heads", "kv"), "out": P("heads", "kv", "embed")},
           "embedding": P("vocab", "embed")}
  return params, names


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_unstructured_masks_drop_the_smallest_kernel_weights(scope):
  params, names = _params_and_names()
  masks = sparsity.magnitude_masks(params, names, 0.5, scope)
  kernels = [("mlp", "wi"), ("mlp", "wo"), ("att", "query"), ("att", "out")]
  kept = np.concatenate([np.abs(np.asarray(params[a][b]))[np.asarray(masks[a][b])]
                         for a, b in kernels])
  dropped = np.concatenate([np.abs(np.asarray(params[a][b]))[~np.asarray(masks[a][b])]
                            for a, b in kernels])
  assert len(dropped) == (len(kept) + len(dropped)) // 2
  if scope == "layer":
    for a, b in kernels:
      assert np.mean(~np.asarray(masks[a][b])) == 0.5
      m, w = np.asarray(masks[a][b]), np.abs(np.asarray(params[a][b]))
      assert w[m].min() >= w[~m].max()
  else:
    assert kept.min() >= dropped.max()
  # Biases and lookup tables are not pruned.
  assert np.asarray(masks["mlp"]["bi"]).all() and np.asarray(masks["embedding"]).all()


def test_structured_masks_drop_whole_mlp_units_and_heads():
  params, names = _params_and_names()
  masks = jax.tree.map(np.asarray, sparsity.magnitude_masks(params, names, 0.5, "layer",
                                                            "groups"))
  units = masks["mlp"]["wi"].all(axis=0)
  assert units.sum() == 8 and (masks["mlp"]["wi"].any(axis=0) == units).all()
  np.testing.assert_array_equal(masks["mlp"]["wo"].all(axis=1), units)
  np.testing.assert_array_equal(masks["mlp"]["wo"].any(axis=1), units)
  heads = masks["att"]["query"].all(axis=(0, 2))
  assert heads.sum() == 2
  np.testing.assert_array_equal(masks["att"]["out"].all(axis=(1, 2)), heads)
  # The units kept are those of the largest joint norm.
  score = (np.square(params["mlp"]["wi"]).sum(0) + np.square(params["mlp"]["wo"]).sum(1))
  assert score[units].min() >= score[~units].max()


def test_pruned_weights_stay_exactly_zero_after_every_optimizer_step():
  config = tiny_config(global_batch_size=16, learning_rate=1e-2, warmup_steps=0,
                       lr_schedule="constant",
                       **{"pruning.sparsity": 0.6, "pruning.start_step": 1,
                          "pruning.end_step": 5, "pruning.update_every": 2})
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  progs = programs.build(config, sharding.make_mesh(config), 64)
  state = progs.init_state(jax.random.key(0))
  names = progs.param_names
  rng = np.random.default_rng(0)
  seen = []
  with progs.context():
    for step in range(8):
      ids = rng.integers(3, 64, (16, 16)).astype(np.int32)
      state, _ = progs.train_step(state, progs.global_batch({"inputs": ids, "targets": ids}))
      params = jax.device_get(state.params)
      masks = jax.device_get(state.opt_state[-1].masks)
      for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
        assert (np.asarray(x)[~np.asarray(m)] == 0).all()  # exactly zero, every step.
      seen.append(sparsity.sparsity_of(params, names))
  # Masks are recomputed at steps 1, 3 and 5 (start, every 2, end) and held in between.
  updated = [max([u for u in (1, 3, 5) if u <= t], default=0) for t in range(8)]
  target = [float(sparsity.sparsity_at(u, 0.6, 1, 5)) for u in updated]
  assert target[3] == pytest.approx(0.6 * (1 - 0.5 ** 3))
  np.testing.assert_allclose(seen, target, atol=0.01)
  assert seen[0] == 0 and seen[-1] == pytest.approx(0.6, abs=0.01)


def test_quantization_aware_training_computes_with_the_rounded_weights():
  config = tiny_config(warmup_steps=0, lr_schedule="constant", **{"quantization.bits": 8})
  progs = programs.build(config, sharding.make_mesh(config, jax.devices()[:1]), 64)
  float_progs = programs.build(tiny_config(), sharding.make_mesh(config, jax.devices()[:1]), 64)
  state = progs.init_state(jax.random.key(0))
  ids = np.random.default_rng(0).integers(3, 64, (2, 16)).astype(np.int32)
  batch = {"inputs": ids, "targets": ids}
  rounded = quant.fake_quant_tree(state.params, progs.param_names, 8)
  with progs.context():
    got = progs.eval_step(state.params, progs.global_batch(batch))
    want = float_progs.eval_step(rounded, float_progs.global_batch(batch))
    plain = float_progs.eval_step(state.params, float_progs.global_batch(batch))
    before = jax.device_get(state.params)
    state, _ = progs.train_step(state, progs.global_batch(batch))
  np.testing.assert_allclose(got["nll_sum"], want["nll_sum"], rtol=1e-6)
  assert got["nll_sum"] != plain["nll_sum"]
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()),
                       jax.device_get(state.params), before)
  still = [jax.tree_util.keystr(p) for p, v in jax.tree_util.tree_flatten_with_path(moved)[0]
           if v == 0]
  assert not still, still  # the straight-through gradient reaches every weight.


def test_compressed_storage_round_trips_and_is_small():
  params, names = _params_and_names()
  masks = sparsity.magnitude_masks(params, names, 0.5)
  pruned = jax.tree.map(lambda x, m: jnp.where(m, x, 0.0), params, masks)
  for bits in (0, 8, 4):
    tree = quant.quantize_tree(pruned, names, bits) if bits else pruned
    arrays, spec = compressed.encode(tree, names)
    back = compressed.decode(arrays, spec)
    for path, how in spec["params"].items():
      want = compressed._flat(tree)[path]
      got = back[path]
      if isinstance(want, quant.QTensor):
        np.testing.assert_array_equal(got.dequantize(), want.dequantize())
      else:
        np.testing.assert_array_equal(got, want)
    enc = {p: (h["encoding"], h["sparse"]) for p, h in spec["params"].items()}
    kind = f"int{bits}" if bits else "dense"
    assert enc["mlp/wi"] == (kind, bits != 4)  # a pruned 4-bit kernel packs densely.
    assert enc["embedding"] == (kind, False) and enc["mlp/bi"] == ("dense", False)
  # At a real width the scales cost little: int8 is about a quarter of float32.
  big = {"wi": jnp.ones((256, 1024)), "bi": jnp.ones((1024,)), "emb": jnp.ones((4096, 256))}
  big_names = {"wi": P("embed", "mlp"), "bi": P("mlp"), "emb": P("vocab", "embed")}
  for bits, most in ((8, 0.26), (4, 0.135)):
    arrays, _ = compressed.encode(quant.quantize_tree(big, big_names, bits), big_names)
    assert compressed.stored_bytes(arrays) < most * sum(4 * x.size for x in big.values())


@pytest.mark.parametrize("field,value,words", [
    ("quantization.bits", 3, "quantization.bits"),
    ("quantization.activation_bits", 8, "needs quantization.bits"),
    ("pruning.sparsity", 1.5, "pruning.sparsity"),
    ("pruning.end_step", -1, "pruning.end_step"),
    ("pruning.structure", "rows", "pruning.structure"),
])
def test_bad_compression_fields_are_named(field, value, words):
  with pytest.raises(ConfigError, match=words):
    kinds.validate(tiny_config(**{field: value}))


def test_scanned_layers_are_pruned_layer_by_layer():
  w = jnp.asarray(np.random.default_rng(4).normal(size=(3, 8, 16)) *
                  np.array([0.01, 1.0, 100.0])[:, None, None], jnp.float32)
  names = {"wi": P("layers", "embed", "mlp")}
  for structure in ("none", "groups"):
    m = np.asarray(sparsity.magnitude_masks({"wi": w}, names, 0.5, "layer", structure)["wi"])
    np.testing.assert_allclose(m.mean(axis=(1, 2)), [0.5, 0.5, 0.5])
