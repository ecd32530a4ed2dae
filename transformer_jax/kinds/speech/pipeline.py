"""Speech batches: log-mel features computed in the grain pipeline, augmented for training.

A row holds `inputs` float32 [frames, 80 + 1] (the log-mel features of audio.py,
then each frame's segment: 0 on padding; models/speech.py) and `targets` int32
[max_target_length] (the normal-form transcripts' token ids, each then EOS,
zero-padded) with `targets_segment_ids` and `targets_positions`. Training rows
pack several utterances (grain's first-fit packing: frames and tokens must both
fit; segments 1, 2, ...); evaluation and decoding rows hold one (segment 1).
Training utterances are augmented on the fly, each time one comes round again
differently, seeded by grain (an exact resume sees the same rows):

  speed      played a factor in `speed` (low, high) times as fast, tempo and pitch together
             (Ko et al. 2015), never slower than still fits a row;
  warp       the mel filters' frequency axis warped by a factor in `warp` (low, high): vocal
             tract length perturbation (Jaitly & Hinton 2013), a voice's formants moved
             without its tempo;
  gain       the level scaled by up to +-gain_db decibels;
  telephone  with probability telephone_prob, band-limited to 4 kHz through 8 kHz;
  noise      with probability noise_prob, white noise at an SNR in snr_db;
  SpecAugment  freq_masks bands of up to freq_width mel bins and time_masks spans of up
             to time_width frames (at most a tenth of the utterance each) set to 0.

Utterances whose frames or tokens do not fit a row are left out of training and of
eval/loss (the task says how many). Decoding pads each batch only to the next
multiple of DECODE_FRAMES (sorted by length, so batches hold similar lengths).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain
import numpy as np

from transformer_jax.data import streams
from transformer_jax.kinds.speech import audio, segments
from transformer_jax.kinds.speech.corpus import normalize
from transformer_jax.kinds.speech.splits import Utterances

DECODE_FRAMES = 256  # decoding batches are padded to a multiple of this many frames.


@dataclasses.dataclass(frozen=True)
class Augment:
  """Training augmentation (config.data.augment); zeros switch a part off."""
  speed: tuple[float, float] = (1.0, 1.0)
  warp: tuple[float, float] = (1.0, 1.0)
  gain_db: float = 0.0
  telephone_prob: float = 0.0
  noise_prob: float = 0.0
  snr_db: tuple[float, float] = (10.0, 40.0)
  freq_masks: int = 0
  freq_width: int = 0
  time_masks: int = 0
  time_width: int = 0

  @classmethod
  def from_config(cls, augment) -> "Augment":
    pairs = ("speed", "warp", "snr_db")
    return cls(**{f.name: (tuple(augment[f.name]) if f.name in pairs else augment[f.name])
                  for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Form:
  """How an utterance becomes a row (config.data.features): "log_mel" features normalised
  as `norm` says (audio.normalize_features), padded with masked frames, and the
  transcript's normal form (corpus.normalize); or "whisper": Whisper's features of a window
  of `window` frames (audio.whisper_log_mel: padded with silence, every frame valid) and
  the transcript as written, after a space and Whisper's forced `prefix` (our ids)."""
  features: str = "log_mel"
  norm: str = "none"
  window: int = 0  # whisper: frames in every row.
  prefix: tuple[int, ...] = ()

  @classmethod
  def from_config(cls, d) -> "Form":
    return cls(d.features, d.feature_norm, d.max_frames, tuple(d.target_prefix))

  @property
  def whisper(self) -> bool:
    return self.features == "whisper"

  def log_mel(self, x: np.ndarray, frames: int, warp: float = 1.0) -> np.ndarray:
    """[<= frames, 80] features of waveform `x` (whisper: exactly the window)."""
    if self.whisper:
      return audio.whisper_log_mel(x, num_frames=self.window, warp=warp)
    return audio.normalize_features(audio.log_mel(x, warp=warp)[:frames], self.norm)

  def ids(self, tokenizer, text: str) -> np.ndarray:
    """The ids (then EOS) that the model learns to write for `text`."""
    if self.whisper:
      ids = tokenizer.encode(" " + text.strip())
      return np.concatenate([np.asarray(self.prefix, np.int32), ids]).astype(np.int32)
    return tokenizer.encode(normalize(text)).astype(np.int32)


LOG_MEL = Form()


