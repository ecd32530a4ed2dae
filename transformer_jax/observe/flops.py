"""Model FLOPs of a train step, for every model kind, and the peak they are measured against.

The count is the one MFU is defined with (PaLM, appendix B; MaxText): the
multiply-adds of the matrix products a step *needs*, two FLOPs each, forward
and backward. Elementwise work (softmax, layer norm, activations, the
optimizer) is left out, and so is recomputation (remat changes the work done,
not the model FLOPs). Attention scores and weighted values are counted over the
full L x S square, causal or not, as the einsums compute them. A forward
matrix product of M x K by K x N costs 2MKN; its backward costs twice that (the
gradients of both operands), so a train step is 3x its forward.

Forward FLOPs per global batch, with B rows, D width, H heads of K, F the MLP
width, V the vocabulary, C the classes:

  attention (queries of length L, keys of length S; N <= H key/value heads):
      2*B*(L*D*HK [query] + 2*S*D*NK [key, value] + L*HK*D [out]) + 2*2*B*L*S*HK
  mlp (length L):               2*2*B*L*D*F
  output logits (length L):     2*B*L*D*V
  encoder_decoder:  encoder layers on the source (S = L = max_target_length), decoder
                    layers on the target (self-attention, cross-attention over the
                    source, MLP), logits on the target.
  decoder_lm:       decoder layers without cross-attention, logits.
  encoder_classifier: encoder layers on L (+1 with a class vector), a pooler D x D
                    (cls pooling) and the head D x C.
  vit:              the patch projection (P = patch_size**2 * channels) on N patches,
                    encoder layers on N (+1 with a class token), the head.
  speech_to_text:   two width-3 convolutions (80 mel bins -> D at the first stride's
                    T0 frames, D -> D at the S encoder positions), or with
                    model.frontend_channels C > 0 two 3x3 ones (1 -> C, C -> C, each
                    striding time and frequency) and a linear map of C x F' to D;
                    encoder layers on S,
                    the CTC head D x V on S (with model.ctc_weight > 0), decoder layers
                    on the transcript (cross-attention over S), logits.

`tests/test_flops.py` checks the formula against XLA's own count of the
compiled step (`cost_analysis()`), which adds the elementwise work.

The peak: an accelerator's dense bfloat16 rate from the maker's data sheet
(`CHIP_PEAK_TFLOPS`, per chip), or, on a CPU, the float32 matrix-product rate of
this machine, measured once and cached (`cpu_matmul_flops`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from transformer_jax.config import cache_dirs
from transformer_jax.models.speech import SUBSAMPLING as SPEECH_STRIDES

__all__ = ["CHIP_PEAK_TFLOPS", "attention_flops", "chip_peak_flops", "cpu_description",
           "cpu_matmul_flops", "decoder_only_forward", "device_description",
           "encoder_classifier_forward", "encoder_decoder_forward", "mlp_flops", "peak_flops",
           "speech_forward", "train_flops_per_step", "vision_forward"]

# Dense bfloat16 peak per chip, TFLOP/s (data sheets; no sparsity), by jax's device_kind.
CHIP_PEAK_TFLOPS = {
    "TPU v2": 45.0,
    "TPU v3": 123.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,  # v5e
    "TPU v5e": 197.0,
    "TPU v5": 459.0,  # v5p
    "TPU v5p": 459.0,
    "TPU v6 lite": 918.0,  # v6e (Trillium)
    "TPU v6e": 918.0,
    "TPU7x": 2307.0,  # Ironwood
    "NVIDIA H200": 989.0,
    "NVIDIA H100 80GB HBM3": 989.0,
    "NVIDIA H100": 989.0,
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA L4": 121.0,
    "NVIDIA B200": 2250.0,
}


# --------------------------------------------------------------------------- pieces


def attention_flops(b: int, lq: int, lk: int, d: int, hk: int, nk: int | None = None) -> float:
  """Forward FLOPs of one multi-head attention: projections, scores and weighted values.
  `nk`: the key/value projections' width (grouped-query attention: fewer heads), else hk."""
  nk = hk if nk is None else nk
  projections = 2 * b * (lq * d * hk + 2 * lk * d * nk + lq * hk * d)
  return projections + 2 * 2 * b * lq * lk * hk


def mlp_flops(b: int, length: int, d: int, f: int, gated: bool = False) -> float:
  """Two products D x F and F x D; a gated MLP has a third (wi_0 and wi_1)."""
  return (3 if gated else 2) * 2 * b * length * d * f


