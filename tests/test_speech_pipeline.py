"""The speech kind's data: the audio cache, the augmented grain stream, eval and decode batches."""

import numpy as np
import pytest

from transformer_jax.data.tokenizer import Tokenizer, train_tokenizer
from transformer_jax.kinds.speech import audio, pipeline as speech_pipeline, splits as speech_splits

TEXTS = ["open the file", "close the window", "save all", "print the page now", "quit",
         "show hidden files", "undo", "redo the last change"]


def _tone(seconds, hz):
  t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
  return (0.3 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)


@pytest.fixture(scope="module")
def utts():
  return speech_splits.Utterances([_tone(0.3 + 0.1 * i, 200 + 50 * i) for i in range(8)],
                                  list(TEXTS))


@pytest.fixture(scope="module")
def tokenizer():
  return Tokenizer(train_tokenizer(TEXTS * 20, 300))


AUG = speech_pipeline.Augment(warp=(0.9, 1.1), gain_db=6.0, telephone_prob=0.5,
                              noise_prob=0.5, snr_db=(10.0, 30.0), freq_masks=2, freq_width=10,
                              time_masks=2, time_width=20)


def test_spec_augment_masks_bands_and_spans_with_zeros():
  feats = np.ones((100, 80), np.float32)
  aug = speech_pipeline.Augment(freq_masks=1, freq_width=10, time_masks=1, time_width=50)
  for seed in range(20):
    out = speech_pipeline.spec_augment(feats, aug, np.random.default_rng(seed))
    zero_bins = (out == 0).all(axis=0).sum()
    zero_frames = (out == 0).all(axis=1).sum()
    assert zero_bins <= 10 and zero_frames <= 10  # a time mask is at most a tenth.
    assert ((out == 0) | (out == 1)).all() and feats.min() == 1  # the input is not changed.
  assert speech_pipeline.spec_augment(feats, speech_pipeline.Augment(), None).min() == 1


def _segments(batch, tokenizer):
  """{transcript: [its features, ...]} of every utterance packed into a batch."""
  out = {}
  for inputs, targets, segments in zip(batch["inputs"], batch["targets"],
                                       batch["targets_segment_ids"]):
    for s in range(1, int(segments.max()) + 1):
      text = tokenizer.decode(targets[segments == s])
      out.setdefault(text, []).append(inputs[inputs[:, -1] == s, :-1])
  return out


def test_speed_changes_tempo_and_pitch_but_never_outgrows_a_row():
  t = np.arange(16000) / 16000
  tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)  # 1 s at 1 kHz.
  rng = np.random.default_rng(0)
  faster = speech_pipeline.change_speed(tone, speech_pipeline.Augment(speed=(1.25, 1.25)), rng,
                                        max_frames=200)
  assert abs(len(faster) - 16000 / 1.25) <= 1
  peak = np.argmax(np.abs(np.fft.rfft(faster))) * 16000 / len(faster)
  assert abs(peak - 1250) < 5, peak
  slower = speech_pipeline.change_speed(tone, speech_pipeline.Augment(speed=(0.5, 0.9)), rng,
                                        max_frames=120)  # 1.6 s would not fit 120 frames.
  assert len(audio.log_mel(slower)) <= 120 and len(slower) > 16000
  same = speech_pipeline.change_speed(tone, speech_pipeline.Augment(), rng, max_frames=120)
  assert same is tone


def test_rows_pack_utterances_with_their_segments_and_transcripts(utts, tokenizer):
  stream = speech_pipeline.SpeechTrainStream(
      utts, range(8), tokenizer, global_batch_size=2, rows=range(2), max_frames=96,
      max_length=24, seed=0, aug=speech_pipeline.Augment(), num_packing_bins=2)
  batch = next(stream)
  assert batch["inputs"].shape == (2, 96, audio.N_MELS + 1)
  for k in ("targets", "targets_segment_ids", "targets_positions"):
    assert batch[k].shape == (2, 24) and batch[k].dtype == np.int32
  assert batch["inputs"][..., -1].max() >= 2  # two or more utterances share a row.
  found = _segments(batch, tokenizer)
  assert set(found) <= set(TEXTS) and len(found) >= 3
  for text, (feats,) in found.items():
    i = TEXTS.index(text)
    np.testing.assert_allclose(
        feats, audio.log_mel(speech_pipeline.waveform(utts.samples[i])), atol=1e-6)
  starts = batch["targets_positions"] == 0
  assert (batch["targets_segment_ids"][starts] > 0).sum() == len(found)


