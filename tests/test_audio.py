"""Audio features: WAV reading, resampling and Whisper-style log-mel features."""

import wave

import numpy as np
import pytest

from transformer_jax.kinds.speech import audio

from conftest import skip_without


def _tone(hz, rate, seconds=1.0, amplitude=0.5):
  t = np.arange(int(rate * seconds)) / rate
  return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.long
def test_log_mel_equals_librosas_features():
  try:
    import librosa  # pylint: disable=import-outside-toplevel
  except ImportError:
    skip_without("librosa is not installed (pip install -e '.[audio-reference]')")
  rng = np.random.default_rng(0)
  x = _tone(440, 16_000, 2.0, 0.3) + _tone(2500, 16_000, 2.0, 0.1)
  x = x + 0.05 * rng.standard_normal(len(x)).astype(np.float32)
  np.testing.assert_allclose(audio.mel_filters(),
                             librosa.filters.mel(sr=16_000, n_fft=400, n_mels=80), atol=1e-7)
  power = librosa.feature.melspectrogram(y=x, sr=16_000, n_fft=400, hop_length=160, n_mels=80,
                                         window="hann", center=True, pad_mode="reflect")
  ref = np.log10(np.maximum(power, 1e-10))
  ref = (np.maximum(ref, ref.max() - 8.0) + 4.0) / 4.0
  np.testing.assert_allclose(audio.log_mel(x), ref.T, atol=1e-5)
  low = librosa.resample(x, orig_sr=16_000, target_sr=8_000, res_type="fft")
  np.testing.assert_allclose(audio.resample(low, 8_000),
                             librosa.resample(low, orig_sr=8_000, target_sr=16_000,
                                              res_type="fft"), atol=1e-5)


def test_a_tone_lights_the_mel_bin_of_its_frequency():
  """Checked by hand: a 1 kHz tone's energy falls in the filter whose peak is nearest
  1 kHz; 16,000 samples give 1 + 16,000 / 160 = 101 frames of 80 bins."""
  features = audio.log_mel(_tone(1000, 16_000))
  assert features.shape == (101, 80) and features.dtype == np.float32
  centres = audio.mel_to_hz(np.linspace(0, audio.hz_to_mel(8000), 82)[1:-1])
  nearest = int(np.argmin(np.abs(centres - 1000)))
  assert set(np.argmax(features[5:-5], axis=1)) == {nearest}
  # Two tones light a bin each, below and above 1 kHz; silence is the floor everywhere.
  both = audio.log_mel(_tone(300, 16_000) + _tone(3000, 16_000))[50]
  assert int(np.argmax(both[:nearest])) == int(np.argmin(np.abs(centres - 300)))
  assert nearest + int(np.argmax(both[nearest:])) == int(np.argmin(np.abs(centres - 3000)))
  assert np.ptp(audio.log_mel(np.zeros(8000, np.float32))) == 0


