"""Orbax checkpoints: state and data iterator saved together, restored exactly."""

import os

import jax
import numpy as np

from conftest import EN_DE, tiny_config
from transformer_jax import checkpoint, programs, sharding
from transformer_jax.data import pipeline
from transformer_jax.data import tokenizer as tok


def test_save_and_restore_state_and_iterator(tmp_path):
  config = tiny_config()
  progs = programs.build(config, sharding.make_mesh(config), 400)
  state = progs.init_state(jax.random.key(0))
  state = state.replace(step=state.step + 7)

  texts = [s for pair in EN_DE * 4 for s in pair]
  tokenizer = tok.Tokenizer(tok.train_tokenizer(texts, vocab_size=400))

  def make_iter():
    return iter(pipeline.train_dataset(EN_DE * 3, tokenizer, global_batch_size=2,
                                       rows=range(2), max_length=32, seed=0,
                                       num_packing_bins=2))
  it = make_iter()
  for _ in range(3):
    next(it)

  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
  ckpt.save(7, state, it, {"note": "test"})
  ckpt.wait()
  expected_next = next(it)
  assert ckpt.latest_step() == 7
  assert os.path.isdir(tmp_path / "ckpt" / "7")

  fresh_it = make_iter()
  restored, meta = ckpt.restore(7, progs.abstract_state, fresh_it)
  ckpt.close()
  assert int(restored.step) == 7
  assert meta["note"] == "test" and meta["format_version"] == checkpoint.FORMAT_VERSION
  assert "jax" in meta["versions"]
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding == b.sharding
  got = next(fresh_it)
  for k in expected_next:
    np.testing.assert_array_equal(got[k], expected_next[k])


def test_keeps_only_the_last_checkpoints(tmp_path):
  texts = [s for pair in EN_DE * 4 for s in pair]
  tokenizer = tok.Tokenizer(tok.train_tokenizer(texts, vocab_size=400))
  it = iter(pipeline.train_dataset(EN_DE, tokenizer, global_batch_size=2, rows=range(2),
                                   max_length=32, seed=0, num_packing_bins=2))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
  for step in (1, 2, 3):
    ckpt.save(step, {"w": np.full((2,), step, np.float32)}, it, {})
  ckpt.close()
  assert ckpt.all_steps() == [2, 3]