def _encoder_layers(cfg, b: int, length: int) -> float:
  hk = cfg.num_heads * cfg.head_dim
  per_layer = (attention_flops(b, length, length, cfg.emb_dim, hk)
               + mlp_flops(b, length, cfg.emb_dim, cfg.mlp_dim, cfg.mlp_gated))
  return cfg.num_encoder_layers * per_layer


def _decoder_layers(cfg, b: int, length: int, source_length: int = 0) -> float:
  hk = cfg.num_heads * cfg.head_dim
  nk = (cfg.num_kv_heads or cfg.num_heads) * cfg.head_dim
  per_layer = (attention_flops(b, length, length, cfg.emb_dim, hk, nk)
               + mlp_flops(b, length, cfg.emb_dim, cfg.mlp_dim, cfg.mlp_gated))
  if source_length:
    per_layer += attention_flops(b, length, source_length, cfg.emb_dim, hk)
  return cfg.num_decoder_layers * per_layer


def _logits(cfg, b: int, length: int) -> float:
  return 2 * b * length * cfg.emb_dim * cfg.vocab_size


# --------------------------------------------------------------------------- per family
# Each: (model config, {batch key: shape}) -> forward FLOPs of one global batch; a kind's
# record names its own (ModelKind.forward_flops).


def encoder_decoder_forward(cfg, shapes) -> float:
  b, s = shapes["inputs"].shape
  length = shapes["targets"].shape[1]
  return _encoder_layers(cfg, b, s) + _decoder_layers(cfg, b, length, s) + _logits(cfg, b, length)


def decoder_only_forward(cfg, shapes) -> float:
  b, length = shapes["targets"].shape
  return _decoder_layers(cfg, b, length) + _logits(cfg, b, length)


def _head(cfg, b: int) -> float:
  pooler = 2 * b * cfg.emb_dim * cfg.emb_dim if cfg.pooling == "cls" else 0
  return pooler + 2 * b * cfg.emb_dim * cfg.num_classes


def encoder_classifier_forward(cfg, shapes) -> float:
  b, length = shapes["inputs"].shape
  length += int(cfg.class_vector)
  return _encoder_layers(cfg, b, length) + _head(cfg, b)


