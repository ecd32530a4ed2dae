"""Audio in, log-mel features out: WAV files read with the standard library, numpy only.

The features are Whisper's: 16 kHz mono, frames of 25 ms (400 samples) every 10 ms
(160 samples) with a periodic Hann window, the power spectrum of each frame, 80
triangular mel filters (Slaney's mel scale and area normalisation, 0-8 kHz, as
librosa's defaults), log10, a floor 8 decades below the loudest value, and
(x + 4) / 4 so that speech sits around [-1, 1]. Audio at another rate (8 kHz
telephone prompts, 22.05 kHz synthesised speech) is resampled first, band-limited
through the FFT.
"""

from __future__ import annotations

import functools
import wave

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms at 16 kHz.
HOP = 160  # 10 ms.
N_MELS = 80
_SAMPLE_WIDTHS = {1: "8-bit", 2: "16-bit", 4: "32-bit"}


class AudioError(ValueError):
  """An audio file that cannot be used; the message names it and why."""


def read_wav(path, name: str | None = None) -> tuple[np.ndarray, int]:
  """(mono float32 samples in [-1, 1], sample rate) of a PCM WAV file: a path, or a binary
  file object (an upload) that messages call `name`."""
  if name is not None:
    return _read_wav(path, name)
  return _read_wav(path, path)


def _read_wav(source, path: str) -> tuple[np.ndarray, int]:
  try:
    with wave.open(source, "rb") as f:
      channels, width, rate, frames = (f.getnchannels(), f.getsampwidth(), f.getframerate(),
                                       f.getnframes())
      data = f.readframes(frames)
  except FileNotFoundError as e:
    raise AudioError(f"{path}: no such file") from e
  except (wave.Error, EOFError, OSError) as e:
    raise AudioError(f"{path}: not a readable PCM WAV file ({e})") from e
  if width not in _SAMPLE_WIDTHS:
    raise AudioError(f"{path}: {8 * width}-bit samples; PCM WAV of "
                     f"{', '.join(_SAMPLE_WIDTHS.values())} samples is read (convert it, e.g. "
                     "sox IN -b 16 OUT.wav)")
  if rate <= 0 or channels <= 0:
    raise AudioError(f"{path}: a header of {channels} channel(s) at {rate} Hz")
  usable = len(data) // (width * channels) * width * channels
  if width == 1:  # unsigned, centred on 128.
    samples = (np.frombuffer(data[:usable], np.uint8).astype(np.float32) - 128.0) / 128.0
  else:
    kind = {2: np.int16, 4: np.int32}[width]
    samples = np.frombuffer(data[:usable], f"<{np.dtype(kind).char}").astype(np.float32)
    samples /= float(2 ** (8 * width - 1))
  samples = samples.reshape(-1, channels).mean(axis=1)
  if not len(samples):
    raise AudioError(f"{path}: no samples")
  return samples.astype(np.float32), rate


