"""models/dropout.py: 16 random bits per element, the same expectation as nn.Dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from transformer_jax.models import dropout as dropout_lib


def test_keep_threshold_is_within_half_a_level_and_rejects_bad_rates():
  for rate in (0.1, 0.3, 0.5, 0.9):
    threshold = dropout_lib.keep_threshold(rate)
    assert abs(threshold / 65536 - (1 - rate)) <= 0.5 / 65536
  assert dropout_lib.keep_threshold(1e-9) == 65535  # never "keep everything" by rounding
  for bad in (-0.1, 1.0, 1.5):
    with pytest.raises(ValueError, match=str(bad)):
      dropout_lib.keep_threshold(bad)


def test_drops_the_rate_and_keeps_the_mean():
  x = jnp.ones((64, 257), jnp.float32)  # an odd last axis: half a word goes unused
  for rate in (0.1, 0.5):
    y = np.asarray(dropout_lib.dropout(x, rate, jax.random.key(0)))
    dropped = (y == 0).mean()
    assert abs(dropped - rate) < 0.02, (rate, dropped)
    kept = y[y != 0]
    np.testing.assert_allclose(kept, 65536 / dropout_lib.keep_threshold(rate), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.03


def test_the_two_halves_of_a_word_are_independent():
  """Neighbours share a 32-bit word: both dropped ~rate^2 of the time, not ~rate."""
  y = np.asarray(dropout_lib.dropout(jnp.ones((512, 512)), 0.5, jax.random.key(1)))
  both = ((y[:, 0::2] == 0) & (y[:, 1::2] == 0)).mean()
  assert abs(both - 0.25) < 0.01, both


def test_keys_give_different_masks_and_one_key_the_same():
  x = jnp.ones((16, 64))
  a, b = (dropout_lib.dropout(x, 0.3, jax.random.key(k)) for k in (0, 1))
  again = dropout_lib.dropout(x, 0.3, jax.random.key(0))
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, again)


def test_the_gradient_is_the_mask_times_the_scale():
  x = jnp.arange(1.0, 97.0).reshape(8, 12)
  key = jax.random.key(2)
  y = dropout_lib.dropout(x, 0.25, key)
  grad = jax.grad(lambda v: dropout_lib.dropout(v, 0.25, key).sum())(x)
  np.testing.assert_allclose(grad, np.where(y != 0, y / x, 0.0), rtol=1e-6)


def test_sharded_bits_equal_the_unsharded_ones():
  mesh = jax.make_mesh((8,), ("data",))
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  x = jax.device_put(jnp.ones((8, 4, 6)), sharding)
  key = jax.random.key(3)
  sharded = jax.jit(lambda v: dropout_lib.dropout(v, 0.5, key), out_shardings=sharding)(x)
  np.testing.assert_array_equal(sharded, dropout_lib.dropout(jnp.ones((8, 4, 6)), 0.5, key))


def test_the_module_is_identity_when_deterministic_or_rate_zero():
  x = jnp.arange(12.0).reshape(3, 4)
  rngs = {"dropout": jax.random.key(0)}
  module = dropout_lib.Dropout(0.5)
  np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
  np.testing.assert_array_equal(dropout_lib.Dropout(0.0).apply({}, x, deterministic=False), x)
  y = module.apply({}, x, deterministic=False, rngs=rngs)
  assert (np.asarray(y) == 0).any() and not np.array_equal(y, x)
  np.testing.assert_array_equal(
      dropout_lib.Dropout(1.0).apply({}, x, deterministic=False), np.zeros((3, 4)))