def vision_forward(cfg, shapes) -> float:
  b, h, w, c = shapes["image"].shape
  p = cfg.patch_size
  n = (h // p) * (w // p)
  patches = 2 * b * n * (p * p * c) * cfg.emb_dim
  # The ViT pools into the head directly (no pooler).
  return (patches + _encoder_layers(cfg, b, n + int(cfg.pooling == "cls"))
          + 2 * b * cfg.emb_dim * cfg.num_classes)


def speech_forward(cfg, shapes) -> float:
  b, frames, mels = shapes["inputs"].shape
  length = shapes["targets"].shape[1]
  (s0, s1), d = SPEECH_STRIDES[cfg.subsample], cfg.emb_dim
  t0 = -(-frames // s0)
  positions = -(-t0 // s1)
  if cfg.frontend_channels > 0:  # two 3x3 convolutions striding time and frequency.
    c = cfg.frontend_channels
    f0 = -(-(mels - 1) // s0)
    f1 = -(-f0 // s1)
    convs = 2 * b * 9 * (c * t0 * f0 + c * c * positions * f1) + 2 * b * positions * f1 * c * d
  else:
    convs = 2 * b * 3 * ((mels - 1) * d * t0 + d * d * positions)  # two width-3 convolutions.
  ctc_head = _logits(cfg, b, positions) if cfg.ctc_weight > 0 else 0
  return (convs + _encoder_layers(cfg, b, positions) + ctc_head
          + _decoder_layers(cfg, b, length, positions) + _logits(cfg, b, length))


def train_flops_per_step(forward, model_config, batch_shapes: Mapping[str, Any]) -> float | None:
  """Model FLOPs of one train step on a global batch of `batch_shapes` (3x the `forward`
  formula, a kind record's forward_flops); None for a kind without one (a kind a config
  file registers may have none)."""
  return None if forward is None else 3.0 * forward(model_config, batch_shapes)


# --------------------------------------------------------------------------- the peak


def _cache_path() -> str:
  return cache_dirs.user_cache_dir("cpu_matmul.json")


def _cpuinfo_lines() -> list[str]:
  """The first processor's lines of /proc/cpuinfo ([] where there is none)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      return f.read().split("\n\n")[0].splitlines()
  except OSError:
    return []


def _cpuinfo() -> dict[str, str]:
  """The first processor's fields in /proc/cpuinfo ({} where there is none)."""
  return {k.strip(): v.strip()
          for k, _, v in (l.partition(":") for l in _cpuinfo_lines()) if k.strip()}


def _cpu_key() -> str:
  """What the measured rate depends on: the CPU model and flags, the core count, jax."""
  lines = _cpuinfo_lines()
  cpu = next((l for l in lines if l.startswith("model name")),
             platform.processor() or platform.machine())
  cpu += next((l for l in lines if l.startswith("flags")), "")
  text = f"{cpu}|{os.cpu_count()}|{jax.__version__}"
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def cpu_description() -> str:
  """This CPU in words, for the figures measured on it: model name, family/model
  numbers (a hypervisor may hide the name, not these: AMD family 25 is Zen 3/4, 26 is
  Zen 5), the widest vector units among its flags, and the CPUs the OS lists."""
  info = _cpuinfo()
  name = info.get("model name", platform.processor() or platform.machine())
  if "cpu family" in info and "model" in info:
    name += f" (family {info['cpu family']}, model {info['model']})"
  flags = set(info.get("flags", "").split())
  units = [u for u, flag in (("AVX-512", "avx512f"), ("avx512_bf16", "avx512_bf16"),
                             ("AMX", "amx_tile"), ("AVX2", "avx2")) if flag in flags]
  if "AVX-512" in units:
    units.remove("AVX2")
  return f"{name}, {' + '.join(units) or 'no AVX'}, {os.cpu_count()} cores"


def measure_cpu_matmul(n: int = 2048, seconds: float = 0.5) -> float:
  """FLOP/s of a float32 n x n matrix product on the first device (all cores: XLA's
  CPU backend threads one product over them); the best of repeated timings."""
  a = jax.device_put(jnp.ones((n, n), jnp.float32), jax.devices()[0])
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best, start = float("inf"), time.perf_counter()
  while time.perf_counter() - start < seconds or best == float("inf"):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n**3 / best


def cpu_matmul_flops(cache: bool = True) -> float:
  """This machine's float32 matmul rate (FLOP/s), measured once and kept in
  ~/.cache/transformer_jax/cpu_matmul.json under a key of the CPU, cores and jax version."""
  path, key = _cache_path(), _cpu_key()
  if cache:
    try:
      with open(path, encoding="utf-8") as f:
        return float(json.load(f)[key])
    except (OSError, ValueError, KeyError, TypeError):
      pass
  rate = measure_cpu_matmul()
  if cache:
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      try:
        with open(path, encoding="utf-8") as f:
          table = json.load(f)
      except (OSError, ValueError):
        table = {}
      table = table if isinstance(table, dict) else {}
      table[key] = rate
      tmp = f"{path}.tmp{os.getpid()}"
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(table, f)
      os.replace(tmp, path)
    except OSError:
      pass  # a read-only home: measure again next time.
  return rate


def chip_peak_flops(device_kind: str) -> float | None:
  """The data-sheet dense bf16 FLOP/s of one accelerator chip, by jax's device_kind."""
  tflops = CHIP_PEAK_TFLOPS.get(device_kind)
  if tflops is None:  # a variant name, e.g. "NVIDIA H100 80GB HBM3e".
    tflops = next((v for k, v in CHIP_PEAK_TFLOPS.items() if device_kind.startswith(k)), None)
  return None if tflops is None else tflops * 1e12


def device_description(devices=None) -> str:
  """The devices in words, for a benchmark's figures: their count and kind, and on a CPU
  which CPU (`cpu_description`)."""
  devices = devices if devices is not None else jax.devices()
  d = devices[0]
  what = f"cpu ({cpu_description()})" if d.platform == "cpu" else d.device_kind
  return f"{len(devices)} x {what}"


def peak_flops(devices=None) -> tuple[float, str] | None:
  """(peak FLOP/s of `devices` together, what it is) or None for an unknown accelerator.

  Accelerators: the data-sheet bf16 rate per chip times the chips. CPU: the measured
  f32 matmul rate of the machine (simulated devices share its cores, so it is not
  multiplied by their number).
  """
  devices = devices if devices is not None else jax.devices()
  d = devices[0]
  if d.platform == "cpu":
    return cpu_matmul_flops(), f"the measured f32 matmul rate of this CPU: {cpu_description()}"
  per_chip = chip_peak_flops(d.device_kind)
  if per_chip is None:
    return None
  return per_chip * len(devices), f"{d.device_kind} bf16 peak x {len(devices)}"
