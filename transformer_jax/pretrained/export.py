"""Writing parameters out: a Hugging Face folder, or plain safetensors under our paths.

`hf_files` turns our flat parameters into the config.json and state dict of
the architecture's Hugging Face class (BertModel / BertForSequenceClassification,
GPT2LMHeadModel); `write_folder` writes them with the tokenizer's files next
to them, into a temporary folder renamed into place, so that a failed export
leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from transformer_jax import kinds
from transformer_jax.pretrained.folder import architectures_of
from transformer_jax.pretrained.tensors import PretrainedError, unshift_vocab

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt")


def hf_files(kind: str, cfg, flat: dict[str, np.ndarray], vocab_size: int,
             labels: list[str] | None, offset: int = 0,
             eos_id: int | None = None) -> tuple[dict, dict[str, np.ndarray]]:
  """(config.json contents, state dict) of the Hugging Face twin of our `kind`.

  `vocab_size` is the tokenizer's own; `offset` and `eos_id` undo the shifted id layout
  of a tokenizer whose id 0 is an ordinary token (data/hf_tokenizer.py)."""
  arch = architecture(kind, cfg)
  tensors = {k: np.ascontiguousarray(v, np.float32)
             for k, v in state_dict_fn(arch, cfg, vocab_size, offset, eos_id)(flat).items()}
  return arch.hf_config(cfg, vocab_size, labels), tensors


def architecture(kind: str, cfg):
  """The Hugging Face architecture a `kind` model with config `cfg` exports as: the first of
  the kind's whose options the model has (PretrainedError, naming what differs, if none)."""
  archs = architectures_of(kinds.get(kind))
  if not archs:
    twins = ", ".join(f"{'/'.join(k.hf_architectures)}: {k.name}"
                      for k in map(kinds.get, kinds.names()) if k.hf_architectures)
    raise PretrainedError(f"a {kind!r} model has no Hugging Face twin ({twins}); use "
                          "--format=safetensors")
  reasons = []
  for arch in archs:
    bad = arch.check_exportable(cfg)
    if not bad:
      return arch
    reasons.append(f"not {arch.MODEL_TYPES[0]!r}: {'; '.join(bad)}")
  raise PretrainedError(f"this {kind!r} model has no Hugging Face twin ({' | '.join(reasons)}); "
                        "use --format=safetensors")


def state_dict_fn(arch, cfg, vocab_size: int, offset: int = 0, eos_id: int | None = None):
  """flat parameters -> the architecture's state dict, the vocabulary tables moved back to
  the tokenizer's own ids (`offset`, `eos_id`: data/hf_tokenizer.py's shifted layout)."""
  def to_hf(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return arch.to_hf(unshift_vocab(flat, arch.VOCAB_TABLES, offset, eos_id), cfg, vocab_size)
  return to_hf


def over_source_config(hf_config: dict, source_folder: str) -> dict:
  """`hf_config` over the config.json of the folder a run was fine-tuned from, so that the
  fields we do not model (token ids, generation settings) survive the round trip."""
  path = os.path.join(source_folder, "config.json") if source_folder else ""
  if not path or not os.path.exists(path):
    return hf_config
  with open(path, encoding="utf-8") as f:
    base = json.load(f)
  for key in ("architectures", "_name_or_path", "id2label", "label2id", "num_labels",
              "transformers_version"):
    base.pop(key, None)
  out = {**base, **hf_config}
  if "max_position_embeddings" in base and hf_config.get("model_type") in ROTARY_TYPES:
    # Rotary models have no position table: the context they were trained for stays the
    # source's (our max_length is only the run's row length).
    out["max_position_embeddings"] = base["max_position_embeddings"]
  return out


ROTARY_TYPES = ("llama", "qwen2", "gemma3_text")


def write_folder(output: str, files: dict[str, dict | list], tensors: dict[str, np.ndarray],
                 tensor_file: str, copy: list[str] = (),
                 metadata: dict[str, str] | None = None) -> None:
  """Writes `files` (name -> JSON), the tensors and copies of the files `copy` (the
  tokenizer's) into `output`, which must not exist or be empty."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  output = os.path.abspath(output)
  if os.path.exists(output) and os.listdir(output):
    raise PretrainedError(f"--output={output}: exists and is not empty (nothing was written)")
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  try:
    for name, content in files.items():
      with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, ensure_ascii=False)
        f.write("\n")
    save_file(tensors, os.path.join(tmp, tensor_file), metadata=metadata or {"format": "pt"})
    for path in copy:
      shutil.copy(path, os.path.join(tmp, os.path.basename(path)))
    for name in os.listdir(tmp):  # a folder to publish: readable as the umask allows.
      os.chmod(os.path.join(tmp, name), 0o666 & ~umask)
    os.chmod(tmp, 0o777 & ~umask)
    if os.path.exists(output):
      os.rmdir(output)
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
