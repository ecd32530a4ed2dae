"""The speech kind's splits: sentences spoken once into a cache, recordings read once.

`load_speech(config.data, cache_dir)` gives train / validation / test utterances
(16 kHz int16 samples with their transcripts) and, where the Asterisk prompts are
installed and `config.data.real_speech` asks for them, the real recordings:

- `tts`: the catalog sentences (with `common_words` N > 0, only those made of the
  N most frequent words) split by a hash of their normal form (so no sentence sits
  in two splits); training sentences spoken by the training voices, validation
  and test sentences each by a voice held out of training (speech.VALIDATION_VOICE,
  speech.HELD_OUT_VOICE); with `voices_per_sentence` k each training sentence is
  spoken k times, each time in a voice drawn for it.
  The synthesis runs once, on all cores, into CACHE/<split>-<hash>.npz; the hash
  covers everything that decides the audio, so a changed config makes new files
  and an unchanged one (a resume) reads them back.
- `files`: the user's lists, split by transcript hash (or their own validation and
  test lists), read and resampled once.
- real recordings: the Asterisk prompts split by transcript hash (fraction
  `real_test_fraction` for the test); `real_validation_fraction` of the rest, drawn
  by a second hash (so the test split does not move), is a real validation split;
  with real_speech='train_test' the remainder joins the training split
  `real_train_repeats` times.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os

import numpy as np

from transformer_jax.data.splits import (CorpusError, NamedSplits, config_field, hash_order,
                                         load_splits, split_by_hash)
from transformer_jax.kinds.speech import audio, corpus as speech

CACHE_VERSION = 1
REAL_SPEECH = ("off", "test", "train_test")


@dataclasses.dataclass(frozen=True)
class Utterances:
  """Speech with transcripts: samples[i] (int16 at 16 kHz) says texts[i]."""
  samples: list[np.ndarray]
  texts: list[str]

  def __len__(self) -> int:
    return len(self.texts)

  def frames(self) -> np.ndarray:
    """Each utterance's number of 10 ms feature frames (audio.log_mel's)."""
    return np.asarray([1 + len(s) // audio.HOP for s in self.samples], np.int64)

  def seconds(self) -> float:
    return sum(len(s) for s in self.samples) / audio.SAMPLE_RATE

  def take(self, indices) -> "Utterances":
    """The utterances at `indices`, in that order."""
    return Utterances([self.samples[i] for i in indices], [self.texts[i] for i in indices])

  def __add__(self, other: "Utterances") -> "Utterances":
    return Utterances(self.samples + other.samples, self.texts + other.texts)


@dataclasses.dataclass(frozen=True)
class SpeechSplits(NamedSplits):
  train: Utterances
  validation: Utterances
  test: Utterances
  real_test: Utterances | None  # the Asterisk test prompts (None: not asked or not installed).
  real_train: int = 0  # how many training utterances are real recordings (each repeat counted).
  # Asterisk prompts held out of training for eval/real_wer (None: none asked for).
  real_validation: Utterances | None = None


def to_int16(samples: np.ndarray, rate: int) -> np.ndarray:
  x = audio.resample(samples, rate) if rate != audio.SAMPLE_RATE else samples
  return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def read_audio(path, name: str | None = None) -> np.ndarray:
  """A WAV file (a path, or a binary file object called `name`) as int16 samples at 16 kHz
  (AudioError names a bad file)."""
  return to_int16(*audio.read_wav(path, name))


def read_rows(rows) -> Utterances:
  """(wav path, transcript) rows, read and resampled."""
  return Utterances([read_audio(path) for path, _ in rows], [t for _, t in rows])


# --------------------------------------------------------------------------- the cache


def _save(path: str, utts: Utterances) -> None:
  offsets = np.cumsum([0] + [len(s) for s in utts.samples]).astype(np.int64)
  samples = np.concatenate(utts.samples) if utts.samples else np.zeros(0, np.int16)
  tmp = f"{path}.tmp-{os.getpid()}.npz"
  np.savez(tmp, samples=samples, offsets=offsets,
           texts=np.asarray(json.dumps(utts.texts, ensure_ascii=False)))
  os.replace(tmp, path)


def _load(path: str) -> Utterances | None:
  try:
    with np.load(path, allow_pickle=False) as data:
      samples, offsets = data["samples"], data["offsets"]
      texts = json.loads(str(data["texts"]))
  except (OSError, ValueError, KeyError):
    return None  # absent or damaged: made again.
  return Utterances([samples[a:b] for a, b in zip(offsets[:-1], offsets[1:])], texts)


def cached(cache_dir: str, name: str, recipe: dict, make) -> Utterances:
  """CACHE/name-<hash of recipe>.npz, made by `make()` when absent or unreadable."""
  key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **recipe}, sort_keys=True)
                       .encode()).hexdigest()[:12]
  path = os.path.join(cache_dir, f"{name}-{key}.npz")
  utts = _load(path)
  if utts is None:
    utts = make()
    os.makedirs(cache_dir, exist_ok=True)
    _save(path, utts)
  return utts


def speak(texts: list[str], voices: list[str], seed: int, workers: int = 0) -> Utterances:
  """`texts` spoken by voices fixed per text (speech.voice_for), synthesisers run in
  parallel (`workers`, 0: one per core)."""
  def one(text):
    return to_int16(*speech.synthesize(text, speech.voice_for(text, voices, seed)))
  with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
    samples = list(pool.map(one, texts))
  return Utterances(samples, list(texts))


# --------------------------------------------------------------------------- sources


def _files_splits(d) -> dict[str, Utterances]:
  def read(paths):
    return [row for p in paths for row in speech.read_speech_file(p)]

  def build(parts):
    return {name: read_rows(rows) for name, rows in parts.items()}
  return load_splits(d, builtin={}, read_files=read,
                     identities=lambda rows: [speech.normalize(t) for _, t in rows],
                     build=build, reader="a speech_to_text model", noun="utterances",
                     files_hint="TSV (audio path<TAB>transcript) or JSONL "
                                '({"audio": ..., "text": ...}) files')


def _tts_texts(d) -> dict[str, tuple[list[str], list[str]]]:
  """{split: (sentences, voices)} of the synthetic splits (the held-out voices for
  validation and test)."""
  engines = speech.check_engines()
  sentences = speech.common_word_sentences(speech.english_sentences(list(d.locale_dirs)),
                                          config_field(d, "common_words", 0))
  if not sentences:
    raise CorpusError(f"config.data.locale_dirs={tuple(d.locale_dirs)}: no English catalog "
                      "sentences to speak (install packages with translations, e.g. "
                      "apt-get install coreutils-l10n, or use data.source='files')")
  parts = split_by_hash(sentences, speech.normalize, d.validation_fraction, d.test_fraction)
  train = hash_order(parts["train"], speech.normalize)
  if d.max_utterances:
    train = train[:d.max_utterances]
  held_out = lambda t: t[:d.max_eval_utterances] if d.max_eval_utterances else t  # noqa: E731
  return {"train": (train, _training_voices(d, engines)),
          "validation": (held_out(parts["validation"]), [speech.VALIDATION_VOICE]),
          "test": (held_out(parts["test"]), [speech.HELD_OUT_VOICE])}


def tts_split(d, cache_dir: str, name: str, texts_voices=None) -> Utterances:
  """One synthetic split ("train", "validation", "test"), spoken once (cached);
  `texts_voices`: _tts_texts(d)[name] where the caller has it."""
  texts, voices = texts_voices or _tts_texts(d)[name]
  speakers = config_field(d, "voices_per_sentence", 1)
  seeds = range(speakers if name == "train" else 1)
  times = {"seeds": len(seeds)} if len(seeds) > 1 else {}  # (once: the key as before)
  return cached(cache_dir, f"tts-{name}", {"engines": speech.check_engines(), "voices": voices,
                                           "texts": texts, **times},
                lambda: speak_each(texts, voices, seeds))


def _tts_splits(d, cache_dir: str) -> dict[str, Utterances]:
  texts = _tts_texts(d)
  return {name: tts_split(d, cache_dir, name, texts[name]) for name in texts}


def _training_voices(d, engines) -> list[str]:
  return speech.training_voices(engines, config_field(d, "espeak_variants", ()),
                                config_field(d, "flite_voices", speech.FLITE_VOICES),
                                config_field(d, "flite_share", 0.0))


def _spoken_real_transcripts(d, cache_dir: str, real_train: Utterances) -> Utterances:
  """The real training prompts' transcripts spoken by the training voices,
  `tts_real_transcripts` times each (a voice drawn for each time)."""
  engines = speech.check_engines()
  texts, voices = list(real_train.texts), _training_voices(d, engines)
  seeds = range(d.tts_real_transcripts)
  return cached(cache_dir, "tts-real-train", {"engines": engines, "voices": voices,
                                              "texts": texts, "seeds": len(seeds)},
                lambda: speak_each(texts, voices, seeds))


def speak_each(texts: list[str], voices: list[str], seeds) -> Utterances:
  """`texts` spoken once per seed, each time in the voice that seed draws for it."""
  out = Utterances([], [])
  for seed in seeds:
    out = out + speak(texts, voices, seed=seed)
  return out


def spell_digits(text: str) -> str:
  """Single digits and the keypad's keys as the words a speaker says ("press 1" ->
  "press one", "press #" -> "press pound", "*" -> "star")."""
  words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
  keys = {"*": "star", "#": "pound"}
  return " ".join(words[int(w)] if len(w) == 1 and w.isdigit() else keys.get(w, w)
                  for w in text.replace(",", " , ").split()).replace(" , ", ", ")


def real_prompt_splits(prompts, test_fraction: float,
                       validation_fraction: float) -> dict[str, list[tuple[str, str]]]:
  """(wav path, transcript) prompts by split. The test split is `test_fraction` of them
  by one hash of the transcript; validation takes `validation_fraction` of the rest by
  a second hash, so that asking for it leaves the test split as it was."""
  key = lambda p: speech.normalize(p[1])  # noqa: E731
  parts = split_by_hash(prompts, key, 0.0, test_fraction)
  rest = split_by_hash(parts["train"], lambda p: "real validation: " + key(p),
                       validation_fraction, 0.0)
  parts.update(train=rest["train"], validation=rest["validation"])
  return parts


def real_splits(d, cache_dir: str) -> dict[str, Utterances]:
  """The Asterisk prompts' train and test splits, and validation where asked for, each
  prompt once (load_speech adds the training prompts to the training split, repeated)."""
  prompts = [(path, spell_digits(text)) for path, text in speech.asterisk_prompts()]
  fraction = config_field(d, "real_validation_fraction", 0.0)
  parts = real_prompt_splits(prompts, d.real_test_fraction, fraction)
  if fraction > 0 and not parts["validation"]:
    raise CorpusError(f"config.data.real_validation_fraction={fraction} holds none of the "
                      f"{len(parts['train'])} real training prompts; raise it")
  return {name: cached(cache_dir, f"real-{name}", {"rows": rows},
                       lambda rows=rows: read_rows(rows))
          for name, rows in parts.items() if rows or name != "validation"}


def load_speech(d, cache_dir: str) -> SpeechSplits:
  """The speech splits that config.data (`d`) describes; synthesised or read audio is
  cached under `cache_dir`."""
  real = config_field(d, "real_speech", "off")
  if real not in REAL_SPEECH:
    raise CorpusError(f"config.data.real_speech={real!r}: expected one of {REAL_SPEECH}")
  if d.source == "tts":
    parts = _tts_splits(d, cache_dir)
  elif d.source == "files":
    parts = _files_splits(d)
  else:
    raise CorpusError(f"config.data.source={d.source!r}: a speech_to_text model reads 'tts' "
                      "or 'files'")
  for name in ("train", "validation", "test"):
    if not len(parts[name]):
      raise CorpusError(f"the {name} split has no utterances (config.data.source="
                        f"{d.source!r}); give more data or change the fractions")
  prompts, real_train = (real_splits(d, cache_dir) if real != "off" else {}), 0
  if real == "train_test":
    for _ in range(d.real_train_repeats):
      parts["train"] = parts["train"] + prompts["train"]
    real_train = len(prompts["train"]) * d.real_train_repeats
    if config_field(d, "tts_real_transcripts", 0) > 0 and d.source == "tts":
      parts["train"] = parts["train"] + _spoken_real_transcripts(d, cache_dir, prompts["train"])
  return SpeechSplits(parts["train"], parts["validation"], parts["test"], prompts.get("test"),
                      real_train, prompts.get("validation"))
