"""Dropout that draws 16 random bits per element instead of 32.

`flax.linen.Dropout` asks `jax.random.bernoulli` for one float per element: one
32-bit threefry word each. Every word here decides two elements (its two halves,
each compared with round(keep * 2**16)), so a step generates half the random
words; on XLA:CPU that is about a third less time in the random number
generator (`benchmarks/vs_flax_wmt.py`, BUILD_NOTES). The keep probability is
threshold / 2**16, within 2**-17 of 1 - rate, and kept elements are divided by
exactly that probability, so the expectation is unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_LEVELS = 1 << 16


def keep_threshold(rate: float) -> int:
  """Kept where the 16 random bits are below this (1 to 65,535)."""
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate {rate} is not in [0, 1)")
  return min(max(round((1.0 - rate) * _LEVELS), 1), _LEVELS - 1)


def random_uint16(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint16 random bits of `shape`: each uint32 word split in two along the last axis.

  The leading axes stay as they are, so a sharded activation's bits are generated
  shard by shard (threefry is partitionable) rather than whole on every device.
  """
  *lead, last = shape
  words = jax.random.bits(key, (*lead, (last + 1) // 2), jnp.uint32)
  halves = lax.bitcast_convert_type(words, jnp.uint16)  # [..., ceil(last / 2), 2]
  return halves.reshape(*lead, -1)[..., :last]


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """x with each element zeroed with probability ~rate and the rest scaled up."""
  if rate == 0.0:
    return x
  threshold = keep_threshold(rate)
  keep = random_uint16(key, x.shape) < jnp.uint16(threshold)
  scale = jnp.asarray(_LEVELS / threshold, x.dtype)
  return lax.select(keep, x * scale, jnp.zeros_like(x))


class Dropout(nn.Module):
  """A drop-in for `nn.Dropout(rate)(x, deterministic=...)` with 16-bit randomness."""

  rate: float
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    if self.rate >= 1.0:
      return jnp.zeros_like(x)
    return dropout(x, self.rate, self.make_rng(self.rng_collection))