def test_the_augmented_stream_varies_by_epoch_and_resumes_exactly(utts, tokenizer):
  def make():
    return speech_pipeline.SpeechTrainStream(
        utts, range(8), tokenizer, global_batch_size=2, rows=range(2), max_frames=96,
        max_length=24, seed=3, aug=AUG, num_packing_bins=2)
  a = make()
  batches = [next(a) for _ in range(8)]
  seen = {}
  for b in batches:
    for text, feats in _segments(b, tokenizer).items():
      seen.setdefault(text, []).extend(feats)
  twice = [f for f in seen.values() if len(f) >= 2]
  assert twice and all(not np.array_equal(f[0], f[1]) for f in twice)  # new augmentation.
  b = make()
  next(b)
  state = b.get_state()
  c = make()
  c.set_state(state)
  for expected in batches[1:]:
    got = next(c)
    for k in expected:
      np.testing.assert_array_equal(got[k], expected[k])


def test_eval_batches_are_clean_and_padded(utts, tokenizer):
  batches = speech_pipeline.eval_batches(utts, [0, 2, 4], tokenizer, batch_size=2,
                                         max_frames=96, max_length=24)
  assert len(batches) == 2
  assert (batches[1]["inputs"][1] == 0).all() and (batches[1]["targets"][1] == 0).all()
  assert set(np.unique(batches[0]["inputs"][..., -1])) == {0.0, 1.0}
  n = len(tokenizer.encode(TEXTS[2]))
  assert list(batches[0]["targets_positions"][1, :n + 1]) == list(range(n)) + [0]
  np.testing.assert_allclose(batches[0]["inputs"][1, :utts.frames()[2], :-1],
                             audio.log_mel(speech_pipeline.waveform(utts.samples[2])),
                             atol=1e-6)


def test_every_path_normalises_the_features_the_same_way(utts, tokenizer):
  """Training rows, eval batches and decoding batches all hold each utterance's
  features normalised over its own frames (data.feature_norm), not over the padding."""
  def expected(i):
    return audio.normalize_features(
        audio.log_mel(speech_pipeline.waveform(utts.samples[i])), "mean_var")
  stream = speech_pipeline.SpeechTrainStream(
      utts, range(8), tokenizer, global_batch_size=2, rows=range(2), max_frames=96,
      max_length=24, seed=0, aug=speech_pipeline.Augment(), num_packing_bins=2,
      form=speech_pipeline.Form(norm="mean_var"))
  found = _segments(next(stream), tokenizer)
  assert found
  for text, (feats,) in found.items():
    np.testing.assert_allclose(feats, expected(TEXTS.index(text)), atol=1e-5)
  batch = speech_pipeline.eval_batches(utts, [3], tokenizer, batch_size=1, max_frames=96,
                                       max_length=24, form=speech_pipeline.Form(norm="mean_var"))[0]
  np.testing.assert_allclose(batch["inputs"][0, :utts.frames()[3], :-1], expected(3), atol=1e-5)
  assert (batch["inputs"][0, utts.frames()[3]:] == 0).all()
  seen = {}

  def decode_batch(inputs, n):
    for row in inputs:
      frames = int(row[:, -1].sum())
      if frames:
        seen[frames] = row[:frames, :-1]
    return np.zeros((len(inputs), 4), np.int32)
  speech_pipeline.decode_in_batches(utts, batch_size=3, decode_batch=decode_batch,
                                    tokenizer=tokenizer, form=speech_pipeline.Form(norm="mean_var"))
  for i, frames in enumerate(utts.frames()):
    np.testing.assert_allclose(seen[int(frames)], expected(i), atol=1e-5)


def test_utterances_that_do_not_fit_are_counted_out(utts, tokenizer):
  frames = utts.frames()
  keep = speech_pipeline.fits(utts, tokenizer, max_frames=int(frames[4]), max_length=24)
  assert keep == [0, 1, 2, 3, 4]
  short = max(len(tokenizer.encode(TEXTS[i])) for i in (4, 6))  # "quit", "undo".
  assert speech_pipeline.fits(utts, tokenizer, max_frames=1000, max_length=short) == [4, 6]


