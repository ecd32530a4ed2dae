"""The speech-to-text model: its front-end, its frame mask, and decoding over its KV cache."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer_jax import kinds
from transformer_jax.decode import search as decoding
from transformer_jax.models import speech
from transformer_jax.models.transformer import TransformerConfig

CFG = TransformerConfig(vocab_size=48, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                        num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0,
                        attention_dropout_rate=0.0, deterministic=True, num_mel_bins=8)


def _features(rng, batch, frames, valid_frames):
  """[B, T, F + 1]: random features, the last channel 1 on each row's valid frames."""
  x = rng.standard_normal((batch, frames, CFG.num_mel_bins + 1)).astype(np.float32)
  x[..., -1] = (np.arange(frames)[None, :] < np.asarray(valid_frames)[:, None])
  return jnp.asarray(x)


@pytest.mark.parametrize("stride", [1, 2])
def test_the_front_end_convolution_is_xlas(stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 9, 5)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 5, 4)), jnp.float32)
  ref = jax.lax.conv_general_dilated(x, w, (stride,), [(1, 1)],
                                     dimension_numbers=("NWC", "WIO", "NWC"))
  np.testing.assert_allclose(speech.conv1d(x, w, stride), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_the_2d_front_end_convolution_is_xlas(stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 9, 7, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.float32)
  ref = jax.lax.conv_general_dilated(x, w, (stride, stride), [(1, 1), (1, 1)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ones = jnp.ones((2, 9), jnp.int32)
  np.testing.assert_allclose(speech.conv2d(x, w, stride, ones), ref, rtol=1e-5, atol=1e-5)
  # Two utterances in one row: each is convolved as if alone.
  segments = jnp.asarray([[1] * 4 + [2] * 5] * 2)
  packed = speech.conv2d(x, w, stride, segments)
  first = jax.lax.conv_general_dilated(x[:, :4], w, (stride, stride), [(1, 1), (1, 1)],
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(packed[:, :first.shape[1]], first, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("subsample,channels", [(2, 0), (4, 0), (4, 4)])
def test_padding_frames_change_nothing(subsample, channels):
  cfg = CFG.replace(subsample=subsample, frontend_channels=channels)
  model = speech.SpeechToText(cfg)
  rng = np.random.default_rng(1)
  short = _features(rng, 1, 24, [24])
  padded = jnp.concatenate([short, _features(rng, 1, 16, [0])], axis=1)  # 16 padding frames.
  targets = jnp.asarray([[5, 9, 2, 1, 0, 0]], jnp.int32)
  params = model.init(jax.random.key(0), padded, targets)["params"]
  np.testing.assert_allclose(model.apply({"params": params}, short, targets),
                             model.apply({"params": params}, padded, targets), atol=2e-5)
  valid = speech.SpeechToText.source_valid(padded, cfg)
  assert valid.shape == (1, 40 // subsample) and int(valid.sum()) == 24 // subsample
  names = nn.get_partition_spec(
      jax.eval_shape(lambda: model.init(jax.random.key(0), padded, targets)["params"]))
  encoder = names["encoder"]
  if channels:
    assert tuple(encoder["conv2d_1"]) == ("conv_window", "conv_freq_window", "conv_in",
                                          "conv_out")
    assert nn.unbox(params)["encoder"]["frontend_out"].shape == (2 * channels, CFG.emb_dim)
  else:
    assert tuple(encoder["conv_0"]) == ("conv_window", "mel", "embed")
  assert all(len(spec) == leaf.ndim for spec, leaf in zip(
      jax.tree.leaves(names, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)),
      jax.tree.leaves(params)))


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_cached_decoding_equals_recomputing(method):
  model = speech.SpeechToText(CFG)
  rng = np.random.default_rng(2)
  features = _features(rng, 3, 20, [20, 13, 6])
  params = model.init(jax.random.key(3), features, jnp.ones((3, 7), jnp.int32))["params"]
  options = decoding.DecodeOptions(method=method, beam_size=3)
  out = {cached: np.asarray(jax.jit(lambda p, f, c=cached: decoding.transcribe(
      p, f, None, config=CFG, options=options, max_length=7, vocab_limit=40, cached=c))(
          params, features)) for cached in (True, False)}
  np.testing.assert_array_equal(out[True], out[False])
  assert out[True].shape == (3, 7) and (out[True] < 40).all()
  # Greedy is the argmax of the model's own logits (over ids 1..39: never padding, never
  # beyond the vocabulary), fed back token by token.
  if method == "greedy":
    ids = out[True][:1]
    logits = model.apply({"params": params}, features[:1], jnp.asarray(ids))
    first_eos = list(ids[0]).index(1) if 1 in ids[0] else ids.shape[1] - 1
    np.testing.assert_array_equal(
        1 + np.argmax(np.asarray(logits[0, :first_eos + 1, 1:40]), -1), ids[0, :first_eos + 1])


@pytest.mark.parametrize("channels", [0, 4])
def test_a_packed_row_scores_each_utterance_as_if_alone(channels):
  cfg = CFG.replace(subsample=4, frontend_channels=channels)
  model = speech.SpeechToText(cfg)
  rng = np.random.default_rng(4)
  a, b = _features(rng, 1, 12, [12]), _features(rng, 1, 16, [16])
  ta, tb = np.asarray([[5, 9, 1]], np.int32), np.asarray([[7, 3, 8, 1]], np.int32)
  # One row: a (segment 1), b (segment 2), 4 padding frames; transcripts likewise.
  packed = jnp.concatenate([a, b.at[..., -1].set(2.0), jnp.zeros((1, 4, CFG.num_mel_bins + 1))],
                           axis=1)
  targets = np.concatenate([ta, tb, [[0]]], axis=1)
  segments = np.asarray([[1, 1, 1, 2, 2, 2, 2, 0]], np.int32)
  positions = np.asarray([[0, 1, 2, 0, 1, 2, 3, 0]], np.int32)
  params = model.init(jax.random.key(0), packed, jnp.asarray(targets))["params"]
  logits = model.apply({"params": params}, packed, jnp.asarray(targets), jnp.asarray(positions),
                       jnp.asarray(segments))
  alone_a = model.apply({"params": params}, a, jnp.asarray(ta))
  alone_b = model.apply({"params": params}, b, jnp.asarray(tb))
  np.testing.assert_allclose(logits[:, :3], alone_a, atol=2e-5)
  np.testing.assert_allclose(logits[:, 3:7], alone_b, atol=2e-5)
  np.testing.assert_array_equal(speech.segment_positions(jnp.asarray([[1, 1, 2, 2, 2, 0]])),
                                [[0, 1, 0, 1, 2, 0]])


def test_the_ctc_head_adds_its_weighted_loss_and_changes_no_logit():
  cfg = CFG.replace(subsample=4, ctc_weight=0.3)
  model = speech.SpeechToText(cfg)
  rng = np.random.default_rng(5)
  features = _features(rng, 2, 32, [32, 0])  # the second row is padding.
  targets = jnp.asarray([[5, 9, 2, 1], [0, 0, 0, 0]], jnp.int32)
  params = model.init(jax.random.key(0), features, targets)["params"]
  out = model.apply({"params": params}, features, targets)
  plain = speech.SpeechToText(CFG.replace(subsample=4)).apply(
      {"params": {k: v for k, v in params.items() if k != "ctc_head"}}, features, targets)
  np.testing.assert_allclose(out["logits"], plain, atol=1e-6)
  encoded = model.apply({"params": params}, features, method=speech.SpeechToText.encode)
  logits = np.asarray(encoded[:1]) @ np.asarray(nn.meta.unbox(params["ctc_head"]))
  expected = optax.ctc_loss(logits, np.zeros((1, 8)), targets[:1], np.zeros((1, 4)))[0]
  np.testing.assert_allclose(out["ctc_sum"], expected, rtol=1e-5)
  np.testing.assert_allclose(out["aux_loss_sum"], 0.3 * expected, rtol=1e-5)
  kind = kinds.get("speech_to_text")
  batch = {"targets": targets}
  sums = kind.objective(out, batch, 0.0)
  base = kind.eval_sums(out, batch)
  np.testing.assert_allclose(sums["loss_sum"], base["loss_sum"] + 0.3 * expected, rtol=1e-5)


def test_ctc_leaves_out_rows_that_no_alignment_fits():
  # 2 encoder positions: [5, 9] fits; [5, 5] needs a blank between the repeats (3); [5, 9, 2] is
  # longer than the row; an empty row has nothing to align.
  segments = jnp.asarray([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]], jnp.int32)
  targets = jnp.asarray([[5, 9, 0], [5, 5, 0], [5, 9, 2], [0, 0, 0]], jnp.int32)
  np.testing.assert_array_equal(speech.ctc_fits(segments, targets), [True, False, False, False])
  model = speech.SpeechToText(CFG.replace(subsample=2, ctc_weight=0.5))
  features = _features(np.random.default_rng(6), 4, 4, [4, 4, 4, 4])
  params = model.init(jax.random.key(0), features, targets)["params"]
  encoded = model.apply({"params": params}, features, method=speech.SpeechToText.encode)
  loss = model.apply({"params": params}, encoded, segments[:, :2], targets,
                     method=speech.SpeechToText.ctc_loss)
  assert np.isfinite(loss).all() and loss[0] > 0
  np.testing.assert_array_equal(loss[1:], 0.0)


def test_ctc_decoding_merges_repeats_then_drops_blanks():
  cfg = CFG.replace(subsample=2, ctc_weight=0.5)
  model = speech.SpeechToText(cfg)
  rng = np.random.default_rng(7)
  features = _features(rng, 3, 24, [24, 13, 4])
  params = model.init(jax.random.key(0), features, jnp.ones((3, 4), jnp.int32))["params"]
  # A head that favours blank less, so that the random encoder emits some ids.
  params = {**params, "ctc_head": nn.meta.unbox(params["ctc_head"]) * 4.0}
  encoded = model.apply({"params": params}, features, method=speech.SpeechToText.encode)
  logits = np.asarray(model.apply({"params": params}, encoded,
                                  method=speech.SpeechToText.ctc_logits))
  limit, max_length = 40, 9
  out = np.asarray(jax.jit(lambda p, f: decoding.transcribe(
      p, f, None, config=cfg.replace(deterministic=True),
      options=decoding.DecodeOptions(method="ctc"), max_length=max_length,
      vocab_limit=limit))(params, features))
  for row, valid in enumerate([12, 7, 2]):  # encoder positions of 24, 13 and 4 frames.
    best = logits[row, :valid, :limit].argmax(-1)
    merged = [int(t) for i, t in enumerate(best) if i == 0 or t != best[i - 1]]
    ids = [t for t in merged if t != 0][:max_length]
    expected = ids + [1] * (len(ids) < max_length) + [0] * (max_length - len(ids) - 1)
    np.testing.assert_array_equal(out[row], expected[:max_length])
  assert (out[0] > 0).sum() > 3  # the case is not trivial.


def test_joint_ctc_attention_beam_decodes_cached_as_uncached_and_uses_the_head():
  cfg = CFG.replace(subsample=2, ctc_weight=0.5)
  model = speech.SpeechToText(cfg)
  features = _features(np.random.default_rng(8), 3, 24, [24, 13, 6])
  params = model.init(jax.random.key(1), features, jnp.ones((3, 6), jnp.int32))["params"]
  params = {**params, "ctc_head": nn.meta.unbox(params["ctc_head"]) * 4.0}

  def run(weight, cached):
    options = decoding.DecodeOptions(method="beam", beam_size=3, ctc_weight=weight)
    return np.asarray(jax.jit(lambda p, f: decoding.transcribe(
        p, f, None, config=cfg.replace(deterministic=True), options=options, max_length=8,
        vocab_limit=40, cached=cached))(params, features))

  joint = run(0.5, True)
  np.testing.assert_array_equal(joint, run(0.5, False))
  assert (joint < 40).all()
  assert not np.array_equal(joint, run(0.0, True))  # the CTC head's scores changed the beam
