"""A Whisper model's folder and its decoder prompt, for transcription and for fine-tuning.

  folder = folder_of("tiny.en")        # or "base", a CTranslate2 folder, a Hugging Face one
  prompt = prompt_of(folder, generation_fields(folder))   # Whisper's own token ids

A CTranslate2 model (a WHISPER_PACKAGES name, or a folder with model.bin) is converted once
into a Hugging Face folder in the user cache (ctranslate2_folder.py). The prompt is what
Whisper's decoder is fed before it writes: <|startoftranscript|>, the language and task
tokens of a multilingual model, <|notimestamps|>; with the tokens it never writes.
`fine_tuning_fields` gives the same prompt in the shifted id layout of a run that tunes the
folder (data/hf_tokenizer.py: every id + 2, <|endoftext|> our EOS): the model's
`decoder_start_id` and the data's `target_prefix`.
"""

from __future__ import annotations

import json
import os

from transformer_jax.decode.prompted import Prompt
from transformer_jax.pretrained import ctranslate2_folder
from transformer_jax.pretrained.tensors import PretrainedError


def folder_of(spec: str, flag: str = "--whisper") -> str:
  """The Hugging Face folder of `spec`: a package name ("tiny.en", "base"), a CTranslate2
  model folder (model.bin), or a Hugging Face whisper folder as it is."""
  if (spec in ctranslate2_folder.WHISPER_PACKAGES
      or os.path.isfile(os.path.join(spec, "model.bin"))):
    return ctranslate2_folder.hf_folder_of(spec)
  if not os.path.isdir(spec):
    raise PretrainedError(f"{flag}={spec}: not one of "
                          f"{sorted(ctranslate2_folder.WHISPER_PACKAGES)} nor a folder (a "
                          "CTranslate2 model or a Hugging Face whisper folder)")
  return spec


def generation_fields(folder: str) -> dict:
  """config.json's token fields under generation_config.json's (transformers' order)."""
  fields = {}
  for name in ("config.json", "generation_config.json"):
    path = os.path.join(folder, name)
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        fields.update({k: v for k, v in json.load(f).items() if v is not None})
  return fields


def prompt_of(folder: str, g: dict, language: str = "en", task: str = "transcribe",
              flags: tuple[str, str] = ("--language", "--task")) -> Prompt:
  """The decoder prompt of the folder's model (`g`: its generation_fields): start,
  [language, task,] <|notimestamps|>."""
  for field in ("decoder_start_token_id", "eos_token_id", "no_timestamps_token_id"):
    if not isinstance(g.get(field), int):
      raise PretrainedError(f"{folder}: generation_config.json / config.json has no {field}")
  ids: tuple[int, ...] = ()
  if g.get("is_multilingual", False):
    languages, tasks = g.get("lang_to_id", {}), g.get("task_to_id", {})
    if f"<|{language}|>" not in languages:
      raise PretrainedError(f"{flags[0]}={language!r}: the model knows "
                            f"{', '.join(sorted(k.strip('<|>') for k in languages)) or 'none'}")
    if task not in tasks:
      raise PretrainedError(f"{flags[1]}={task!r}: the model knows {sorted(tasks)}")
    ids = (languages[f"<|{language}|>"], tasks[task])
  return Prompt(
      start_id=g["decoder_start_token_id"], prompt_ids=ids + (g["no_timestamps_token_id"],),
      eos_id=g["eos_token_id"], suppress_ids=tuple(g.get("suppress_tokens") or ()),
      begin_suppress_ids=tuple(g.get("begin_suppress_tokens") or ()))


def fine_tuning_fields(folder: str, language: str, offset: int, eos_id: int) -> dict:
  """{"decoder_start_id", "target_prefix"}: the folder's prompt in a run's ids (`offset`
  and `eos_id`: the run's tokenizer's, data/hf_tokenizer.py)."""
  p = prompt_of(folder, generation_fields(folder), language, "transcribe",
                ("config.init_from.whisper_language", "task"))

  def ours(i: int) -> int:
    return eos_id if offset and i == p.eos_id else i + offset
  return {"decoder_start_id": ours(p.start_id),
          "target_prefix": tuple(ours(i) for i in p.prompt_ids)}
