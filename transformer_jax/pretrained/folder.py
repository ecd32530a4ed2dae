"""Reading a Hugging Face model folder: config.json, the weights, the tokenizer's size.

`read_folder` checks everything before anything is built: the model type, the
architecture's fields, every tensor's presence and shape, and that the
tokenizer's vocabulary fits the embedding. Weights come from model.safetensors
(numpy, no torch) or, where torch is installed, pytorch_model.bin loaded with
`weights_only=True` (no arbitrary objects are unpickled).
"""

from __future__ import annotations

import dataclasses
import json
import os
from types import ModuleType

import numpy as np

from transformer_jax import kinds
from transformer_jax.pretrained import bert, gpt2, llama, whisper
from transformer_jax.pretrained.tensors import PretrainedError, Tensors

# model_type -> its architecture: a module or object with model_fields, to_ours, to_hf,
# hf_config, check_exportable, MODEL_TYPES, PREFIXES and VOCAB_TABLES (pretrained/bert.py).
Architecture = ModuleType | llama.Family
ARCHITECTURES: dict[str, Architecture] = {
    t: m for m in (bert, gpt2, *llama.FAMILIES, whisper) for t in m.MODEL_TYPES}
TRAINING_FIELDS = ("kind", "dropout_rate", "attention_dropout_rate", "pooling")


@dataclasses.dataclass(frozen=True)
class Folder:
  path: str
  hf_config: dict
  architecture: Architecture
  fields: dict  # our config.model fields (with "kind").
  vocab_size: int  # config.json's (the embedding's rows).
  num_classes: int  # rows of a BertForSequenceClassification head; 0: none.
  tensors: Tensors


def kind_of(arch: Architecture) -> kinds.ModelKind:
  """The registered kind whose record imports `arch` (its hf_architectures)."""
  return next(k for k in map(kinds.get, kinds.names())
              if set(k.hf_architectures) & set(arch.MODEL_TYPES))


def architectures_of(kind: kinds.ModelKind) -> list[Architecture]:
  """The Hugging Face architectures a kind imports and exports (none: []), in its order."""
  return [ARCHITECTURES[t] for t in kind.hf_architectures]


def read_config(path: str) -> tuple[dict, Architecture]:
  if not os.path.isdir(path):
    raise PretrainedError(f"{path}: not a folder (a Hugging Face model folder with "
                          "config.json and model.safetensors)")
  file = os.path.join(path, "config.json")
  try:
    with open(file, encoding="utf-8") as f:
      hf = json.load(f)
  except OSError as e:
    raise PretrainedError(f"{file}: {e.strerror}") from e
  except json.JSONDecodeError as e:
    raise PretrainedError(f"{file}: not valid JSON ({e})") from e
  model_type = hf.get("model_type")
  if model_type not in ARCHITECTURES:
    raise PretrainedError(f"{file}: model_type={model_type!r} is not supported "
                          f"(supported: {', '.join(sorted(ARCHITECTURES))})")
  return hf, ARCHITECTURES[model_type]


def read_weights(path: str) -> tuple[dict[str, np.ndarray], str]:
  """All tensors of the folder as float32 numpy arrays, and the file they came from."""
  single = os.path.join(path, "model.safetensors")
  index = os.path.join(path, "model.safetensors.index.json")
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  try:
    if os.path.exists(single):
      return load_file(single), single
    if os.path.exists(index):
      with open(index, encoding="utf-8") as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
      arrays = {}
      for name in files:
        arrays.update(load_file(os.path.join(path, name)))
      return arrays, index
  except Exception as e:  # OSError, KeyError, safetensors' SafetensorError (a broken file).
    raise PretrainedError(f"{path}: cannot read the safetensors weights: {e}") from e
  legacy = os.path.join(path, "pytorch_model.bin")
  if os.path.exists(legacy):
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise PretrainedError(f"{legacy}: a PyTorch pickle; install torch to read it, or save "
                            "the model as model.safetensors") from e
    state = torch.load(legacy, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}, legacy
  raise PretrainedError(f"{path}: no model.safetensors (or pytorch_model.bin)")


def tokenizer_vocab_size(path: str) -> int | None:
  file = os.path.join(path, "tokenizer.json")
  if not os.path.exists(file):
    return None
  import tokenizers  # pylint: disable=import-outside-toplevel
  try:
    return tokenizers.Tokenizer.from_file(file).get_vocab_size(with_added_tokens=True)
  except Exception as e:  # tokenizers raises a bare Exception on a bad file.
    raise PretrainedError(f"{file}: cannot be read by the tokenizers package: {e}") from e


def read_folder(path: str) -> Folder:
  """The folder's config, architecture and tensors, all checked (PretrainedError names
  the file, field or tensor)."""
  path = os.path.abspath(path)
  hf, arch = read_config(path)
  source = os.path.join(path, "config.json")
  fields = {"kind": kind_of(arch).name, **arch.model_fields(hf, source)}
  vocab_size = hf.get("vocab_size")
  if not isinstance(vocab_size, int) or vocab_size < 1:
    raise PretrainedError(f"{source}: vocab_size={vocab_size!r} must be a positive integer")
  tok_size = tokenizer_vocab_size(path)
  if tok_size is not None and tok_size > vocab_size:
    raise PretrainedError(
        f"{os.path.join(path, 'tokenizer.json')}: the tokenizer has {tok_size} ids but "
        f"config.json's vocab_size={vocab_size} (the embedding's rows): they do not match")
  arrays, weights_file = read_weights(path)
  tensors = Tensors(arrays, weights_file, arch.PREFIXES)
  num_classes = tensors.arrays["classifier.weight"].shape[0] if tensors.has(
      "classifier.weight") else 0
  return Folder(path, hf, arch, fields, vocab_size, num_classes, tensors)


def model_config_of(folder: Folder, num_classes: int | None = None):
  """Our TransformerConfig (training mode) for the folder's architecture."""
  from transformer_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from transformer_jax.models import config as models_config
  c = config_lib.default_config()
  for key, value in folder.fields.items():
    c.model[key] = value
  n = folder.num_classes if num_classes is None else num_classes
  return models_config.model_config(c, folder.vocab_size, n)


def params_of(folder: Folder, model_config) -> dict[str, np.ndarray]:
  """Our flat parameters ("a/b/c") from the folder; checks every tensor it takes."""
  return folder.architecture.to_ours(folder.tensors, model_config, folder.vocab_size)
