"""Checks shared by the data tests: split configs, hash order, exact resume, process split."""

import hashlib
import types

import numpy as np


def split_config(**fields):
  base = {"validation_fraction": 0.2, "test_fraction": 0.2, "train_files": (),
          "validation_files": (), "test_files": ()}
  base.update(fields)
  return types.SimpleNamespace(**base)


def in_hash_order(identities):
  """Whether `identities` are in the order of their sha256 (`splits.hash_order`)."""
  digests = [hashlib.sha256(i.encode("utf-8")).digest() for i in identities]
  return digests == sorted(digests)


def assert_resumes(make, k, n):
  """get_state after k batches, set_state on a fresh stream: the next n batches match."""
  it = make()
  for _ in range(k):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(n)]
  fresh = make()
  fresh.set_state(state)
  for want in expected:
    got = next(fresh)
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def assert_process_split_invariant(make, global_batch_size, n=5):
  """Rows [0, B/2) and [B/2, B) in two streams give exactly the one-stream batches."""
  half = global_batch_size // 2
  whole = make(range(global_batch_size))
  parts = [make(range(0, half)), make(range(half, global_batch_size))]
  for _ in range(n):
    want = next(whole)
    got = [next(p) for p in parts]
    for k in want:
      assert got[0][k].shape[0] == half
      np.testing.assert_array_equal(np.concatenate([got[0][k], got[1][k]]), want[k])
