"""An adapter run as PEFT's LoRA folder: adapter_config.json + adapter_model.safetensors.

The `peft` library loads such a folder onto the base model's Hugging Face class
(`PeftModel.from_pretrained(BertForSequenceClassification.from_pretrained(BASE), DIR)`)
and computes W + (lora_alpha / r) B A with lora_A.weight [r, in] and lora_B.weight
[out, r]: our A [in, r] and B [r, out], transposed.

Which Hugging Face module each of our parameters becomes, and how its matrix is laid
out there, is read off the architecture's own exporter (pretrained/<arch>.py's
`to_hf`) by a probe: the parameters asked about get distinct values, the exporter
runs once, and each value is found again in the tensor it landed in. So nothing
here repeats an architecture's names; an exporter that fuses several of our kernels
into one tensor (GPT-2's c_attn holds query, key and value side by side) gets one pair
of rank m * r for its m adapters (A side by side, B block-diagonal), declared in
`rank_pattern` and `alpha_pattern` (alpha m * alpha keeps the scale alpha / r).
Parameters trained in full (`lora.train_also`) and those the base folder lacks (a
fresh head) go out whole, as PEFT's `modules_to_save`.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from transformer_jax.adapters import lora
from transformer_jax.pretrained.tensors import PretrainedError

TASK_TYPES = (("ForSequenceClassification", "SEQ_CLS"), ("LMHeadModel", "CAUSAL_LM"),
              ("ForCausalLM", "CAUSAL_LM"))
PREFIX = "base_model.model."


def probe(to_hf, shapes: dict[str, tuple], asked: list[str]):
  """({our path: [(Hugging Face tensor name, that tensor of the probe)]} for the `asked`
  paths, the probe's values): each asked path gets the values start, start+1, ...
  (float64, exact), the rest zeros."""
  values, ranges, start = {}, {}, 1.0
  for path, shape in shapes.items():
    if path in asked:
      n = math.prod(shape)
      values[path] = np.arange(start, start + n, dtype=np.float64).reshape(shape)
      ranges[path] = (start, start + n)
      start += n
    else:
      values[path] = np.zeros(shape, np.float64)
  found: dict[str, list] = {p: [] for p in asked}
  for name, tensor in to_hf(values).items():
    tensor = np.asarray(tensor)
    for path, (lo, hi) in ranges.items():
      if np.any((tensor >= lo) & (tensor < hi)):
        found[path].append((name, tensor))
  return found, values


def _blocks(name: str, tensor: np.ndarray,
            kernels: dict[str, np.ndarray]) -> tuple[bool, list[tuple[int, int, int]]]:
  """(whether the tensor keeps [in, out] (Conv1D), [(first column, columns, input axes)]
  of each kernel): every kernel, as an [in, out] matrix (its first axes the input), must be
  a block of whole columns of the tensor taken as [in, out_total] (transposed for Linear):
  one kernel, or several side by side (a fused projection: GPT-2's c_attn)."""
  for keeps, matrix in ((False, tensor.T), (True, tensor)):
    blocks = []
    for kernel in kernels.values():
      for n_in in range(1, kernel.ndim):
        k2 = kernel.reshape(math.prod(kernel.shape[:n_in]), -1)
        if k2.shape[0] != matrix.shape[0]:
          continue
        start = np.flatnonzero(matrix[0] == k2[0, 0])
        if start.size and np.array_equal(matrix[:, start[0]:start[0] + k2.shape[1]], k2):
          blocks.append((int(start[0]), k2.shape[1], n_in))
          break
    if len(blocks) == len(kernels):
      return keeps, blocks
  raise PretrainedError(
      f"--format=peft: {', '.join(kernels)} is not a block of whole columns of the Hugging "
      f"Face tensor {name} {tensor.shape}; LoRA pairs cannot express it: use --merge")


def _fused_pair(pairs: list[dict[str, np.ndarray]], blocks: list[tuple[int, int, int]],
                rank: int) -> tuple[np.ndarray, np.ndarray]:
  """PEFT's lora_A.weight [m r, in] and lora_B.weight [out_total, m r] of m adapters whose
  kernels are the column `blocks` of one tensor: A side by side, B block-diagonal, so
  B A = each kernel's A B (transposed) in its own columns and zeros elsewhere."""
  a = np.concatenate([np.asarray(p["a"], np.float32).reshape(-1, rank) for p in pairs], 1)
  out_total = max(start + width for start, width, _ in blocks)
  b = np.zeros((out_total, rank * len(pairs)), np.float32)
  for i, (p, (start, width, _)) in enumerate(zip(pairs, blocks)):
    b[start:start + width, i * rank:(i + 1) * rank] = \
        np.asarray(p["b"], np.float32).reshape(rank, -1).T
  return np.ascontiguousarray(a.T), b


def peft_files(to_hf, flat: dict[str, np.ndarray], adapters: dict[str, dict[str, np.ndarray]],
               spec: lora.Spec, whole: list[str],
               hf_tensors: dict[str, np.ndarray], architecture: str,
               base: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(adapter_config.json, the tensors of adapter_model.safetensors).

  `to_hf(flat) -> state dict` is the architecture's exporter on our flat parameters
  (`flat`: the merged model's, unscanned); `adapters` {kernel path: {"a", "b"}} the
  run's; `whole` the paths trained in full or fresh; `hf_tensors` the merged model's
  state dict (what those modules save); `base` the folder PEFT loads them onto."""
  shapes = {k: np.shape(v) for k, v in flat.items()}
  found, values = probe(to_hf, shapes,
                        sorted(adapters) + [p for p in whole if p not in adapters])
  tensors, modules, conv, ranks = {}, [], set(), {}
  groups: dict[str, list[str]] = {}
  for path in sorted(adapters):
    if len(found[path]) != 1:
      raise PretrainedError(f"--format=peft: {path} is spread over {len(found[path])} "
                            "Hugging Face tensors; use --merge")
    groups.setdefault(found[path][0][0], []).append(path)
  for name, paths in groups.items():
    tensor = found[paths[0]][0][1]
    keeps, blocks = _blocks(name, tensor, {p: values[p] for p in paths})
    conv.add(keeps)
    module = name.removesuffix(".weight")
    a, b = _fused_pair([adapters[p] for p in paths], blocks, spec.rank)
    tensors[f"{PREFIX}{module}.lora_A.weight"] = a
    tensors[f"{PREFIX}{module}.lora_B.weight"] = b
    modules.append(module)
    if len(paths) > 1:  # several of our kernels in one tensor: one pair of rank m * r.
      ranks[module] = len(paths)
  if len(conv) > 1:
    raise PretrainedError("--format=peft: the adapted modules mix Linear and Conv1D layouts")
  saved = sorted({name.rpartition(".")[0] for p in whole if p not in adapters
                  for name, _ in found[p]})
  for name, value in hf_tensors.items():
    if name.rpartition(".")[0] in saved:
      tensors[PREFIX + name] = np.ascontiguousarray(value, np.float32)
  task = next((t for suffix, t in TASK_TYPES if architecture.endswith(suffix)),
              "FEATURE_EXTRACTION")
  config = {
      "peft_type": "LORA", "task_type": task, "base_model_name_or_path": base,
      "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
      "target_modules": sorted(modules), "modules_to_save": saved or None,
      "fan_in_fan_out": conv == {True}, "bias": "none", "use_rslora": False,
      "use_dora": False, "init_lora_weights": True, "inference_mode": True,
      "rank_pattern": {m: n * spec.rank for m, n in ranks.items()},
      "alpha_pattern": {m: n * spec.alpha for m, n in ranks.items()},
      "layers_to_transform": None,
      "layers_pattern": None}
  return config, tensors


def read_adapter(folder: str, to_hf, shapes: dict[str, tuple], spec: lora.Spec,
                 targets: list[str]) -> tuple[dict[str, dict[str, np.ndarray]],
                                              dict[str, np.ndarray]]:
  """A PEFT LoRA folder as ({kernel path: {"a": A, "b": B}}, {path: value} of its
  modules_to_save), for `config.init_from.adapter`. Its r and lora_alpha must be
  config.lora's, and each module it adapts one of `targets`; errors name the file."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  where = os.path.join(folder, "adapter_config.json")
  try:
    with open(where, encoding="utf-8") as f:
      config = json.load(f)
    tensors = load_file(os.path.join(folder, "adapter_model.safetensors"))
  except (OSError, ValueError) as e:
    raise PretrainedError(f"config.init_from.adapter={folder!r}: {e}") from None
  for key, want in (("peft_type", "LORA"), ("r", spec.rank), ("lora_alpha", spec.alpha),
                    ("use_dora", False), ("use_rslora", False)):
    if config.get(key, want) != want:
      raise PretrainedError(f"{where}: {key}={config.get(key)!r}, but this run has {want!r}"
                            + (f" (config.lora.{'rank' if key == 'r' else 'alpha'})"
                               if key in ("r", "lora_alpha") else ""))
  if config.get("rank_pattern") or config.get("alpha_pattern"):
    raise PretrainedError(f"{where}: rank_pattern / alpha_pattern are not supported")
  tensors = {k.removeprefix(PREFIX): v for k, v in tensors.items()}
  found, values = probe(to_hf, shapes, sorted(shapes))
  by_name = {name: path for path, hits in found.items() if len(hits) == 1
             for name, _ in hits}
  adapters, whole = {}, {}
  for key in sorted(tensors):
    module, _, kind = key.partition(".lora_")
    if kind == "A.weight":
      path = by_name.get(module + ".weight")
      if path not in targets:
        raise PretrainedError(f"{where}: adapts {module} ({path or 'not one of our kernels'}), "
                              "which config.lora.targets does not choose")
      if len(found[path]) != 1 or found[path][0][1].size != math.prod(shapes[path]):
        raise PretrainedError(f"{where}: {module} is not {path} alone (a fused projection); "
                              "one LoRA pair per module cannot be read onto it")
      name, tensor = found[path][0]
      _, [(_, _, n_in)] = _blocks(name, tensor, {path: values[path]})
      a, b = tensors[key].T, tensors[f"{module}.lora_B.weight"].T
      adapters[path] = {"a": a.reshape(shapes[path][:n_in] + (spec.rank,)),
                        "b": b.reshape((spec.rank,) + shapes[path][n_in:])}
    elif not kind and key in by_name:  # a module saved whole: each value back in place.
      path = by_name[key]
      index = dict(found[path])[key]
      out = np.zeros(shapes[path], np.float32)
      out.reshape(-1)[(index - values[path].reshape(-1)[0]).astype(np.int64).reshape(-1)] = \
          tensors[key].reshape(-1)
      whole[path] = out
    elif not kind:
      raise PretrainedError(f"{where}: tensor {key} is none of the model's")
  return adapters, whole