def waveform(samples: np.ndarray) -> np.ndarray:
  return samples.astype(np.float32) / 32768.0


def change_speed(x: np.ndarray, aug: Augment, rng: np.random.Generator,
                 max_frames: int) -> np.ndarray:
  """`x` played a random factor in aug.speed times as fast (tempo and pitch together), but
  never slower than fits `max_frames` frames. Linear interpolation: 20x cheaper than the
  FFT resampling of audio.resample, and a factor near 1 aliases little of speech."""
  low, high = aug.speed
  if low == high == 1.0:
    return x
  low = max(low, len(x) / ((max_frames - 1) * audio.HOP))
  if low > high:
    return x
  factor = rng.uniform(low, high)
  at = np.arange(int(len(x) / factor), dtype=np.float64) * factor
  return np.interp(at, np.arange(len(x)), x).astype(np.float32)


def augment_waveform(x: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
  if aug.gain_db:
    x = x * np.float32(10 ** (rng.uniform(-aug.gain_db, aug.gain_db) / 20))
  if aug.telephone_prob and rng.random() < aug.telephone_prob:
    x = audio.band_limit(x, 4000.0)
  if aug.noise_prob and rng.random() < aug.noise_prob:
    power = float(np.mean(np.square(x))) or 1e-8
    snr = rng.uniform(*aug.snr_db)
    x = x + rng.standard_normal(len(x), dtype=np.float32) * np.float32(
        np.sqrt(power / 10 ** (snr / 10)))
  return x


def spec_augment(feats_TF: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
  """Frequency and time masks (SpecAugment, Park et al. 2019) set to 0."""
  feats = feats_TF.copy()
  t, f = feats.shape
  for _ in range(aug.freq_masks):
    width = int(rng.integers(0, aug.freq_width + 1))
    start = int(rng.integers(0, max(1, f - width + 1)))
    feats[:, start:start + width] = 0.0
  for _ in range(aug.time_masks):
    width = int(rng.integers(0, min(aug.time_width, t // 10) + 1))
    start = int(rng.integers(0, max(1, t - width + 1)))
    feats[start:start + width] = 0.0
  return feats


def features(x: np.ndarray, frames: int, form: Form = LOG_MEL) -> np.ndarray:
  """[frames, 81]: the features of waveform `x` as `form` makes them, then the frame mask,
  zero-padded."""
  return with_mask(form.log_mel(x, frames), frames)


def with_mask(feats_TF: np.ndarray, frames: int) -> np.ndarray:
  out = np.zeros((frames, feats_TF.shape[1] + 1), np.float32)
  out[:len(feats_TF), :-1] = feats_TF
  out[:len(feats_TF), -1] = 1.0
  return out


def target_row(tokenizer, text: str, max_length: int,
               form: Form = LOG_MEL) -> dict[str, np.ndarray]:
  """One transcript as a row: ids then EOS, zero-padded, segment 1, positions 0, 1, ..."""
  tokens = form.ids(tokenizer, text)[:max_length]
  n = len(tokens)
  ids = np.zeros(max_length, np.int32)
  ids[:n] = tokens
  return {"targets": ids, "targets_segment_ids": (np.arange(max_length) < n).astype(np.int32),
          "targets_positions": np.where(np.arange(max_length) < n, np.arange(max_length),
                                        0).astype(np.int32)}


def fits(utts: Utterances, tokenizer, max_frames: int, max_length: int,
         form: Form = LOG_MEL) -> list[int]:
  """Indices of the utterances whose features fit `max_frames` and transcript ids (with
  EOS) `max_length`."""
  frames = utts.frames()
  return [i for i, text in enumerate(utts.texts)
          if frames[i] <= max_frames and len(form.ids(tokenizer, text)) <= max_length]


class _Featurize(grain.transforms.RandomMap):
  """An utterance's index -> its augmented features [frames, 80] and ids (then EOS)."""

  def __init__(self, utts: Utterances, tokenizer, max_frames: int, aug: Augment, form: Form):
    self._utts, self._tokenizer, self._aug, self._frames = utts, tokenizer, aug, max_frames
    self._form = form

  def random_map(self, index, rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = change_speed(waveform(self._utts.samples[index]), self._aug, rng, self._frames)
    x = augment_waveform(x, self._aug, rng)
    # Drawn to 3 decimals: each factor's filters are built once (audio.mel_filters).
    warp = round(rng.uniform(*self._aug.warp), 3) if self._aug.warp != (1.0, 1.0) else 1.0
    feats = self._form.log_mel(x, self._frames, warp)
    return {"inputs": spec_augment(feats, self._aug, rng),
            "targets": self._form.ids(self._tokenizer, self._utts.texts[index])}


class _MaskChannel(grain.transforms.Map):
  """A packed row -> the model's row: the frames' segment ids become the last channel."""

  def map(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    segments = row["inputs_segment_ids"].astype(np.float32)[:, None]
    return {"inputs": np.concatenate([row["inputs"], segments], axis=1),
            **{k: row[k] for k in ("targets", "targets_segment_ids", "targets_positions")}}


class SpeechTrainStream(streams.RowStreams):
  """Utterances (the indices in `use`): each row's slice reshuffled every epoch,
  augmented, featurized and packed (frames and tokens) into rows."""

  def __init__(self, utts: Utterances, use: Sequence[int], tokenizer, *, global_batch_size: int,
               rows: Sequence[int], max_frames: int, max_length: int, seed: int, aug: Augment,
               num_packing_bins: int = 8, form: Form = LOG_MEL):
    featurize = _Featurize(utts, tokenizer, max_frames, aug, form)

    def row_dataset(indices: grain.MapDataset, seed: int) -> grain.IterDataset:
      ds = indices.shuffle(seed=seed).repeat(None).random_map(featurize, seed=seed)
      ds = grain.experimental.FirstFitPackIterDataset(
          ds.to_iter_dataset(streams.ROW_READ_OPTIONS),
          length_struct={"inputs": max_frames, "targets": max_length},
          num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=True)
      return ds.map(_MaskChannel())
    super().__init__(list(use), row_dataset, global_batch_size=global_batch_size, rows=rows,
                     seed=seed, what="utterances")


def eval_batches(utts: Utterances, use: Sequence[int], tokenizer, *, batch_size: int,
                 max_frames: int, max_length: int, process_index: int = 0,
                 process_count: int = 1, form: Form = LOG_MEL) -> list[dict[str, np.ndarray]]:
  """One pass over this process's share of the utterances `use` (clean features), in
  batches of exactly `batch_size` rows; the last is filled with padding rows."""
  mine = [use[i] for i in streams.process_shard(len(use), process_index, process_count)]
  batches = []
  for start in range(0, len(mine), batch_size):
    idx = mine[start:start + batch_size]
    targets = [target_row(tokenizer, utts.texts[i], max_length, form) for i in idx]
    batch = {"inputs": np.stack([features(waveform(utts.samples[i]), max_frames, form)
                                 for i in idx]),
             **{k: np.stack([t[k] for t in targets]) for k in targets[0]}}
    batches.append(streams.pad_batch(batch, batch_size))
  return batches


def decode_in_batches(utts: Utterances, *, batch_size: int, decode_batch, tokenizer,
                      segment_frames: int = 0, form: Form = LOG_MEL) -> list[str]:
  """One transcript per utterance, in order: `decode_batch(inputs [batch_size, T, 81], n)`
  gives each global batch's output ids. Utterances are decoded shortest first, each batch
  padded to the next multiple of DECODE_FRAMES (whisper: to the window). With
  `segment_frames` > 0, utterances longer than that are cut at pauses into pieces that
  fit, decoded as utterances of their own and joined (segments.py). `form`: the features
  as the model trained."""
  if segment_frames > 0:
    pieces, owners = segments.split(utts.samples, segment_frames)
    texts = decode_in_batches(Utterances(pieces, [""] * len(pieces)), batch_size=batch_size,
                              decode_batch=decode_batch, tokenizer=tokenizer,
                              form=form)
    return segments.join(texts, owners, len(utts))
  frames = utts.frames()

  def inputs_of(idx):
    length = (form.window if form.whisper else
              -(-int(frames[idx[-1]]) // DECODE_FRAMES) * DECODE_FRAMES)
    inputs = np.zeros((batch_size, length, audio.N_MELS + 1), np.float32)
    inputs[len(idx):, :, -1] = float(form.whisper)  # padding rows (Whisper masks nothing).
    for row, i in enumerate(idx):
      inputs[row] = features(waveform(utts.samples[i]), length, form)
    return inputs
  return streams.decode_shortest_first(frames, batch_size, inputs_of, decode_batch,
                                       tokenizer.decode)
