"""Speech that trains offline: synthesised sentences, real telephone prompts, the user's files.

- `tts`: English sentences (the English side of the installed gettext catalogs) spoken
  by espeak-ng (and flite where installed) in many voices, speeds and pitches, with a
  little noise; two voices are held out of training, one for the validation split and
  one for the test split.
- real recordings: the Asterisk project's English prompts (one speaker, 8 kHz,
  CC-BY-SA-3.0) with their transcripts, from `apt-get install asterisk-core-sounds-en-wav
  asterisk-core-sounds-en`.
- `files`: TSV (`audio path<TAB>transcript`) or JSONL ({"audio": ..., "text": ...}).

Transcripts are compared in one normal form (`normalize`): lower case, letters,
digits and apostrophes, single spaces, as WER is usually scored.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

import numpy as np

from transformer_jax.data.gettext import find_catalogs, read_catalog
from transformer_jax.data.splits import CorpusError
from transformer_jax.kinds.speech import audio
from transformer_jax.metrics.scores import normalize_transcript

TTS_INSTALL = "apt-get install espeak-ng flite"
REAL_INSTALL = "apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en"
ASTERISK_SOUNDS = "/usr/share/asterisk/sounds/en_US_f_Allison"
ASTERISK_TRANSCRIPTS = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"

# espeak-ng's English voices that need no extra data (the mb-* voices need mbrola), and
# its voice variants (config.data.espeak_variants; empty: ESPEAK_VARIANTS): together the
# training voices. The test voice and the validation voice each use an accent and a
# variant that no training voice has, so that validation measures what the test does:
# how well the model hears a voice it never heard.
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "f1", "f2", "f3", "f5", "klatt", "klatt3")
FLITE_VOICES = ("kal", "awb", "rms")
HELD_OUT_VOICE = "espeak-ng:en-029+f4"
VALIDATION_VOICE = "espeak-ng:en-us-nyc+linda"
# Variants that never train: the test's and validation's, and those that copy their
# formants (aunty has f4's, belinda linda's).
HELD_OUT_VARIANTS = ("f4", "aunty", "linda", "belinda")


# The form transcripts are compared in (lower case; letters, digits, apostrophes).
normalize = normalize_transcript


_SPEAKABLE = re.compile(r"^[A-Za-z][A-Za-z' ,.?!-]*$")


def english_sentences(locale_dirs: Sequence[str], lang: str = "de", min_words: int = 2,
                      max_words: int = 12) -> list[str]:
  """English messages of the installed gettext catalogs that a synthesiser reads as
  written: words and plain punctuation only (no placeholders, markup, paths or
  digits), `min_words` to `max_words` words; sorted, one per normal form."""
  seen: dict[str, str] = {}
  for path in find_catalogs(locale_dirs, lang):
    try:
      entries = list(read_catalog(path))
    except (OSError, UnicodeDecodeError, ValueError):
      continue
    for msgid, _ in entries:
      text = " ".join(msgid.split())
      if not _SPEAKABLE.match(text) or "_" in text or "--" in text:
        continue
      key = normalize(text)
      if min_words <= len(key.split()) <= max_words and key not in seen:
        seen[key] = text
  return sorted(seen.values())


def common_word_sentences(sentences: Sequence[str], num_words: int) -> list[str]:
  """The sentences all of whose words (normal form) are among the `num_words` most
  frequent words of all `sentences` (ties broken alphabetically); 0 keeps every one."""
  if num_words <= 0:
    return list(sentences)
  counts: dict[str, int] = {}
  for text in sentences:
    for word in normalize(text).split():
      counts[word] = counts.get(word, 0) + 1
  common = set(sorted(counts, key=lambda w: (-counts[w], w))[:num_words])
  return [t for t in sentences if all(w in common for w in normalize(t).split())]


# --------------------------------------------------------------------------- synthesis


@dataclasses.dataclass(frozen=True)
class Voice:
  engine: str  # "espeak-ng" | "flite"
  name: str  # espeak-ng "en-us+m3", flite "kal"
  speed: int = 0  # espeak-ng words per minute (0: its default); flite ignores it.
  pitch: int = 0  # espeak-ng 0-99 (0: its default)

  @property
  def label(self) -> str:
    return f"{self.engine}:{self.name}"

  def command(self, text: str, path: str) -> list[str]:
    if self.engine == "espeak-ng":
      cmd = ["espeak-ng", "-v", self.name, "-w", path]
      if self.speed:
        cmd += ["-s", str(self.speed)]
      if self.pitch:
        cmd += ["-p", str(self.pitch)]
      return cmd + ["--", text]
    return ["flite", "-voice", self.name, "-t", text, "-o", path]


def parse_voice(label: str) -> Voice:
  engine, _, name = label.partition(":")
  if engine not in ("espeak-ng", "flite") or not name:
    raise CorpusError(f"voice {label!r}: expected 'espeak-ng:<voice>[+variant]' or "
                      "'flite:<voice>'")
  return Voice(engine, name)


def check_engines(need_flite: bool = False) -> list[str]:
  """The synthesisers installed (espeak-ng first); CorpusError with the install line
  when espeak-ng (or, with `need_flite`, flite) is missing."""
  found = [e for e in ("espeak-ng", "flite") if shutil.which(e)]
  if "espeak-ng" not in found or (need_flite and "flite" not in found):
    raise CorpusError(f"config.data.source='tts' speaks its sentences with espeak-ng"
                      f"{' and flite' if need_flite else ''}, which this machine lacks; "
                      f"install them: {TTS_INSTALL}")
  return found


def variants_problem(variants: Sequence[str]) -> str | None:
  """Why these espeak-ng variants cannot train, or None."""
  held = sorted(set(variants) & set(HELD_OUT_VARIANTS))
  if held:
    return (f"{held} speak the validation or test split (or copy their voices) and "
            f"cannot train; leave out {HELD_OUT_VARIANTS}")
  return None


def flite_voices_problem(voices: Sequence[str]) -> str | None:
  """Why these flite voices cannot speak, or None (flite speaks an unknown voice's text
  in its default voice without a word, so the names are checked against `flite -lv`;
  without flite there is nothing to check)."""
  if not shutil.which("flite"):
    return None
  listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False,
                          timeout=30).stdout.partition(":")[2].split()
  unknown = [v for v in voices if v not in listed]
  if unknown:
    return f"flite has no voice {unknown}; it has {listed} (`flite -lv`)"
  return None


def training_voices(engines: Sequence[str], variants: Sequence[str] = (),
                    flite_voices: Sequence[str] = FLITE_VOICES,
                    flite_share: float = 0.0) -> list[str]:
  """Voice labels for training: every espeak-ng accent x variant (`variants`, empty:
  ESPEAK_VARIANTS), and `flite_voices` where flite is installed. With `flite_share` > 0
  the flite voices are listed again and again, so that a voice drawn from the list
  (voice_for) is flite's about that often; with 0, every voice is as likely as another.
  CorpusError names a held-out variant."""
  variants = tuple(variants) or ESPEAK_VARIANTS
  problem = variants_problem(variants)
  if problem:
    raise CorpusError(f"config.data.espeak_variants: {problem}")
  voices = [f"espeak-ng:{a}+{v}" for a in ESPEAK_ACCENTS for v in variants]
  if "flite" in engines and flite_voices:
    times = 1
    if flite_share > 0:
      times = max(1, round(flite_share / (1 - flite_share) * len(voices) / len(flite_voices)))
    voices += [f"flite:{v}" for v in flite_voices] * times
  return voices


def _seed(*parts) -> int:
  return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:8],
                        "little")


def voice_for(text: str, voices: Sequence[str], seed: int = 0) -> Voice:
  """A voice, speed and pitch for `text`, fixed by a hash of it (the same every run)."""
  rng = np.random.default_rng(_seed(text, seed))
  base = parse_voice(voices[int(rng.integers(len(voices)))])
  if base.engine == "flite":
    return base
  return dataclasses.replace(base, speed=int(rng.integers(130, 200)),
                             pitch=int(rng.integers(25, 75)))


def synthesize(text: str, voice: Voice, timeout: float = 30.0) -> tuple[np.ndarray, int]:
  """(samples, rate) of `text` spoken by `voice`."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "speech.wav")
    try:
      subprocess.run(voice.command(text, path), check=True, capture_output=True,
                     timeout=timeout)
    except FileNotFoundError as e:
      raise CorpusError(f"{voice.engine} is not installed: {TTS_INSTALL}") from e
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
      raise CorpusError(f"{voice.label} could not speak {text!r}: {e}") from e
    return audio.read_wav(path)


