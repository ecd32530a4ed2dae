"""Transcription with pretrained Whisper weights, no training: `transcribe --whisper=...`.

  w = load("tiny.en")          # or "base", a CTranslate2 folder, a Hugging Face folder
  texts = transcribe(w, [samples_16k, ...], batch_size=8)

The weights become our speech_to_text model (pretrained/whisper.py; a CTranslate2 model
is converted once into a Hugging Face folder in the user cache,
pretrained/ctranslate2_folder.py). Every recording is cut into 30-second windows (Whisper's
only input length: 3,000 frames, zero-padded), each window's features are Whisper's
(audio.whisper_log_mel), and the decoder starts from the folder's start token, then the
language and task tokens of a multilingual model and <|notimestamps|>, with the folder's
suppressed tokens (decode/prompted.py). The windows' texts are joined with a space.
Windows are decoded in batches of a fixed size (the last one padded), so one program is
compiled per decoding method.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import numpy as np

from transformer_jax import pretrained
from transformer_jax.decode import prompted, search
from transformer_jax.kinds.speech import audio, pipeline as speech_pipeline
from transformer_jax.models.config import TransformerConfig
from transformer_jax.pretrained import whisper_folder
from transformer_jax.pretrained.tensors import PretrainedError

WINDOW = audio.WHISPER_SECONDS * audio.SAMPLE_RATE  # samples in one window.
FORM = speech_pipeline.Form(features="whisper", window=audio.WHISPER_FRAMES)


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity (the programs' cache).
class Whisper:
  folder: str
  config: TransformerConfig
  params: Any
  tokenizer: Any  # tokenizers.Tokenizer of the folder's tokenizer.json.
  prompt: prompted.Prompt
  vocab_size: int  # the folder's (our model's vocabulary is padded past it).
  max_target_positions: int


def load(spec: str, language: str = "en", task: str = "transcribe") -> Whisper:
  import tokenizers  # pylint: disable=import-outside-toplevel
  folder = whisper_folder.folder_of(spec)
  _, params, cfg = pretrained.load_hf(folder)
  file = os.path.join(folder, "tokenizer.json")
  if not os.path.exists(file):
    raise PretrainedError(f"{folder}: no tokenizer.json (Whisper's tokenizer)")
  g = whisper_folder.generation_fields(folder)
  return Whisper(folder, cfg, params, tokenizers.Tokenizer.from_file(file),
                 whisper_folder.prompt_of(folder, g, language, task), int(g["vocab_size"]),
                 int(g.get("max_target_positions", cfg.max_length)))


def windows(samples: np.ndarray) -> list[np.ndarray]:
  """16 kHz samples cut into 30-second windows (at least one; the last may be shorter)."""
  return [samples[i:i + WINDOW] for i in range(0, max(len(samples), 1), WINDOW)]


@functools.lru_cache(maxsize=8)
def _program(w: Whisper, options: search.DecodeOptions, max_length: int):
  return jax.jit(functools.partial(prompted.transcribe, config=w.config, options=options,
                                   prompt=w.prompt, max_length=max_length,
                                   vocab_limit=w.vocab_size))


def max_new_tokens(w: Whisper) -> int:
  """Tokens a window may write: half the decoder's positions (224, as Whisper's sample_len)."""
  return w.max_target_positions // 2


def decode_text(w: Whisper, ids: np.ndarray) -> str:
  ids = [int(t) for t in ids]
  end = ids.index(w.prompt.eos_id) if w.prompt.eos_id in ids else len(ids)
  return w.tokenizer.decode(ids[:end], skip_special_tokens=True).strip()


def transcribe(w: Whisper, recordings: list[np.ndarray], *, batch_size: int = 8,
               options: search.DecodeOptions | None = None, seed: int = 0) -> list[str]:
  """One text per recording (16 kHz float samples)."""
  options = options or search.DecodeOptions(method="greedy")
  pieces = [(r, k, piece) for r, samples in enumerate(recordings)
            for k, piece in enumerate(windows(samples))]
  # Longest first: a batch's loop runs until its longest transcript ends, and windows of
  # like lengths say like amounts.
  pieces.sort(key=lambda p: -len(p[2]))
  program = _program(w, options, max_new_tokens(w))
  found: dict[tuple[int, int], str] = {}
  for start in range(0, len(pieces), batch_size):
    chunk = pieces[start:start + batch_size]
    feats = np.zeros((batch_size, FORM.window, audio.N_MELS + 1), np.float32)
    for row, (_, _, samples) in enumerate(chunk):
      # Every frame of the window counts (Whisper masks nothing).
      feats[row] = speech_pipeline.features(samples, FORM.window, FORM)
    feats[len(chunk):, :, -1] = 1.0  # padding rows: decoded and dropped.
    ids = np.asarray(program(w.params, feats, jax.random.key(seed + start)))
    for row, (r, k, _) in enumerate(chunk):
      found[r, k] = decode_text(w, ids[row])
  texts: list[list[str]] = [[] for _ in recordings]
  for (r, _), text in sorted(found.items()):  # each recording's windows in order.
    if text:
      texts[r].append(text)
  return [" ".join(t) for t in texts]