def test_decoding_batches_by_length_and_returns_the_input_order(utts, tokenizer):
  seen = []

  def decode_batch(inputs, n):
    assert inputs.shape[1] % speech_pipeline.DECODE_FRAMES == 0
    seen.append(inputs[:, :, -1].sum(axis=1))
    # "transcribe" each row as the utterance with that many frames.
    by_frames = {int(f): i for i, f in enumerate(utts.frames())}
    ids = np.zeros((len(inputs), 24), np.int32)
    for row, f in enumerate(inputs[:, :, -1].sum(axis=1)):
      if f:
        tokens = tokenizer.encode(TEXTS[by_frames[int(f)]])
        ids[row, :len(tokens)] = tokens
    return ids
  out = speech_pipeline.decode_in_batches(utts, batch_size=3, decode_batch=decode_batch,
                                          tokenizer=tokenizer)
  assert out == TEXTS
  lengths = np.concatenate(seen)
  assert (np.diff(lengths[lengths > 0]) >= 0).all()  # shortest first.


def test_the_cache_is_made_once_and_a_damaged_file_is_made_again(tmp_path, utts):
  calls = []

  def make():
    calls.append(1)
    return utts
  first = speech_splits.cached(str(tmp_path), "tts-train", {"texts": TEXTS}, make)
  (path,) = tmp_path.iterdir()
  again = speech_splits.cached(str(tmp_path), "tts-train", {"texts": TEXTS}, make)
  assert len(calls) == 1 and again.texts == TEXTS
  for x, y in zip(first.samples, again.samples):
    np.testing.assert_array_equal(x, y)
  speech_splits.cached(str(tmp_path), "tts-train", {"texts": TEXTS[:2]}, make)
  assert len(calls) == 2  # another recipe, another file.
  path.write_bytes(b"not an npz")
  speech_splits.cached(str(tmp_path), "tts-train", {"texts": TEXTS}, make)
  assert len(calls) == 3


def test_spoken_digits_are_spelled_as_words():
  assert speech_splits.spell_digits("Press 1 to mute, 2 to exit.") == \
      "Press one to mute, two to exit."
  assert speech_splits.spell_digits("Room 101") == "Room 101"
  assert speech_splits.spell_digits("press * to pause, press # to end") == \
      "press star to pause, press pound to end"


def test_segmented_decoding_decodes_the_pieces_of_long_utterances_and_joins_them(tokenizer):
  pause = np.zeros(int(0.4 * audio.SAMPLE_RATE), np.int16)
  tones = {200: "quit", 500: "undo", 1000: "save all", 2000: "redo the last change"}
  long = np.concatenate([_tone(0.9, 500), pause, _tone(1.0, 1000), pause, _tone(1.1, 2000)])
  utts = speech_splits.Utterances([_tone(0.5, 200), long], ["", ""])  # 0.5 s and 3.8 s.

  def loudest_bin(x):  # the mel bin of a tone.
    return int(np.argmax(x.mean(axis=0)))
  names = {loudest_bin(audio.log_mel(speech_pipeline.waveform(_tone(0.5, hz)))): name
           for hz, name in tones.items()}
  assert len(names) == 4
  rows = []

  def decode_batch(inputs, n):
    # "transcribe" each row as the word of its tone (one tone per piece).
    ids = np.zeros((len(inputs), 24), np.int32)
    for row, x in enumerate(inputs):
      valid = x[:, -1] > 0
      if valid.any():
        rows.append(int(valid.sum()))
        b = loudest_bin(x[valid, :-1])
        tokens = tokenizer.encode(names[min(names, key=lambda k: abs(k - b))])
        ids[row, :len(tokens)] = tokens
    return ids
  out = speech_pipeline.decode_in_batches(utts, batch_size=2, decode_batch=decode_batch,
                                          tokenizer=tokenizer, segment_frames=180)
  assert out == ["quit", "undo save all redo the last change"]
  assert len(rows) == 4 and max(rows) <= 180  # the short utterance and three pieces.
  whole = speech_pipeline.decode_in_batches(utts, batch_size=2, decode_batch=decode_batch,
                                            tokenizer=tokenizer)
  assert whole[0] == "quit" and sorted(rows[4:]) == [51, 381]  # 0: decoded whole.
