"""LoRA adapters (adapters/lora.py) in the programs: the adapted model starts as its
base, computes with W + (alpha/rank) A B, trains only the adapters, keeps a QLoRA base
as integers; config.lora's bad patterns fail before anything compiles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import kinds
from transformer_jax.adapters import lora
from transformer_jax.compress import quant
from transformer_jax.errors import ConfigError
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

from conftest import tiny_config
from test_steps import _batch


def _config(**overrides):
  return tiny_config(**{"lora.rank": 4, "lora.alpha": 8.0, "learning_rate": 1e-2,
                        "warmup_steps": 0, "lr_schedule": "constant", **overrides})


def _programs(config):
  return programs.build(config, sharding.make_mesh(config), 64)


def _flat(tree):
  return {k: np.asarray(v) for k, v in lora.flat(jax.device_get(tree)).items()}


def test_with_b_zero_the_adapted_model_is_its_base():
  config = _config()
  progs = _programs(config)
  base = progs.init_params(jax.random.key(1))
  state = progs.adapt(base, jax.random.key(1))
  plain = programs.build(tiny_config(), progs.mesh, 64)
  batch = plain.global_batch(_batch(config))
  with progs.context():
    adapted = jax.device_get(progs.eval_step(progs.model_params(state), batch))
    reference = jax.device_get(plain.eval_step(base, batch))
  for key in reference:
    np.testing.assert_allclose(adapted[key], reference[key], rtol=1e-6, err_msg=key)
  adapters = lora.flat_adapters(jax.device_get(state.params))
  # Encoder: self-attention's 4 projections + the MLP's 2; decoder: 4 + 4 (cross) + 2.
  assert len(adapters) == 16
  assert all(not np.any(ab["b"]) and np.any(ab["a"]) for ab in adapters.values())


def test_the_merge_is_w_plus_scaled_a_times_b():
  config = _config(**{"model.scan_layers": True, "model.num_encoder_layers": 2})
  progs = _programs(config)
  state = progs.init_state(jax.random.key(0))
  rng = np.random.default_rng(0)
  trainable = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                           jax.device_get(state.params))
  frozen = jax.device_get(state.frozen)
  names = lora.names_by_path(progs.param_names)
  merged = _flat(lora.merge(frozen, trainable, 2.0, names))
  base = _flat(frozen)
  adapters = lora.flat_adapters(trainable)
  out = "encoder/layers/self_attention/out"  # [layers, heads, kv, embed]: two input axes.
  query = "encoder/layers/self_attention/query"  # [layers, embed, heads, kv]
  assert out in adapters and query in adapters
  for path, n_in in ((out, 2), (query, 1)):
    w, a, b = base[path], adapters[path]["a"], adapters[path]["b"]
    for layer in range(w.shape[0]):
      a2 = a[layer].reshape(int(np.prod(w.shape[1:1 + n_in])), -1)
      b2 = b[layer].reshape(a2.shape[1], -1)
      want = w[layer] + 2.0 * (a2 @ b2).reshape(w.shape[1:])
      np.testing.assert_allclose(merged[path][layer], want, rtol=1e-5, atol=1e-5)
  untouched = "encoder/layers/mlp/bi"
  np.testing.assert_array_equal(merged[untouched], base[untouched])


def test_only_adapters_and_train_also_train():
  config = _config(**{"lora.train_also": ("encoder/final_norm/",)})
  progs = _programs(config)
  state = progs.init_state(jax.random.key(0))
  frozen_before = _flat(state.frozen)
  params_before = _flat(state.params)
  assert "encoder/final_norm/scale" not in frozen_before
  assert "full/encoder/final_norm/scale" in params_before
  # Optimizer state: AdamW's two moments for the trainable values, nothing for the base.
  trainable_values = lora.count(state.params)[0]
  assert lora.count(state.opt_state)[0] <= 2 * trainable_values + 4
  assert trainable_values < 0.2 * lora.count(state.frozen)[0]
  batch = progs.global_batch(_batch(config))
  with progs.context():
    losses = []
    for _ in range(8):
      state, m = progs.train_step(state, batch)
      losses.append(float(m["loss_sum"] / m["weight_sum"]))
  assert losses[-1] < losses[0]
  for key, value in _flat(state.frozen).items():
    np.testing.assert_array_equal(value, frozen_before[key], err_msg=key)
  after = _flat(state.params)
  assert np.any(after["lora/encoder/layer_0/self_attention/query/b"] != 0)
  assert np.any(after["full/encoder/final_norm/scale"]
                != params_before["full/encoder/final_norm/scale"])


@pytest.mark.parametrize("bits,quant_type", [(8, "int"), (4, "int"), (4, "nf4")])
def test_a_qlora_base_stays_integer(bits, quant_type):
  config = _config(**{"lora.base_bits": bits, "lora.base_quant_type": quant_type})
  progs = _programs(config)
  state = progs.init_state(jax.random.key(0))
  batch = progs.global_batch(_batch(config))
  with progs.context():
    state, _ = progs.train_step(state, batch)
    state, _ = progs.train_step(state, batch)
  is_q = lambda x: isinstance(x, quant.QTensor)  # noqa: E731
  qs = [x for x in jax.tree.leaves(state.frozen, is_leaf=is_q) if is_q(x)]
  kernels = [k for k, v in lora.flat(state.frozen).items() if is_q(v)]
  assert "encoder/layer_0/self_attention/query" in kernels
  assert qs and all(q.qvalue.dtype == (jnp.int8 if bits == 8 else jnp.uint8) for q in qs)
  for q in qs:  # one byte a value (int8), or two values a byte (int4, NF4)
    n = int(np.prod(q.shape))
    if quant_type == "nf4":  # a scale per 64 values, the values padded to whole blocks.
      assert q.block == 64 and q.scale.shape == (-(-n // 64),)
      assert q.qvalue.size == q.scale.size * 32
    else:
      assert q.block == 0 and q.qvalue.size == (n if bits == 8 else (n + 1) // 2)
  floats = {k: v for k, v in lora.flat(state.frozen).items() if not is_q(v)}
  assert floats and all(v.ndim == 1 for v in floats.values()), sorted(floats)  # norms, biases


def test_patterns_that_match_nothing_name_the_pattern_and_nearby_paths():
  with pytest.raises(ConfigError, match=r"'self_atention/query'.*nearby paths:.*self_attention"):
    _programs(_config(**{"lora.targets": ("self_atention/query",)}))
  with pytest.raises(ConfigError, match=r"names=embed,nope.*logical names here:.*embed,mlp"):
    _programs(_config(**{"lora.targets": ("names=embed,nope",)}))
  with pytest.raises(ConfigError, match=r"mlp/bi.*not a kernel"):
    _programs(_config(**{"lora.targets": ("mlp/bi$",)}))
  with pytest.raises(ConfigError, match=r"both targets and train_also"):
    _programs(_config(**{"lora.train_also": ("mlp/wi$",)}))


def test_logical_name_patterns_choose_kernels():
  config = _config(**{"lora.targets": ("names=embed,mlp",)})
  progs = _programs(config)
  state = jax.eval_shape(progs.init_fn, jax.random.key(0))
  paths = set(lora.flat_adapters(state.params))
  assert paths and all(p.endswith("mlp/wi") for p in paths)


@pytest.mark.parametrize("field,value,match", [
    ("lora.rank", -1, "integer >= 0"), ("lora.base_bits", 4, "needs lora.rank"),
    ("lora.base_quant_type", "fp4", "one of"), ("lora.base_quant_type", "nf4", "base_bits=4"),
    ("lora.dropout", 1.0, r"\[0, 1\)"), ("lora.targets", ("mlp(",), "not a regex"),
    ("lora.targets", (), "at least one")])
def test_bad_lora_fields_are_config_errors(field, value, match):
  overrides = {field: value} if field == "lora.base_bits" else {"lora.rank": 4, field: value}
  with pytest.raises(ConfigError, match=f"config.{field}.*{match}"):
    kinds.validate(tiny_config(**overrides), 8)


def test_lora_does_not_go_with_quantization_aware_training():
  with pytest.raises(ConfigError, match="quantization.bits.*lora.rank"):
    kinds.validate(_config(**{"quantization.bits": 8}), 8)


def test_the_fingerprint_sees_one_changed_value_and_not_the_sharding():
  config = _config(**{"mesh.data": 2, "mesh.fsdp": 4, "logical_axis_rules": "fsdp"})
  progs = _programs(config)
  params = progs.init_params(jax.random.key(0))
  on_host = jax.device_get(params)
  assert lora.fingerprint(params) == lora.fingerprint(on_host)
  path = "encoder/layer_0/mlp/wi"
  flat = lora.flat(on_host)
  flat[path] = flat[path].copy()
  flat[path][3, 5] = np.nextafter(flat[path][3, 5], np.float32(1))
  assert lora.fingerprint(lora.nested(flat)) != lora.fingerprint(on_host)


@pytest.mark.parametrize("kind", ["decoder_lm", "encoder_classifier", "vit", "speech_to_text"])
def test_every_kind_takes_the_default_targets(kind):
  """The default patterns find attention and MLP kernels in each kind, and the adapted train
  step traces (shapes through the merge) with only the adapters trainable."""
  config = _config(**{"model.kind": kind, "model.num_classes": 3})
  progs = programs.build(config, sharding.make_mesh(config), 0 if kind == "vit" else 64, 3)
  state = jax.eval_shape(progs.init_fn, jax.random.key(0))
  paths = set(lora.flat_adapters(state.params))
  assert any(p.endswith("attention/query") for p in paths), sorted(paths)
  assert any(p.endswith("mlp/wo") for p in paths), sorted(paths)
  assert set(lora.flat(state.params)) == {f"lora/{p}/{x}" for p in paths for x in "ab"}
  with progs.context():
    new_state, metrics = jax.eval_shape(progs.train_step, progs.abstract_state,
                                        progs.batch_specs())
  assert jax.tree.structure(new_state) == jax.tree.structure(progs.abstract_state)
  assert "loss_sum" in metrics


def test_adapters_shard_like_their_kernels():
  config = _config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  progs = _programs(config)
  shardings = lora.flat(progs.state_shardings.params)
  frozen = lora.flat(progs.state_shardings.frozen)
  query = "encoder/layer_0/self_attention/query"  # [embed, heads, kv]
  assert shardings[f"lora/{query}/a"].spec[0] == frozen[query].spec[0] == "fsdp"
  assert shardings[f"lora/{query}/a"].spec[1] is None  # the rank axis: not split.
  assert tuple(shardings[f"lora/{query}/b"].spec)[1:] == tuple(frozen[query].spec)[1:]
  assert frozen[query].spec[1] == "tensor"


def test_the_memory_check_counts_the_frozen_base_apart():
  from transformer_jax.parallel import memory  # pylint: disable=import-outside-toplevel
  config = _config()
  progs = _programs(config)
  with progs.context():
    compiled = progs.train_step.lower(progs.abstract_state, progs.batch_specs()).compile()
  state = memory.per_device_bytes(progs.abstract_state)
  frozen = memory.per_device_bytes(progs.abstract_state.frozen)
  assert 0 < frozen < state
  with pytest.raises(memory.OutOfMemoryError,
                     match=r"trainable parameters and optimizer state [\d.]+ KiB, frozen base "
                           r"[\d.]+ KiB.*config.lora.base_bits=4 \(now 0\)"):
    memory.check_fits(memory.Footprint.of(compiled), state, (1, "a tiny device"), config,
                      frozen_bytes=frozen)
