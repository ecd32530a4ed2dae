"""The model family: positions, attention implementations, LM, classifier, ViT, logical names."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from transformer_jax.decode import lm as lm_decoding
from transformer_jax.decode.search import DecodeOptions
from transformer_jax.models import attention, layers
from transformer_jax.models.classifier import EncoderClassifier
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.models.transformer import EncoderDecoder, TransformerConfig
from transformer_jax.models.vit import VisionTransformer, patchify
from transformer_jax.parallel import sharding

CFG = TransformerConfig(vocab_size=30, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                        num_encoder_layers=2, num_decoder_layers=2, deterministic=True,
                        max_length=16, num_classes=3)
POSITIONS = ["sinusoidal", "learned", "rotary"]


def _init(model, *args, seed=0):
  return nn.meta.unbox(model.init(jax.random.key(seed), *args)["params"])


def _tokens(seed=0, shape=(2, 8)):
  return jnp.asarray(np.random.default_rng(seed).integers(2, 30, shape), jnp.int32)


# --------------------------------------------------------------------------- positions


@pytest.mark.parametrize("positions", POSITIONS)
def test_decoder_lm_future_tokens_do_not_change_earlier_logits(positions):
  model = DecoderLM(CFG.replace(positions=positions))
  tokens = _tokens()
  params = _init(model, tokens)
  apply = jax.jit(model.apply)
  base = apply({"params": params}, tokens)
  changed = apply({"params": params}, tokens.at[:, 4].set(29))
  np.testing.assert_allclose(base[:, :5], changed[:, :5], atol=1e-5)  # targets shift right.
  assert not np.allclose(base[:, 5], changed[:, 5], atol=1e-3)


def test_rotary_scores_depend_only_on_relative_positions():
  rng = np.random.default_rng(0)
  q_BLHK, k_BLHK = (jnp.asarray(rng.normal(size=(2, 6, 2, 8)), jnp.float32) for _ in range(2))
  positions_BL = jnp.broadcast_to(jnp.arange(6), (2, 6))

  def rotary_scores(shift):
    q = layers.rotary_embedding(q_BLHK, positions_BL + shift)
    k = layers.rotary_embedding(k_BLHK, positions_BL + shift)
    return jnp.einsum("BLHK,BSHK->BHLS", q, k)

  def sinusoidal_scores(shift):  # absolute: positions added to the vectors.
    enc = layers.sinusoidal_positions(positions_BL + shift, 8)[:, :, None]
    return jnp.einsum("BLHK,BSHK->BHLS", q_BLHK + enc, k_BLHK + enc)

  np.testing.assert_allclose(rotary_scores(0), rotary_scores(7), atol=1e-4)
  assert not np.allclose(rotary_scores(0), jnp.einsum("BLHK,BSHK->BHLS", q_BLHK, k_BLHK))
  assert not np.allclose(sinusoidal_scores(0), sinusoidal_scores(7), atol=1e-2)
  # Rotation keeps norms.
  rotated_BLHK = layers.rotary_embedding(q_BLHK, positions_BL)
  np.testing.assert_allclose(jnp.linalg.norm(rotated_BLHK, axis=-1),
                             jnp.linalg.norm(q_BLHK, axis=-1), rtol=1e-5)


def test_rotary_rotates_each_pair_by_its_angle():
  """The one-pass form equals RoPE written out: pair (x[i], x[i + K/2]) at position p
  turned by the angle p * 10000**(-2i/K), in numpy float64."""
  rng = np.random.default_rng(1)
  x_BLHK = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
  positions_BL = rng.integers(0, 60, (2, 5))
  half = 4
  angle_BLF = positions_BL[..., None] * 1e4 ** (-2 * np.arange(half) / 8)
  cos_BL1F, sin_BL1F = np.cos(angle_BLF)[:, :, None], np.sin(angle_BLF)[:, :, None]
  x1, x2 = x_BLHK[..., :half].astype(np.float64), x_BLHK[..., half:].astype(np.float64)
  expected = np.concatenate([x1 * cos_BL1F - x2 * sin_BL1F, x1 * sin_BL1F + x2 * cos_BL1F], -1)
  got = layers.rotary_embedding(jnp.asarray(x_BLHK), jnp.asarray(positions_BL))
  np.testing.assert_allclose(np.asarray(got), expected, atol=2e-5)


@pytest.mark.parametrize("positions,invariant", [("rotary", True), ("sinusoidal", False)])
def test_lm_logits_under_shifted_positions(positions, invariant):
  model = DecoderLM(CFG.replace(positions=positions))
  tokens = _tokens()
  params = _init(model, tokens)
  pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
  base = model.apply({"params": params}, tokens, pos)
  shifted = model.apply({"params": params}, tokens, pos + 5)
  assert np.allclose(base, shifted, atol=1e-4) == invariant


def test_learned_positions_table_and_length_limit():
  model = DecoderLM(CFG.replace(positions="learned", max_length=8))
  params = _init(model, _tokens())
  assert params["decoder"]["pos_embedding"].shape == (8, 16)
  with pytest.raises(ValueError, match="max_length=8"):
    model.init(jax.random.key(0), _tokens(shape=(1, 9)))
  ed = EncoderDecoder(CFG.replace(positions="learned"))
  ed_params = _init(ed, _tokens(), _tokens())
  assert "pos_embedding" in ed_params["encoder"] and "pos_embedding" in ed_params["decoder"]
  with pytest.raises(ValueError, match="positions"):
    CFG.replace(positions="alibi")


def test_untied_lm_output():
  model = DecoderLM(CFG.replace(logits_via_embedding=False))
  params = _init(model, _tokens())
  assert params["decoder"]["logits"].shape == (16, 30)
  assert model.apply({"params": params}, _tokens()).shape == (2, 8, 30)


@pytest.mark.parametrize("variant", [{"positions": "rotary"}, {"positions": "learned"},
                                     {"positions": "rotary", "attention": "dot_product"}])
def test_lm_cached_greedy_equals_uncached(variant):
  cfg = CFG.replace(vocab_size=12, **variant)
  params = _init(DecoderLM(cfg), _tokens(shape=(2, 6)) % 12, seed=4)
  prompts = np.array([[5, 6, 7], [8, 0, 0], [9, 10, 0]], np.int32)
  run = functools.partial(lm_decoding.generate, config=cfg, options=DecodeOptions("greedy"),
                          max_length=10)
  cached = np.asarray(jax.jit(functools.partial(run, cached=True))(params, prompts, None))
  uncached = np.asarray(jax.jit(functools.partial(run, cached=False))(params, prompts, None))
  np.testing.assert_array_equal(cached, uncached)
  np.testing.assert_array_equal(cached[:, :3] * (prompts > 0), prompts)


# --------------------------------------------------------------------------- attention


def test_dot_product_attention_equals_xla_on_valid_positions():
  rng = np.random.default_rng(1)
  x_BLD = jnp.asarray(rng.normal(size=(2, 6, 16)), jnp.float32)
  valid_BL = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  mask = layers.padding_mask(valid_BL, valid_BL) & layers.causal_mask(6)
  pos_BL = jnp.broadcast_to(jnp.arange(6), (2, 6))
  outs = {}
  for impl in ("xla", "dot_product"):
    attn = attention.MultiHeadAttention(num_heads=2, head_dim=8, rotary=True, attention=impl)
    params = _init(attn, x_BLD, x_BLD, mask, pos_BL, pos_BL)
    outs[impl] = attn.apply({"params": params}, x_BLD, x_BLD, mask, pos_BL, pos_BL)
  np.testing.assert_allclose(outs["xla"] * valid_BL[..., None],
                             outs["dot_product"] * valid_BL[..., None], atol=1e-5)
  # Whole models, same parameters.
  ids = _tokens().at[0, 5:].set(0)
  for model_class, cfg in ((DecoderLM, CFG.replace(positions="rotary")),
                           (EncoderClassifier, CFG.replace(pooling="mean"))):
    params = _init(model_class(cfg), ids)
    want = model_class(cfg).apply({"params": params}, ids)
    got = model_class(cfg.replace(attention="dot_product")).apply({"params": params}, ids)
    np.testing.assert_allclose(want, got, atol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "dot_product"])
def test_heads_first_layout_computes_the_same_attention(impl):
  """Keys and values laid out [B, H, K, S] / [B, H, S, K] (as in decode mode) give the
  default layout's output and gradients: cross-attention shapes (S != L), a padding
  mask, rotary positions."""
  rng = np.random.default_rng(2)
  q_BLD = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
  kv_BSD = jnp.asarray(rng.normal(size=(2, 7, 16)), jnp.float32)
  mask = layers.padding_mask(jnp.ones((2, 5), bool),
                             jnp.array([[1] * 7, [1] * 4 + [0] * 3], bool))
  q_pos, kv_pos = jnp.broadcast_to(jnp.arange(5), (2, 5)), jnp.broadcast_to(jnp.arange(7), (2, 7))
  make = functools.partial(attention.MultiHeadAttention, num_heads=2, head_dim=8, rotary=True,
                           attention=impl)
  params = _init(make(), q_BLD, kv_BSD, mask, q_pos, kv_pos)

  def loss(p, heads_first):
    out = make(heads_first=heads_first).apply({"params": p}, q_BLD, kv_BSD, mask, q_pos, kv_pos)
    return jnp.sum(out * jnp.arange(16.0)), out

  (_, want), d_want = jax.value_and_grad(loss, has_aux=True)(params, False)
  (_, got), d_got = jax.value_and_grad(loss, has_aux=True)(params, True)
  np.testing.assert_allclose(got, want, atol=1e-5)
  for a, b in zip(jax.tree.leaves(d_got), jax.tree.leaves(d_want)):
    np.testing.assert_allclose(a, b, atol=1e-4)
  # Dropout on the attention weights draws the same mask in either layout.
  drop = dict(dropout_rate=0.3, deterministic=False, attention="xla")
  rngs = {"dropout": jax.random.key(3)}
  want = make(**drop).apply({"params": params}, q_BLD, kv_BSD, mask, q_pos, kv_pos, rngs=rngs)
  got = make(heads_first=True, **drop).apply({"params": params}, q_BLD, kv_BSD, mask, q_pos,
                                             kv_pos, rngs=rngs)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_dot_product_attention_refuses_attention_dropout():
  model = DecoderLM(CFG.replace(attention="dot_product", deterministic=False,
                                attention_dropout_rate=0.1))
  with pytest.raises(ValueError, match="attention_dropout_rate"):
    model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, _tokens())


# --------------------------------------------------------------------------- classifier, ViT


@pytest.mark.parametrize("pooling,positions", [("cls", "learned"), ("mean", "sinusoidal"),
                                               ("cls", "rotary"), ("mean", "rotary")])
def test_classifier_ignores_padding_and_uses_token_types(pooling, positions):
  model = EncoderClassifier(CFG.replace(pooling=pooling, positions=positions))
  ids = _tokens(shape=(2, 6)).at[1, 4:].set(0)
  params = _init(model, ids)
  apply = jax.jit(model.apply)
  logits = apply({"params": params}, ids)
  assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  padded = jnp.pad(ids, ((0, 0), (0, 3)))
  np.testing.assert_allclose(apply({"params": params}, padded), logits, atol=1e-5)
  types = jnp.zeros_like(ids).at[:, 3:].set(1)
  assert not np.allclose(apply({"params": params}, ids, types), logits, atol=1e-4)
  assert ("pooler" in params) == (pooling == "cls")


def test_vit_patches_positions_and_logits():
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 28, 28, 1)), jnp.float32)
  patches = patchify(images, 4)
  assert patches.shape == (2, 49, 16)
  np.testing.assert_array_equal(patches[:, 1], images[:, :4, 4:8, 0].reshape(2, 16))
  for pooling, rows in (("cls", 50), ("mean", 49)):
    model = VisionTransformer(CFG.replace(pooling=pooling))
    params = _init(model, images)
    assert params["patch_embedding"].shape == (16, 16)
    assert params["pos_embedding"].shape == (rows, 16)
    assert ("cls" in params) == (pooling == "cls")
    logits = model.apply({"params": params}, images)
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  with pytest.raises(ValueError, match=r"30x28.*patch_size=4"):
    model.init(jax.random.key(0), jnp.ones((1, 30, 28, 1)))


# --------------------------------------------------------------------------- logical names


def _models():
  ids = jnp.ones((4, 6), jnp.int32)
  return {
      "classifier": (EncoderClassifier(CFG.replace(positions="learned")), (ids,)),
      "vit": (VisionTransformer(CFG), (jnp.ones((4, 8, 8, 3)),)),
      "lm": (DecoderLM(CFG.replace(positions="learned", logits_via_embedding=False)), (ids,)),
  }


def _axes(spec):
  """A partition spec as a tuple without trailing Nones (P('a', None) reads as P('a'))."""
  axes = tuple(spec)
  while axes and axes[-1] is None:
    axes = axes[:-1]
  return axes


@pytest.mark.parametrize("kind", ["classifier", "vit", "lm"])
def test_parameters_are_named_and_sharded_by_the_rules(kind):
  model, args = _models()[kind]
  init = lambda rng: model.init(rng, *args)["params"]  # noqa: E731
  boxed = jax.eval_shape(init, jax.random.key(0))
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim
                        for x in leaves)

  rules = sharding.RULE_PRESETS["fsdp_tensor"]
  mesh = Mesh(np.asarray(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
  specs = nn.get_partition_spec(boxed)
  params = sharding.init_sharded(init, nn.logical_to_mesh_sharding(specs, mesh, rules), mesh,
                                 rules, jax.random.key(0))
  # Every array is born with the sharding its logical names map to.
  want = jax.tree.map(lambda s: _axes(nn.logical_to_mesh_axes(s, rules)), specs,
                      is_leaf=lambda x: isinstance(x, P))
  got = jax.tree.map(lambda x: _axes(x.sharding.spec), params)
  assert got == want

  stack = got["decoder"] if kind == "lm" else got
  assert stack["layer_0"]["mlp"]["wi"] == ("fsdp", "tensor")
  assert stack["layer_0"]["self_attention"]["query"] == ("fsdp", "tensor")
  assert stack["pos_embedding"] == (None, "fsdp")  # rows unsharded.
  if kind == "lm":
    assert stack["logits"] == ("fsdp", "tensor")
  else:
    assert got["head"]["kernel"] == ("fsdp",) and got["head"]["bias"] == ()  # classes whole.
  if kind == "vit":
    assert got["patch_embedding"] == (None, "fsdp")
  if kind == "classifier":
    assert got["token_type_embedding"] == (None, "fsdp")
    assert got["pooler"]["kernel"] == ("fsdp", "tensor")
