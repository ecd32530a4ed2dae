"""Long recordings cut at pauses into pieces no longer than the rows a model trained on.

A speech model that trained on rows of at most `max_frames` 10 ms frames has never
seen its decoder run past that many; on longer recordings it loops ("key key key").
Long-form decoding (as Whisper's 30 s windows) cuts such a recording into pieces of
at most `max_frames` frames, each cut at the quietest moment of the piece's second
half, decodes the pieces as utterances of their own and joins their transcripts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from transformer_jax.kinds.speech import audio

SMOOTH_FRAMES = 15  # the energy is averaged over 150 ms: a pause, not a stop consonant.


def cut_points(samples: np.ndarray, max_frames: int) -> list[int]:
  """Sample offsets where `samples` (16 kHz) is cut so that every piece has at most
  `max_frames` frames (audio.log_mel's: 1 + len // HOP). Each cut lies at the lowest
  smoothed 10 ms energy between half and all of a piece's longest length after the
  previous cut; empty for a recording that fits."""
  if max_frames < 2:
    raise ValueError(f"max_frames={max_frames}: a piece needs at least 2 frames")
  longest = (max_frames - 1) * audio.HOP  # samples in a piece of max_frames frames.
  if len(samples) <= longest:
    return []
  x = np.asarray(samples, np.float32)
  frames = len(x) // audio.HOP
  energy = np.square(x[:frames * audio.HOP]).reshape(frames, audio.HOP).mean(1)
  smooth = np.convolve(energy, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="same")
  cuts, start = [], 0
  while len(x) - start > longest:
    lo = (start + longest // 2) // audio.HOP
    hi = (start + longest) // audio.HOP  # frame hi starts at most `longest` after start.
    frame = lo + int(np.argmin(smooth[lo:hi]))
    start = max(frame * audio.HOP, start + audio.HOP)
    cuts.append(start)
  return cuts


def split(samples: Sequence[np.ndarray], max_frames: int) -> tuple[list[np.ndarray], list[int]]:
  """(pieces, owners): every recording's pieces in order; owners[j] is the index of the
  recording that pieces[j] came from. A recording that fits is its own one piece."""
  pieces, owners = [], []
  for i, s in enumerate(samples):
    bounds = [0, *cut_points(s, max_frames), len(s)]
    for a, b in zip(bounds[:-1], bounds[1:]):
      pieces.append(s[a:b])
      owners.append(i)
  return pieces, owners


def join(texts: Sequence[str], owners: Sequence[int], count: int) -> list[str]:
  """`count` transcripts: each recording's pieces' texts joined by spaces, in order."""
  parts: list[list[str]] = [[] for _ in range(count)]
  for text, i in zip(texts, owners):
    if text.strip():
      parts[i].append(text.strip())
  return [" ".join(p) for p in parts]