def test_utterance_normalisation_removes_a_channel_and_a_level():
  """A fixed filter (a channel) multiplies each bin's power: an offset in the log that
  the per-utterance mean takes away, and a gain with it; "mean_var" also scales each bin
  to unit spread over the frames."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal(16_000).astype(np.float32) * 0.1
  x[4000:8000] *= 5  # louder in the middle: the bins vary over time.
  feats = audio.log_mel(x)
  tilted = feats + np.linspace(-0.5, 0.5, feats.shape[1], dtype=np.float32)  # a channel.
  mean = audio.normalize_features(feats, "mean")
  np.testing.assert_allclose(mean.mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(audio.normalize_features(tilted, "mean"), mean, atol=1e-5)
  np.testing.assert_allclose(audio.normalize_features(feats + 0.3, "mean"), mean, atol=1e-5)
  both = audio.normalize_features(feats, "mean_var")
  np.testing.assert_allclose(both.mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(both.std(axis=0), 1, atol=1e-4)
  np.testing.assert_array_equal(audio.normalize_features(feats, "none"), feats)
  silence = audio.normalize_features(audio.log_mel(np.zeros(8000, np.float32)), "mean_var")
  assert np.isfinite(silence).all() and np.abs(silence).max() < 1e-2  # the floor, not 0/0.
  with pytest.raises(ValueError, match="'cmvn'"):
    audio.normalize_features(feats, "cmvn")


def test_a_warped_axis_moves_a_tone_by_its_factor_and_keeps_the_band():
  """Vocal tract length perturbation: below the boundary a frequency moves by the factor,
  0 Hz and the Nyquist frequency stay put, and the warp never folds the axis."""
  hz = np.linspace(0.0, 8000.0, 201)
  for alpha in (0.9, 1.1):
    warped = audio.warp_frequencies(hz, alpha)
    assert warped[0] == 0.0 and abs(warped[-1] - 8000.0) < 1e-9
    assert np.all(np.diff(warped) > 0)
    np.testing.assert_allclose(audio.warp_frequencies(np.array([1000.0]), alpha), [1000 * alpha])
  # A 1 kHz tone under warp 1.1 lights the bin of 1.1 kHz; warp 1 is the plain features.
  centres = audio.mel_to_hz(np.linspace(0, audio.hz_to_mel(8000), 82)[1:-1])
  up = audio.log_mel(_tone(1000, 16_000), warp=1.1)
  assert set(np.argmax(up[5:-5], axis=1)) == {int(np.argmin(np.abs(centres - 1100)))}
  np.testing.assert_array_equal(audio.log_mel(_tone(1000, 16_000), warp=1.0),
                                audio.log_mel(_tone(1000, 16_000)))


def test_fast_lengths_are_the_least_5_smooth_length_above():
  def smooth(m):
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    return m == 1
  for n in [1, 2, 7, 97, 401, 1000, 4097, 48_011, 52_001]:
    m = audio.fast_length(n)
    assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m)), (n, m)


@pytest.mark.parametrize("n", [16_000, 16_001, 15_991])  # even, odd, prime
def test_band_limit_keeps_the_band_below_the_cutoff_only(n):
  t = np.arange(n) / 16_000
  low = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 3900 * t)
  high = 0.3 * np.sin(2 * np.pi * 4200 * t) + 0.1 * np.sin(2 * np.pi * 7000 * t)
  out = audio.band_limit((low + high).astype(np.float32), 4000.0)
  assert out.shape == (n,) and out.dtype == np.float32
  inner = slice(400, -400)  # away from the ends, where the transform wraps around.
  np.testing.assert_allclose(out[inner], low[inner], atol=0.02)
  # On an even length it is what resampling to 8 kHz and back keeps.
  if n % 2 == 0:
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    np.testing.assert_allclose(audio.band_limit(x, 4000.0)[inner],
                               audio.resample(audio.resample(x, 16_000, 8_000), 8_000)[inner],
                               atol=0.01)


@pytest.mark.parametrize("rate", [8_000, 22_050])
def test_resampling_to_16khz_keeps_the_waveform(rate):
  resampled = audio.resample(_tone(440, rate), rate)
  expected = _tone(440, 16_000)
  assert len(resampled) == len(expected)
  inner = slice(200, -200)  # away from the ends, where the FFT wraps around.
  np.testing.assert_allclose(resampled[inner], expected[inner], atol=2e-3)
  # The 8 kHz tone's features are the 16 kHz tone's.
  np.testing.assert_allclose(audio.log_mel(_tone(440, rate), rate)[3:-3],
                             audio.log_mel(expected)[3:-3], atol=0.02)


def test_wav_files_are_read_back_and_bad_ones_named(tmp_path):
  x = _tone(440, 8_000, 0.5)
  audio.write_wav(str(tmp_path / "a.wav"), x, 8_000)
  samples, rate = audio.read_wav(str(tmp_path / "a.wav"))
  assert rate == 8_000 and len(samples) == len(x)
  np.testing.assert_allclose(samples, x, atol=1 / 32767)
  # 8-bit unsigned stereo: channels averaged.
  with wave.open(str(tmp_path / "b.wav"), "wb") as f:
    f.setnchannels(2)
    f.setsampwidth(1)
    f.setframerate(16_000)
    f.writeframes(bytes([128, 192, 64, 128]))
  samples, _ = audio.read_wav(str(tmp_path / "b.wav"))
  np.testing.assert_allclose(samples, [0.25, -0.25])

  with wave.open(str(tmp_path / "c.wav"), "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(3)
    f.setframerate(16_000)
    f.writeframes(bytes(30))
  (tmp_path / "d.wav").write_text("not audio")
  (tmp_path / "e.wav").write_bytes((tmp_path / "a.wav").read_bytes()[:30])
  with wave.open(str(tmp_path / "f.wav"), "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(16_000)
  for name, message in (("c.wav", "24-bit samples"), ("d.wav", "not a readable PCM WAV"),
                        ("e.wav", "not a readable PCM WAV"), ("f.wav", "no samples"),
                        ("missing.wav", "no such file")):
    with pytest.raises(audio.AudioError, match=message) as e:
      audio.read_wav(str(tmp_path / name))
    assert name in str(e.value)
