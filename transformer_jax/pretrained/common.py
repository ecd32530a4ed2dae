"""Helpers the architectures share: config.json fields, activations, layer norms."""

from __future__ import annotations

import numpy as np

from transformer_jax.pretrained.tensors import PretrainedError, Tensors

# Hugging Face's activation names -> ours (models/layers.py ACTIVATIONS).
ACTIVATIONS = {"gelu": "gelu_exact", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu",
               "gelu_fast": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}
HF_ACTIVATIONS = {"gelu_exact": "gelu", "gelu": "gelu_new", "relu": "relu", "silu": "silu"}


def getter(hf: dict, source: str):
  def get(name: str):
    if name not in hf or hf[name] is None:
      raise PretrainedError(f"{source}: config.json has no field {name!r}")
    return hf[name]
  return get


def activation(name: str, source: str, field: str) -> str:
  if name not in ACTIVATIONS:
    raise PretrainedError(f"{source}: config.json {field}={name!r} is not supported "
                          f"(supported: {sorted(ACTIVATIONS)})")
  return ACTIVATIONS[name]


def hf_activation(ours: str) -> str:
  return HF_ACTIVATIONS[ours]


def norm(t: Tensors, hf: str, ours: str, d: int) -> dict[str, np.ndarray]:
  return {f"{ours}/scale": t.take(f"{hf}.weight", (d,)), f"{ours}/bias": t.take(f"{hf}.bias", (d,))}


def norm_hf(p: dict[str, np.ndarray], ours: str, hf: str) -> dict[str, np.ndarray]:
  return {f"{hf}.weight": p[f"{ours}/scale"], f"{hf}.bias": p[f"{ours}/bias"]}
