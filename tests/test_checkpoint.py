"""Orbax checkpoints: state and data position saved together, restored exactly."""

import os
import shutil

import jax
import numpy as np
import pytest

from transformer_jax.checkpoint import manager as checkpoint, params as checkpoint_params
from transformer_jax.data import tokenizer as tok
from transformer_jax.kinds.translation import pipeline
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

from conftest import EN_DE, tiny_config


@pytest.fixture(scope="module")
def tokenizer():
  texts = [s for pair in EN_DE * 4 for s in pair]
  return tok.Tokenizer(tok.train_tokenizer(texts, vocab_size=400))


def _programs(**overrides):
  config = tiny_config(**overrides)
  return programs.build(config, sharding.make_mesh(config), 400)


def _stream(tokenizer, rows=range(2)):
  return pipeline.TrainStream(EN_DE * 3, tokenizer, global_batch_size=2, rows=rows,
                              max_length=32, seed=0, num_packing_bins=2)


def test_save_and_restore_state_and_data_position(tmp_path, tokenizer):
  progs = _programs()
  state = progs.init_state(jax.random.key(0))
  state = state.replace(step=state.step + 7)
  it = _stream(tokenizer)
  for _ in range(3):
    next(it)

  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
  ckpt.save(7, state, checkpoint.global_data_state(it), {"note": "test"})
  ckpt.wait()
  expected_next = next(it)
  assert ckpt.latest_step() == 7
  assert os.path.isdir(tmp_path / "ckpt" / "7")

  restored, data_state, meta = ckpt.restore(7, progs.abstract_state)
  ckpt.close()
  assert int(restored.step) == 7
  assert meta["note"] == "test" and meta["format_version"] == checkpoint.FORMAT_VERSION
  assert "jax" in meta["versions"]
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding == b.sharding
  # The data position restores onto another split of the rows (one row per "process").
  for row in range(2):
    part = _stream(tokenizer, rows=[row])
    part.set_state(data_state)
    got = next(part)
    for k in expected_next:
      np.testing.assert_array_equal(got[k][0], expected_next[k][row])


def test_keeps_the_last_n_and_the_best_k(tmp_path, tokenizer):
  data = checkpoint.global_data_state(_stream(tokenizer))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2, keep_best=1,
                                 best_metric="eval/loss", best_mode="min")
  losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 6.0}
  for step, loss in losses.items():
    ckpt.save(step, {"w": np.full((2,), step, np.float32)}, data, {},
              metrics={"eval/loss": loss})
  ckpt.save(6, {"w": np.full((2,), 6, np.float32)}, data, {})  # no eval at this step.
  ckpt.close()
  assert ckpt.all_steps() == [2, 5, 6]  # best (loss 1.0) + the last two.


def test_changed_model_shape_is_named(tmp_path):
  progs = _programs()
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
  ckpt.save(1, progs.init_state(jax.random.key(0)), {"global_batch_size": 1, "rows": {}}, {})
  ckpt.wait()
  wider = _programs(**{"model.mlp_dim": 128})
  with pytest.raises(checkpoint.CheckpointError) as e:
    ckpt.restore_latest(wider.abstract_state)
  ckpt.close()
  message = str(e.value)
  assert "ckpt/1 does not match the model" in message
  assert "encoder/layer_0/mlp/wi: saved (32, 64), model (32, 128)" in message


def test_a_corrupt_latest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
  progs = _programs()
  state = progs.init_state(jax.random.key(0))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=3)
  data = {"global_batch_size": 1, "rows": {}}
  ckpt.save(1, state, data, {})
  ckpt.save(2, state.replace(step=state.step + 2), data, {})
  ckpt.close()
  # Damage step 2's array data (every file under state/, keeping the names).
  for root, _, files in os.walk(tmp_path / "ckpt" / "2" / "state"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=3)
  step, restored, _, _ = ckpt.restore_latest(progs.abstract_state)
  assert step == 1 and int(restored.step) == 0
  assert "ckpt/2 is unreadable" in capsys.readouterr().out
  # With every checkpoint unreadable, the error names them.
  shutil.rmtree(tmp_path / "ckpt" / "1" / "state")
  with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint: .*ckpt/2.*ckpt/1"):
    ckpt.restore_latest(progs.abstract_state)
  ckpt.close()