def write_wav(path: str, samples: np.ndarray, rate: int) -> None:
  """16-bit mono PCM WAV of float samples in [-1, 1] (clipped)."""
  pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32767), -32768, 32767)
  with wave.open(path, "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(pcm.astype("<i2").tobytes())


def resample(samples: np.ndarray, rate: int, to: int = SAMPLE_RATE) -> np.ndarray:
  """`samples` at `rate` Hz -> `to` Hz, band-limited: the spectrum is cut (or padded
  with zeros) at the lower Nyquist frequency and transformed back."""
  if rate == to:
    return np.asarray(samples, np.float32)
  n = len(samples)
  m = max(int(round(n * to / rate)), 1)
  short = min(n, m)  # the shorter signal's band is what both share.
  out = np.zeros(m // 2 + 1, np.complex128)
  out[:short // 2 + 1] = np.fft.rfft(samples)[:short // 2 + 1]
  if short % 2 == 0:  # that band's Nyquist bin stands for two (+f and -f) components:
    out[short // 2] *= 2.0 if m < n else 0.5  # folded into one, or split in two.
  return (np.fft.irfft(out, m) * (m / n)).astype(np.float32)


def fast_length(n: int) -> int:
  """The smallest 2^a 3^b 5^c >= n: a length that pocketfft transforms quickly (a
  length with a large prime factor can take 30x longer)."""
  best = 1 << max(n - 1, 0).bit_length()
  p5 = 1
  while p5 < best:
    p35 = p5
    while p35 < best:
      m = p35 * (1 << max(-(-n // p35) - 1, 0).bit_length())  # times the least power of 2.
      best = min(best, m)
      p35 *= 3
    p5 *= 5
  return best


def band_limit(samples: np.ndarray, cutoff_hz: float, rate: int = SAMPLE_RATE) -> np.ndarray:
  """`samples` with every component above `cutoff_hz` removed (an ideal low-pass: what
  resampling to 2 x cutoff and back keeps), through one transform of the signal zero-padded
  to a fast length."""
  n = len(samples)
  m = fast_length(n)
  spectrum = np.fft.rfft(np.asarray(samples, np.float32), m)
  spectrum[int(np.floor(cutoff_hz * m / rate)) + 1:] = 0.0
  return np.fft.irfft(spectrum, m)[:n].astype(np.float32)


def hz_to_mel(hz):
  """Slaney's mel scale: linear to 1 kHz (3 mels per 200 Hz), logarithmic above."""
  hz = np.asarray(hz, np.float64)
  logstep = np.log(6.4) / 27.0
  return np.where(hz < 1000.0, hz / (200.0 / 3), 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0)
                  / logstep)


def mel_to_hz(mel):
  mel = np.asarray(mel, np.float64)
  logstep = np.log(6.4) / 27.0
  return np.where(mel < 15.0, mel * (200.0 / 3), 1000.0 * np.exp(logstep * (mel - 15.0)))


def warp_frequencies(hz: np.ndarray, alpha: float, rate: int = SAMPLE_RATE,
                     high: float = 4800.0) -> np.ndarray:
  """Vocal tract length perturbation's piecewise-linear warp (Jaitly & Hinton 2013): `hz`
  scaled by `alpha` up to a boundary near `high`, then a straight line that keeps the
  Nyquist frequency where it is, so the warped axis still spans 0 to rate / 2."""
  nyquist = rate / 2
  edge = high * min(alpha, 1.0) / alpha
  above = nyquist - (nyquist - high * min(alpha, 1.0)) / (nyquist - edge) * (nyquist - hz)
  return np.where(hz <= edge, hz * alpha, above)


@functools.lru_cache(maxsize=512)  # a training run draws warps to 3 decimals (201 of them).
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE,
                warp: float = 1.0) -> np.ndarray:
  """[n_mels, n_fft // 2 + 1] triangular filters between mel-spaced edges from 0 Hz to
  rate / 2, each scaled to unit area over frequency (Slaney). With `warp` != 1 each FFT
  bin's frequency is first warped (warp_frequencies): a voice with a vocal tract that
  much shorter (warp > 1) or longer."""
  bins = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
  if warp != 1.0:
    bins = warp_frequencies(bins, warp, rate)
  edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(rate / 2), n_mels + 2))
  lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  rising = (bins - lower) / (centre - lower)
  falling = (upper - bins) / (upper - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  return (weights * (2.0 / (upper - lower))).astype(np.float32)


def frames(samples: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
  """[1 + len // hop, n_fft] windows centred on every hop (the signal reflected at its
  ends, as librosa's center=True)."""
  pad = n_fft // 2
  x = np.asarray(samples, np.float32)
  if len(x) <= pad:
    x = np.pad(x, (0, pad + 1 - len(x)))
  x = np.pad(x, (pad, pad), mode="reflect")
  return np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]  # a view, not a copy.


def _scaled_log_mel(frames_NW: np.ndarray, warp: float = 1.0) -> np.ndarray:
  """Windowed frames [N, N_FFT] -> [N, 80] features: the power spectrum through the mel
  filters, log10, the floor 8 decades below the loudest value, (x + 4) / 4."""
  window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann.
  power = np.abs(np.fft.rfft(frames_NW * window, axis=-1)) ** 2
  logs = np.log10(np.maximum(power @ mel_filters(warp=float(warp)).T, 1e-10))
  logs = np.maximum(logs, logs.max() - 8.0)
  return ((logs + 4.0) / 4.0).astype(np.float32)


def log_mel(samples: np.ndarray, rate: int = SAMPLE_RATE, warp: float = 1.0) -> np.ndarray:
  """[frames, 80] float32 log-mel features of mono samples at `rate` Hz (`warp`: the
  frequency axis warped, mel_filters)."""
  x = resample(samples, rate) if rate != SAMPLE_RATE else np.asarray(samples, np.float32)
  return _scaled_log_mel(frames(x), warp)


WHISPER_SECONDS = 30  # Whisper's window: 3,000 frames, every input padded (or cut) to it.
WHISPER_FRAMES = WHISPER_SECONDS * SAMPLE_RATE // HOP


def whisper_log_mel(samples: np.ndarray, rate: int = SAMPLE_RATE,
                    num_frames: int = WHISPER_FRAMES, warp: float = 1.0) -> np.ndarray:
  """[num_frames, 80] features as Whisper (and transformers' WhisperFeatureExtractor)
  computes them: the 16 kHz samples zero-padded or cut to the window (30 s; a fine-tuned
  model may use a shorter one), log_mel's frames of that window but the last, and the
  floor 8 decades below the window's loudest value (`warp`: as log_mel's)."""
  x = resample(samples, rate) if rate != SAMPLE_RATE else np.asarray(samples, np.float32)
  n = num_frames * HOP
  x = np.pad(x[:n], (0, max(n - len(x), 0)))
  return _scaled_log_mel(frames(x)[:-1], warp)


FEATURES = ("log_mel", "whisper")  # config.data.features (kinds/speech/pipeline.py Form).
FEATURE_NORMS = ("none", "mean", "mean_var")


def normalize_features(feats_TF: np.ndarray, norm: str) -> np.ndarray:
  """Per-utterance normalisation of [frames, bins] features over its frames: "mean"
  subtracts each bin's mean (cepstral mean normalisation: a fixed channel or vocal-tract
  tilt, a product in the spectrum, is a constant offset in the log), "mean_var" also
  divides by each bin's standard deviation (floored at 0.01); "none" leaves them."""
  if norm == "none" or len(feats_TF) == 0:
    return feats_TF
  out = feats_TF - feats_TF.mean(axis=0, keepdims=True)
  if norm == "mean_var":
    out = out / np.maximum(out.std(axis=0, keepdims=True), 0.01)
  elif norm != "mean":
    raise ValueError(f"feature norm {norm!r} is not one of {FEATURE_NORMS}")
  return out.astype(np.float32)
