"""Pretrained weights from Hugging Face folders: BERT-family encoders and GPT-2-family decoders.

  model, params, model_config = pretrained.load_hf("/path/to/folder")

An imported architecture is a variant of one of our kinds (bert -> the
encoder_classifier with BERT's options, gpt2 -> the decoder_lm with GPT-2's),
so a loaded model carries our logical axis names and shards like ours.
`config.init_from.hf` fine-tunes from a folder (`apply_to_config`, then
`load_into` the fresh parameters); `export_hf` writes a run back as a folder.
"""

from __future__ import annotations

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax import kinds
from transformer_jax.data import hf_tokenizer
from transformer_jax.data.tokenizer import EOS_ID
from transformer_jax.models.speech import SpeechToText
from transformer_jax.pretrained.folder import (ARCHITECTURES, TRAINING_FIELDS, Folder,
                                               model_config_of, params_of, read_folder)
from transformer_jax.pretrained.tensors import PretrainedError, nest, shift_vocab

__all__ = ["ARCHITECTURES", "Folder", "PretrainedError", "apply_to_config",
           "load_hf", "load_into", "read_folder"]


def _model_shapes(model) -> dict[str, tuple[int, ...]]:
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  # A classifier without a head is shaped with one class (its head is not compared).
  model = model.clone(config=model.config.replace(num_classes=max(model.config.num_classes, 1)))
  ids = jnp.ones((1, 4), jnp.int32)
  # A speech model takes features (and the transcript); the others token ids.
  inputs = ((type(model).dummy_source(1, 4, model.config), ids)
            if isinstance(model, SpeechToText) else (ids,))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))
  flat = flax.traverse_util.flatten_dict(nn.unbox(variables["params"]), sep="/")
  return {k: tuple(v.shape) for k, v in flat.items()}


def _check_paths(flat: dict[str, np.ndarray], model, where: str) -> None:
  shapes = _model_shapes(model)
  for path, array in flat.items():
    if shapes.get(path) != tuple(array.shape):
      raise PretrainedError(f"{where}: parameter {path} {tuple(array.shape)} does not fit the "
                            f"model ({shapes.get(path)})")


def load_hf(path: str, num_classes: int | None = None):
  """(our model module, its parameters, our TransformerConfig) from a Hugging Face folder.

  The config is in inference mode (deterministic). Parameters the folder has no
  tensors for (a classifier's head and, for MiniLM-style folders, the pooler) are
  absent; `model.apply(..., return_hidden=True)` needs neither.
  """
  folder = read_folder(path)
  cfg = model_config_of(folder, num_classes).replace(deterministic=True)
  model = kinds.get(folder.fields["kind"]).model(cfg)
  flat = params_of(folder, cfg)
  _check_paths(flat, model, folder.path)
  return model, jax.tree.map(jnp.asarray, nest(flat)), cfg


def _convert_to_hf_folder(config) -> None:
  """init_from.gguf's or init_from.whisper's Hugging Face folder (converted once into the user
  cache where it is a GGUF file or a CTranslate2 model) as init_from.hf."""
  from transformer_jax.pretrained import gguf_file, whisper_folder  # pylint: disable=import-outside-toplevel
  for field, folder_of in (("gguf", gguf_file.hf_folder_of),
                           ("whisper", lambda spec: whisper_folder.folder_of(
                               spec, "config.init_from.whisper"))):
    spec = config.init_from[field]
    if not spec:
      continue
    try:
      converted = folder_of(spec)
    except PretrainedError as e:
      named = str(e).startswith(f"config.init_from.{field}=")
      raise PretrainedError(str(e) if named else f"config.init_from.{field}: {e}") from e
    if config.init_from.hf and config.init_from.hf != converted:
      raise PretrainedError(f"config.init_from.{field}={spec!r} and "
                            f"init_from.hf={config.init_from.hf!r}: give one of them")
    config.init_from.hf = converted