def test_load_params_takes_matching_subtrees(tmp_path):
  source = _programs()
  saved = source.init_state(jax.random.key(0))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), max_to_keep=1)
  ckpt.save(5, saved, {"global_batch_size": 1, "rows": {}}, {})
  ckpt.close()
  # A model with a wider MLP: everything but the MLP weights can be taken.
  target = _programs(**{"model.mlp_dim": 128})
  fresh = target.init_state(jax.random.key(1))
  params, taken = checkpoint_params.load_params(str(tmp_path / "run"), -1, fresh.params,
                                         pattern="encoder/.*")
  assert taken and all(p.startswith("encoder/") for p in taken)
  assert not any("/mlp/w" in p for p in taken)  # shapes differ: left fresh.
  np.testing.assert_array_equal(params["encoder"]["final_norm"]["scale"],
                                saved.params["encoder"]["final_norm"]["scale"])
  np.testing.assert_array_equal(params["encoder"]["layer_0"]["mlp"]["wi"],
                                fresh.params["encoder"]["layer_0"]["mlp"]["wi"])
  np.testing.assert_array_equal(params["decoder"]["final_norm"]["bias"],
                                fresh.params["decoder"]["final_norm"]["bias"])
  q = params["encoder"]["layer_0"]["self_attention"]["query"]
  np.testing.assert_array_equal(q, saved.params["encoder"]["layer_0"]["self_attention"]["query"])
  assert q.sharding == fresh.params["encoder"]["layer_0"]["self_attention"]["query"].sharding
  with pytest.raises(checkpoint.CheckpointError, match="config.init_from.workdir"):
    checkpoint_params.load_params(str(tmp_path / "nowhere"), -1, fresh.params)


def test_small_arrays_are_packed_and_restore_onto_another_mesh(tmp_path, monkeypatch):
  from transformer_jax.checkpoint import layout as checkpoint_layout
  monkeypatch.setattr(checkpoint_layout, "PACK_MAX_BYTES", 4096)  # the tiny model's size.
  progs = _programs(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  state = progs.init_state(jax.random.key(3))
  leaves = jax.tree.leaves(state)
  small = [x for x in leaves if x.nbytes <= 4096]
  assert 0 < len(small) < len(leaves)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1)
  ckpt.save(1, state, {"global_batch_size": 1, "rows": {}}, {})
  ckpt.close()
  layout = checkpoint_layout.Layout.from_json(ckpt.metadata(1)["state_layout"])
  assert sum(len(v) for v in layout.groups.values()) == len(small)
  saved = ckpt._manager.item_metadata(1)["state"]  # pylint: disable=protected-access
  assert set(saved) == {"arrays", "packed"}
  assert len(jax.tree.leaves(saved["arrays"])) == len(leaves) - len(small)
  # Restored on a data-parallel mesh: every value back, on the new shardings.
  other = _programs()
  restored, _, _ = checkpoint.Checkpointer(str(tmp_path / "ckpt"), 1).restore(
      1, other.abstract_state)
  for a, b, want in zip(leaves, jax.tree.leaves(restored), jax.tree.leaves(other.abstract_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert b.sharding == want.sharding


def test_reads_format_2_checkpoints_without_packing(tmp_path):
  """Checkpoints written before packing (the state's own tree at the top) still restore."""
  import orbax.checkpoint as ocp
  progs = _programs()
  state = progs.init_state(jax.random.key(0))
  state = state.replace(step=state.step + 4)
  manager = ocp.CheckpointManager(str(tmp_path / "run" / "checkpoints"),
                                  item_handlers=checkpoint.item_handlers())
  manager.save(4, args=ocp.args.Composite(
      state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave({"global_batch_size": 1, "rows": {}}),
      metadata=ocp.args.JsonSave({"format_version": 2, "step": 4})))
  manager.close()
  ckpt = checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), max_to_keep=1)
  step, restored, _, meta = ckpt.restore_latest(progs.abstract_state)
  ckpt.close()
  assert step == 4 and meta["format_version"] == 2
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  params, _ = checkpoint_params.restore_params(str(tmp_path / "run"), -1, progs.abstract_state.params)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
