"""A decode loop in phases of growing cache length.

A key/value cache of `max_length` positions costs every step its whole length: the
self-attention reads all of it and beam search reorders all of it, though a step at
position i needs only the first i + 1. So the loop runs in phases: while i < 32 the
cache holds 32 positions, then it is padded with zeros to 4 times that, and so on up to
max_length (64: 32, 64; Whisper's 448: 32, 128, 448). The numbers are those of one
full-length cache (the positions past i are masked, as before); each phase is one more
copy of the step in the compiled program.

The base translator's beam search (16 sentences, 4 beams, cache 64 positions): 27.1 ->
32.9-33.9 sentences/s with phases 32, 64 (16, 32, 64: 33.5-35.0, at twice the extra
compile time), the same translations; BUILD_NOTES, "Half-full batches mended, and
decoding in phases of cache length".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax

from transformer_jax.models import attention

Array = jax.Array

FIRST = 32  # the first phase's cache length.
FACTOR = 4  # each next phase's length, up to max_length.


def lengths(max_length: int, first: int = FIRST, factor: int = FACTOR) -> tuple[int, ...]:
  """The cache length of each phase: first, first * factor, ... then max_length."""
  out = []
  n = first
  while n < max_length:
    out.append(n)
    n *= factor
  return tuple(out) + (max_length,)


def while_loop(cond: Callable[[tuple], Array], body: Callable[[tuple], tuple], carry: tuple,
               phase_lengths: Sequence[int]) -> tuple:
  """`jax.lax.while_loop(cond, body, carry)` whose carry is (position, cache, ...) and
  whose cache starts with phase_lengths[0] positions; it grows at each phase's end."""
  for end, following in zip(phase_lengths, tuple(phase_lengths[1:]) + (None,)):
    carry = jax.lax.while_loop(lambda c, end=end: cond(c) & (c[0] < end), body, carry)
    if following is not None:
      carry = (carry[0], attention.grow_cache(carry[1], following)) + tuple(carry[2:])
  return carry