def apply_to_config(config) -> Folder | None:
  """For `config.init_from.hf` (or `.gguf` / `.whisper`: its folder, which init_from.hf then
  names):
  checks the folder (config, every tensor, the tokenizer) and
  sets config.model's architecture fields from it, so the run builds the same network.

  Training choices (dropout rates, pooling) stay the config's. The tokenizer becomes
  the folder's ("hf:" + folder) unless config.data.tokenizer_path names one.
  """
  _convert_to_hf_folder(config)
  path = config.init_from.hf
  if not path:
    return None
  try:
    folder = read_folder(path)
    params_of(folder, model_config_of(folder))  # every tensor checked before anything is built.
  except PretrainedError as e:
    raise PretrainedError(f"config.init_from.hf: {e}") from e
  kind = folder.fields["kind"]
  if config.model.kind != kind:
    raise PretrainedError(
        f"config.init_from.hf={path!r} holds a {folder.hf_config['model_type']!r} model, "
        f"which is our {kind!r}; config.model.kind={config.model.kind!r}")
  for key, value in folder.fields.items():
    if key not in TRAINING_FIELDS:
      config.model[key] = value
  if not config.data.tokenizer_path and os.path.exists(
      os.path.join(folder.path, "tokenizer.json")):
    config.data.tokenizer_path = hf_tokenizer.PREFIX + folder.path
  if not hf_tokenizer.is_hf(config.data.tokenizer_path):
    raise PretrainedError(
        f"config.init_from.hf={path!r}: the embedding's rows are the ids of the folder's "
        f"tokenizer, but config.data.tokenizer_path={config.data.tokenizer_path!r} is not one "
        f"(give the folder a tokenizer.json, or set \"{hf_tokenizer.PREFIX}FOLDER\")")
  tok = hf_tokenizer.load(config.data.tokenizer_path)
  # Every row of the folder's embedding has a place, ids the tokenizer lacks too.
  config.model.min_vocab_size = folder.vocab_size + tok.offset
  if folder.hf_config.get("model_type") == "whisper":  # its features and decoder prompt.
    from transformer_jax.pretrained import whisper_folder  # pylint: disable=import-outside-toplevel
    fields = whisper_folder.fine_tuning_fields(folder.path, config.init_from.whisper_language,
                                               tok.offset, EOS_ID)
    config.model.decoder_start_id = fields["decoder_start_id"]
    config.data.target_prefix = fields["target_prefix"]
    config.data.features = "whisper"
  return folder


def load_into(params, folder: Folder, model_config,
              tokenizer_path: str = "") -> tuple[object, list[str], list[str]]:
  """`params` (a fresh, sharded train state's) with the folder's tensors put in, each on
  its array's sharding; returns (params, the paths taken, the paths left fresh: a head
  the folder lacks). With the folder's tokenizer in the shifted id layout (`tokenizer_path`
  "hf:...", data/hf_tokenizer.py), the token tables move with the ids."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  flat = params_of(folder, model_config)
  if hf_tokenizer.is_hf(tokenizer_path):
    tok = hf_tokenizer.load(tokenizer_path)
    flat = shift_vocab(flat, folder.architecture.VOCAB_TABLES, tok.offset, tok.eos_id)
  taken, fresh = [], []

  def put(path, x):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if name not in flat:
      fresh.append(name)
      return x
    array = flat[name]
    value = x.value if isinstance(x, nn.Partitioned) else x
    if tuple(array.shape) != tuple(value.shape):
      raise PretrainedError(f"config.init_from.hf: {name} is {tuple(array.shape)} in the folder "
                            f"but {tuple(value.shape)} in the model")
    taken.append(name)
    new = jax.device_put(array.astype(value.dtype), value.sharding)
    return x.replace_boxed(new) if isinstance(x, nn.Partitioned) else new

  merged = jax.tree_util.tree_map_with_path(
      put, params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  return merged, sorted(taken), sorted(fresh)
