"""The encoder-decoder: masks, packing isolation, causality, names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.models import layers
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.models.transformer import EncoderDecoder, TransformerConfig, shift_right

CFG = TransformerConfig(vocab_size=50, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64,
                        num_encoder_layers=2, num_decoder_layers=2, deterministic=True)


def _init(cfg=CFG, seed=0, shape=(2, 12)):
  model = EncoderDecoder(cfg)
  ids = jnp.ones(shape, jnp.int32)
  return model, nn.meta.unbox(model.init(jax.random.key(seed), ids, ids)["params"])


def test_masks():
  causal = layers.causal_mask(4)[0, 0]
  np.testing.assert_array_equal(causal, np.tril(np.ones((4, 4), bool)))
  valid = jnp.array([[True, True, False]])
  pad = layers.padding_mask(valid, valid)[0, 0]
  np.testing.assert_array_equal(pad, [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
  seg = jnp.array([[1, 1, 2, 0]])
  m = layers.segment_mask(seg, seg)[0, 0]
  assert m[0, 1] and not m[1, 2] and m[2, 2] and not m[0, 2]


def test_shift_right_restarts_each_packed_example():
  targets = jnp.array([[5, 6, 1, 7, 8, 1, 0]])
  segments = jnp.array([[1, 1, 1, 2, 2, 2, 0]])
  np.testing.assert_array_equal(shift_right(targets, segments), [[0, 5, 6, 0, 7, 8, 0]])
  np.testing.assert_array_equal(shift_right(targets), [[0, 5, 6, 1, 7, 8, 1]])


def test_packed_examples_never_see_each_other():
  model, params = _init(shape=(1, 12))
  apply = jax.jit(model.apply)
  rng = np.random.default_rng(0)

  def packed(first_src, first_tgt):
    # Row: example A (segment 1) then example B (segment 2), then padding.
    src = np.zeros((1, 12), np.int32)
    tgt = np.zeros((1, 12), np.int32)
    src[0, :4], src[0, 4:9] = first_src, [11, 12, 13, 14, 1]
    tgt[0, :5], tgt[0, 5:9] = first_tgt, [21, 22, 23, 1]
    src_seg = np.array([[1] * 4 + [2] * 5 + [0] * 3])
    tgt_seg = np.array([[1] * 5 + [2] * 4 + [0] * 3])
    src_pos = np.array([list(range(4)) + list(range(5)) + [0] * 3])
    tgt_pos = np.array([list(range(5)) + list(range(4)) + [0] * 3])
    return apply({"params": params}, src, tgt, src_pos, tgt_pos, src_seg, tgt_seg)

  base = packed([3, 4, 5, 1], [6, 7, 8, 9, 1])
  other = packed(rng.integers(3, 50, 3).tolist() + [1], rng.integers(3, 50, 4).tolist() + [1])
  # Example B's logits are unchanged, example A's change.
  np.testing.assert_allclose(base[0, 5:9], other[0, 5:9], atol=1e-5)
  assert not np.allclose(base[0, :5], other[0, :5], atol=1e-3)
  # And B alone, unpacked, gives the same logits as B packed after A.
  alone = jax.jit(model.apply)({"params": params}, jnp.array([[11, 12, 13, 14, 1]]),
                      jnp.array([[21, 22, 23, 1]]))
  np.testing.assert_allclose(alone[0], base[0, 5:9], atol=1e-5)


def test_future_targets_do_not_change_past_logits():
  model, params = _init()
  src = jnp.array([[5, 6, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0]] * 2)
  tgt = jnp.array([[8, 9, 10, 11, 12, 13, 1, 0, 0, 0, 0, 0]] * 2)
  base = model.apply({"params": params}, src, tgt)
  changed = model.apply({"params": params}, src, tgt.at[:, 4].set(30))
  np.testing.assert_allclose(base[:, :5], changed[:, :5], atol=1e-5)
  assert not np.allclose(base[:, 5], changed[:, 5], atol=1e-3)


def test_every_parameter_has_logical_names_of_its_rank():
  model = EncoderDecoder(CFG.replace(logits_via_embedding=False))
  ids = jnp.ones((1, 4), jnp.int32)
  boxed = model.init(jax.random.key(0), ids, ids)["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  for x in leaves:
    assert len(x.names) == x.value.ndim


def test_post_ln_and_bfloat16_variants():
  src = jnp.array([[5, 6, 7, 1]])
  tgt = jnp.array([[8, 9, 1, 0]])
  _, pre = _init(shape=(1, 4))
  post_model, post = _init(CFG.replace(norm_position="post"), shape=(1, 4))
  assert "final_norm" in pre["encoder"] and "final_norm" not in post["encoder"]
  bf16 = EncoderDecoder(CFG.replace(dtype=jnp.bfloat16))
  logits = bf16.apply({"params": pre}, src, tgt)
  assert logits.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(pre))
  f32 = EncoderDecoder(CFG).apply({"params": pre}, src, tgt)
  np.testing.assert_allclose(logits, f32, atol=0.1)
  assert post_model.apply({"params": post}, src, tgt).shape == (1, 4, 50)


def test_dropout_is_active_only_in_training():
  model, params = _init()
  train = EncoderDecoder(CFG.replace(deterministic=False, dropout_rate=0.3))
  src = jnp.array([[5, 6, 7, 1] + [0] * 8] * 2)
  apply = jax.jit(train.apply)
  a = apply({"params": params}, src, src, rngs={"dropout": jax.random.key(1)})
  b = apply({"params": params}, src, src, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(a, b)
  eval_apply = jax.jit(model.apply)
  np.testing.assert_allclose(eval_apply({"params": params}, src, src),
                             eval_apply({"params": params}, src, src))


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_changes_memory_not_gradients(remat):
  model, params = _init()
  remat_model = EncoderDecoder(CFG.replace(remat=remat))
  rng = np.random.default_rng(0)
  src = jnp.asarray(rng.integers(2, 50, (2, 12)))
  tgt = jnp.asarray(rng.integers(2, 50, (2, 12)))

  def loss(m):
    return lambda p: m.apply({"params": p}, src, tgt).mean()

  want = jax.grad(loss(model))(params)
  got = jax.jit(jax.grad(loss(remat_model)))(params)  # same parameter tree.
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_decoder_lm_is_causal_and_packs():
  model = DecoderLM(CFG)
  tokens = jnp.array([[5, 6, 7, 8, 9, 10, 11, 1]])
  params = nn.meta.unbox(model.init(jax.random.key(0), tokens)["params"])
  assert "encoder" not in params and "cross_attention" not in params["decoder"]["layer_0"]
  base = model.apply({"params": params}, tokens)
  changed = model.apply({"params": params}, tokens.at[:, 4].set(30))
  np.testing.assert_allclose(base[:, :5], changed[:, :5], atol=1e-5)  # targets shift right.
  assert not np.allclose(base[:, 5], changed[:, 5], atol=1e-3)
  # Two packed examples: the second one's logits equal it alone.
  segs = jnp.array([[1, 1, 1, 2, 2, 2, 2, 2]])
  pos = jnp.array([[0, 1, 2, 0, 1, 2, 3, 4]])
  packed = model.apply({"params": params}, tokens, pos, segs)
  alone = model.apply({"params": params}, tokens[:, 3:])
  np.testing.assert_allclose(packed[:, 3:], alone, atol=1e-5)