def add_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
  """White noise at `snr_db` below the signal's power."""
  power = float(np.mean(np.square(samples))) or 1e-8
  noise = np.random.default_rng(seed).standard_normal(len(samples)).astype(np.float32)
  return samples + noise * np.float32(np.sqrt(power / 10 ** (snr_db / 10)))


# --------------------------------------------------------------------------- recordings


def asterisk_prompts(sounds: str = ASTERISK_SOUNDS,
                     transcripts: str = ASTERISK_TRANSCRIPTS) -> list[tuple[str, str]]:
  """(wav path, transcript) of the Asterisk English prompts that are speech: the
  transcript file's `name: text` lines whose wav exists, without bracketed tones
  ("[beep]") or parenthesised notes ("(simple tone sound plays)"; the silence files'
  "(5 seconds of silence)" leaves nothing) and without empty texts. CorpusError with
  the install line when the package is missing."""
  if not os.path.isdir(sounds) or not os.path.isfile(transcripts):
    raise CorpusError(f"the real-speech test reads the Asterisk prompts ({sounds}), which "
                      f"this machine lacks; install them: {REAL_INSTALL}")
  with gzip.open(transcripts, "rt", encoding="utf-8", errors="replace") as f:
    lines = f.read().splitlines()
  out = []
  for line in lines:
    name, sep, text = line.partition(":")
    if not sep or line.startswith(";"):
      continue
    text = " ".join(re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", text).split())
    path = os.path.join(sounds, name.strip() + ".wav")
    if normalize(text) and os.path.isfile(path):
      out.append((path, text))
  return sorted(out)


def read_speech_file(path: str) -> list[tuple[str, str]]:
  """(audio path, transcript) rows of a TSV or JSONL file; relative audio paths are
  relative to the file's folder. Rows whose transcript is empty are skipped and counted
  like malformed lines; an audio file that is missing is named."""
  from transformer_jax.data.files import read_two_field_file  # pylint: disable=import-outside-toplevel
  rows, empty, folder = [], 0, os.path.dirname(os.path.abspath(path))
  for lineno, audio_path, text in read_two_field_file(path, ("audio", "text"), "speech"):
    if not normalize(str(text)):
      empty += 1
      continue
    full = audio_path if os.path.isabs(audio_path) else os.path.join(folder, audio_path)
    if not os.path.isfile(full):
      raise CorpusError(f"{path}:{lineno}: audio file not found: {full}")
    rows.append((full, str(text)))
  if empty:
    print(f"note: {path}: skipped {empty} row(s) with an empty transcript", flush=True)
  if not rows:
    raise CorpusError(f"{path}: no row with a transcript")
  return rows
