"""grain pipeline: packing with segments, shards, and exact iterator checkpoints."""

import numpy as np
import pytest

from transformer_jax.data import streams, tokenizer as tok
from transformer_jax.kinds.translation import pipeline

from conftest import EN_DE


@pytest.fixture(scope="module")
def tokenizer():
  texts = [s for pair in EN_DE * 4 for s in pair]
  return tok.Tokenizer(tok.train_tokenizer(texts, vocab_size=400))


PAIRS = [(f"{en} {i}", f"{de} {i}") for i in range(4) for en, de in EN_DE]


def test_packed_batches_have_segments_and_positions(tokenizer):
  ds = pipeline.TrainStream(PAIRS, tokenizer, global_batch_size=4, rows=range(4),
                              max_length=48, seed=0, num_packing_bins=4)
  batch = next(iter(ds))
  for f in ("inputs", "targets"):
    ids, seg, pos = batch[f], batch[f"{f}_segment_ids"], batch[f"{f}_positions"]
    assert ids.shape == seg.shape == pos.shape == (4, 48)
    assert ((ids > 0) == (seg > 0)).all()  # padding is exactly segment 0.
    assert seg.max() >= 2  # several examples share a row.
    for row in range(4):
      for s in set(seg[row].tolist()) - {0}:
        p = pos[row][seg[row] == s]
        np.testing.assert_array_equal(p, np.arange(len(p)))  # positions restart.
        assert ids[row][seg[row] == s][-1] == tok.EOS_ID  # each example ends with EOS.
  # Source and target of an example carry the same segment id.
  assert (set(batch["inputs_segment_ids"][0].tolist()) ==
          set(batch["targets_segment_ids"][0].tolist()))


def test_long_examples_are_dropped(tokenizer):
  pairs = PAIRS[:8] + [("word " * 50, "Wort " * 50)]
  batches = pipeline.eval_batches(pairs, tokenizer, batch_size=8, max_length=16,
                                  num_packing_bins=2)
  n_examples = sum(len(set(b["inputs_segment_ids"][r].tolist()) - {0})
                   for b in batches for r in range(8))
  assert n_examples == 8
  assert pipeline.count_too_long(pairs, tokenizer, 16) == 1


def test_count_too_long_counts_what_eval_batches_leave_out(tokenizer):
  pairs = PAIRS + [("word " * 30, "Wort"), ("Open", "Wort " * 30), ("word " * 30, "Wort " * 30)]
  for max_length in (8, 12, 24, 64):
    batches = pipeline.eval_batches(pairs, tokenizer, batch_size=4, max_length=max_length,
                                    num_packing_bins=4)
    kept = sum(len(set(row.tolist()) - {0}) for b in batches for row in b["targets_segment_ids"])
    too_long = pipeline.count_too_long(pairs, tokenizer, max_length)
    assert kept + too_long == len(pairs)
    by_hand = sum(max(len(tokenizer.encode(s)), len(tokenizer.encode(t))) > max_length
                  for s, t in pairs)
    assert too_long == by_hand
  assert pipeline.count_too_long(pairs, tokenizer, 8) >= 3
  assert pipeline.count_too_long(PAIRS, tokenizer, 1000) == 0


def test_eval_batches_cover_every_example_once(tokenizer):
  batches = pipeline.eval_batches(PAIRS, tokenizer, batch_size=4, max_length=32,
                                  num_packing_bins=4)
  assert all(b["inputs"].shape == (4, 32) for b in batches)
  eos = sum(int((b["targets"] == tok.EOS_ID).sum()) for b in batches)
  assert eos == len(PAIRS)


def test_process_shards_are_disjoint_and_complete(tokenizer):
  seen = []
  for p in range(2):
    batches = pipeline.eval_batches(PAIRS, tokenizer, batch_size=4, max_length=32,
                                    num_packing_bins=4, process_index=p, process_count=2)
    rows = {tuple(r[r > 0]) for b in batches for r in b["targets"]}
    seen.append(rows)
  assert not (seen[0] & seen[1])
  with pytest.raises(ValueError, match="process_index"):
    streams.process_rows(4, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="process_index"):
    pipeline.eval_batches(PAIRS, tokenizer, batch_size=4, max_length=32, num_packing_bins=4,
                          process_index=2, process_count=2)


