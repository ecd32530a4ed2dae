"""Long recordings cut at pauses (kinds/speech/segments.py) for long-form speech decoding."""

import numpy as np
import pytest

from transformer_jax.kinds.speech import audio, segments, splits as speech_splits


def _speech_with_pauses(words, pause_s, seed=0):
  """Tone bursts ("words", each `seconds` long) with quiet noise between them; returns
  the samples and each pause's (start, end) sample offsets."""
  rng = np.random.default_rng(seed)
  parts, pauses, at = [], [], 0
  for i, seconds in enumerate(words):
    t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    parts.append(0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t))
    at += len(parts[-1])
    if i < len(words) - 1:
      gap = rng.normal(0, 0.002, int(pause_s * audio.SAMPLE_RATE))
      parts.append(gap)
      pauses.append((at, at + len(gap)))
      at += len(gap)
  return (np.concatenate(parts) * 32767).astype(np.int16), pauses


def _frames(piece):
  return speech_splits.Utterances([piece], [""]).frames()[0]


def test_a_long_recording_is_cut_in_its_pauses_into_pieces_that_fit():
  samples, pauses = _speech_with_pauses([1.2, 0.9, 1.4, 1.0, 1.1], pause_s=0.5)
  max_frames = 300  # 3 s; the recording lasts 7.6 s.
  cuts = segments.cut_points(samples, max_frames)
  assert len(cuts) >= 2
  for cut in cuts:  # every cut in a pause, not in a word.
    assert any(a <= cut <= b for a, b in pauses), (cut, pauses)
  pieces, owners = segments.split([samples], max_frames)
  assert owners == [0] * len(pieces) and len(pieces) == len(cuts) + 1
  assert all(_frames(p) <= max_frames for p in pieces)
  np.testing.assert_array_equal(np.concatenate(pieces), samples)


def test_without_pauses_the_pieces_still_fit_and_nothing_is_lost():
  rng = np.random.default_rng(1)
  samples = (rng.normal(0, 0.3, 10 * audio.SAMPLE_RATE) * 32767).astype(np.int16)
  for max_frames in (100, 333, 480):
    pieces, _ = segments.split([samples], max_frames)
    assert all(_frames(p) <= max_frames for p in pieces)
    assert max(_frames(p) for p in pieces) > max_frames // 2  # not cut needlessly short.
    np.testing.assert_array_equal(np.concatenate(pieces), samples)


def test_recordings_that_fit_stay_whole_and_transcripts_join_in_order():
  short, _ = _speech_with_pauses([0.5, 0.5], pause_s=0.3)  # 1.3 s.
  long, _ = _speech_with_pauses([1.0, 1.0, 1.0], pause_s=0.5)  # 4 s.
  assert segments.cut_points(short, 200) == []
  pieces, owners = segments.split([short, long, short], 200)
  assert owners[0] == 0 and owners[-1] == 2 and set(owners[1:-1]) == {1}
  assert len(owners) >= 4
  texts = [f"t{j}" for j in range(len(pieces))]
  texts[2] = "  "  # an empty piece adds no space.
  joined = segments.join(texts, owners, 3)
  assert joined[0] == "t0" and joined[2] == f"t{len(pieces) - 1}"
  assert joined[1] == " ".join(t for t, o in zip(texts, owners) if o == 1 and t.strip())


def test_a_piece_needs_two_frames():
  with pytest.raises(ValueError, match="max_frames=1"):
    segments.cut_points(np.zeros(16000, np.int16), 1)