def test_process_shard_is_strided_and_checks_the_process():
  assert [list(streams.process_shard(7, p, 3)) for p in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
  assert list(streams.process_shard(1, 1, 2)) == []
  for index, count in ((2, 2), (-1, 2), (0, 0)):
    with pytest.raises(ValueError, match=rf"process_index={index} outside \[0, {count}\)"):
      streams.process_shard(5, index, count)
  with pytest.raises(ValueError, match="does not split over 3 processes"):
    streams.process_rows(4, 0, 3)
  assert list(streams.process_rows(8, 1, 2)) == [4, 5, 6, 7]


def test_pad_batch_fills_rows_per_key():
  batch = {"inputs": np.ones((2, 3), np.int32), "label": np.array([4, 5], np.int32),
           "image": np.ones((2, 2, 2), np.float32)}
  out = streams.pad_batch(batch, 4, fill={"label": -1})
  assert {k: v.shape[0] for k, v in out.items()} == {"inputs": 4, "label": 4, "image": 4}
  assert all(out[k].dtype == batch[k].dtype for k in batch)
  np.testing.assert_array_equal(out["label"], [4, 5, -1, -1])
  assert (out["inputs"][2:] == 0).all() and (out["image"][2:] == 0).all()
  assert (out["inputs"][:2] == 1).all()
  np.testing.assert_array_equal(streams.pad_batch(batch, 3)["label"], [4, 5, 0])  # default 0.
  assert streams.pad_batch(batch, 2) is batch
  with pytest.raises(ValueError, match="exceeds batch_size=1"):
    streams.pad_batch(batch, 1)


def test_train_batches_do_not_depend_on_the_process_split(tokenizer):
  """Two processes' rows, put together, are the one-process global batches."""
  def stream(rows):
    return iter(pipeline.TrainStream(PAIRS, tokenizer, global_batch_size=4, rows=rows,
                                       max_length=24, seed=0, num_packing_bins=2))
  whole = stream(range(4))
  halves = [stream(streams.process_rows(4, p, 2)) for p in range(2)]
  for _ in range(5):
    want = next(whole)
    parts = [next(h) for h in halves]
    for k in want:
      assert parts[0][k].shape[0] == 2
      np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), want[k])


def test_too_small_a_corpus_for_the_batch_is_an_error(tokenizer):
  with pytest.raises(ValueError, match="fewer than the 128 rows"):
    pipeline.TrainStream(PAIRS[:10], tokenizer, global_batch_size=128, rows=range(64),
                           max_length=24, seed=0, num_packing_bins=2)


def test_iterator_state_restores_the_same_stream(tokenizer):
  def make():
    return iter(pipeline.TrainStream(PAIRS, tokenizer, global_batch_size=2, rows=range(2),
                                       max_length=24, seed=3, num_packing_bins=2))
  it = make()
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(6)]  # crosses an epoch boundary.
  fresh = make()
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_seed_changes_order(tokenizer):
  a = next(iter(pipeline.TrainStream(PAIRS, tokenizer, global_batch_size=2, rows=range(2), max_length=24, seed=0,
                                       num_packing_bins=2)))
  b = next(iter(pipeline.TrainStream(PAIRS, tokenizer, global_batch_size=2, rows=range(2), max_length=24, seed=1,
                                       num_packing_bins=2)))
  assert not np.array_equal(a["inputs"], b["inputs"])


def test_predict_batches_pad_the_last_batch(tokenizer):
  out = list(pipeline.predict_batches(PAIRS[:5], tokenizer, batch_size=4, max_length=8))
  assert [len(s) for _, s, _ in out] == [4, 1]
  inputs = out[1][0]
  assert inputs.shape == (4, 8) and (inputs[1:] == 0).all() and (inputs[0] > 0).any()


def test_decode_in_batches_groups_similar_lengths_and_keeps_the_order(tokenizer):
  sources = ["Open a new window and close the old one and save the document now", "Open",
             "Save the document", "No", "Print the document again please", "Close"]
  seen = []

  def echo(inputs, n):  # a "decoder" that copies its source ids.
    seen.append((n, [int((row > 0).sum()) for row in inputs]))
    return inputs

  out = pipeline.decode_in_batches(sources, tokenizer, batch_size=2, max_length=16,
                                   decode_batch=echo)
  assert out == [tokenizer.decode(tokenizer.encode(s)[:16]) for s in sources]
  lengths = [n for _, batch in seen for n in batch]
  assert lengths == sorted(lengths) and [n for n, _ in seen] == [0, 1, 2]
