"""Attention maps: what each head of each layer looks at, for one text.

The run's model is applied once, without dropout, to the text (and, for a
translation, to the model's own translation of it, read back as the decoder's
input); each attention module sows its weights (`MultiHeadAttention` writes the
"intermediates" collection only when asked). One PNG per attention kind
(encoder self-attention, decoder self-attention, decoder cross-attention):
a grid of layers (rows) by heads (columns), queries down, keys across, tokens
on the axes.
"""

from __future__ import annotations

import dataclasses
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from transformer_jax.models.transformer import unstack_layers
from transformer_jax.report import plots
from transformer_jax.tools import loaded_run as inference
from transformer_jax.tools.flags import BadInput

plt = plots.plt
_LAYER = re.compile(r"^layer_(\d+)$")
_NAMES = {"self_attention": "self-attention", "cross_attention": "cross-attention"}


@dataclasses.dataclass
class AttentionMap:
  """One attention kind: weights [layers, heads, queries, keys] and the tokens."""
  title: str  # "encoder self-attention"
  weights: np.ndarray
  query_tokens: list[str]
  key_tokens: list[str]

  @property
  def stem(self) -> str:
    return "attention_" + self.title.replace(" ", "_").replace("-", "_")


def _row(ids: np.ndarray) -> dict[str, jax.Array]:
  n = len(ids)
  return {"": jnp.asarray(ids, jnp.int32)[None], "_segment_ids": jnp.ones((1, n), jnp.int32),
          "_positions": jnp.arange(n, dtype=jnp.int32)[None]}


def _batch(run: inference.LoadedRun, text: str) -> tuple[dict, dict[str, list[str]]]:
  """The model's batch of one row at the text's own length (no padding), and the tokens
  each stream shows: {"inputs": ..., "targets": ...}."""
  tok, config, kind = run.tokenizer, run.config, run.programs.kind
  length = config.max_target_length
  shapes = kind.batch_shapes(config, 1)
  if "inputs" in shapes and len(shapes["inputs"].shape) != 2:  # e.g. speech: frames.
    raise BadInput(f"attention maps are drawn for text: a {kind.name!r} run reads "
                   f"{shapes['inputs'].shape[-1]}-channel frames")
  if "targets" in shapes and "inputs" in shapes:  # translation: the model's own output.
    translation = inference.translate_lines(run, [text])[0]
    src, tgt = tok.encode(text, max_length=length), tok.encode(translation, max_length=length)
    batch = {f"inputs{k}": v for k, v in _row(src).items()}
    batch.update({f"targets{k}": v for k, v in _row(tgt).items()})
    return batch, {"inputs": tok.id_pieces(src), "targets": tok.id_pieces(tgt),
                   "translation": translation}
  if "targets" in shapes:  # a language model reads the text.
    ids = tok.encode(text, add_eos=False, max_length=length)
    return ({f"targets{k}": v for k, v in _row(ids).items()}, {"targets": tok.id_pieces(ids)})
  if "inputs" in shapes:  # a classifier: no padding, one row.
    ids = tok.encode(text, max_length=length)
    batch = {"inputs": jnp.asarray(ids, jnp.int32)[None]}
    if "token_types" in shapes:
      batch["token_types"] = jnp.zeros_like(batch["inputs"])
    return batch, {"inputs": tok.id_pieces(ids)}
  raise BadInput(f"attention maps are drawn for text: a {kind.name!r} run reads no text")


def attention_maps(run: inference.LoadedRun, text: str) -> tuple[list[AttentionMap], dict]:
  """Every attention kind's weights for `text` (and the tokens, translation included)."""
  if not text.strip():
    raise BadInput("--text is empty")
  kind = run.programs.kind
  cfg = run.programs.model_config
  params = run.programs.merged(run.params)
  if cfg.scan_layers:
    params = unstack_layers(params)
  model = kind.model(cfg.replace(deterministic=True, decode=False, scan_layers=False))
  batch, tokens = _batch(run, text)
  _, state = jax.jit(lambda p, b: model.apply({"params": p}, **kind.model_inputs(b),
                                              mutable=["intermediates"]))(params, batch)
  groups: dict[tuple[str, str], dict[int, np.ndarray]] = {}
  for path, value in traverse_util.flatten_dict(state["intermediates"]).items():
    if path[-1] != "attention_weights":
      continue
    layer = next(i for i, p in enumerate(path) if _LAYER.match(p))
    stack = "/".join(path[:layer]) or "encoder"
    module = path[layer + 1]
    groups.setdefault((stack, module), {})[int(_LAYER.match(path[layer])[1])] = (
        np.asarray(value[0])[0])
  maps = []
  for (stack, module), by_layer in groups.items():
    weights = np.stack([by_layer[i] for i in sorted(by_layer)])  # [layers, H, Lq, Lk]
    queries = tokens["targets"] if stack == "decoder" else tokens["inputs"]
    keys = tokens["inputs"] if module == "cross_attention" else queries
    if stack == "decoder" and module != "cross_attention":
      # Row i produces token i from the tokens before it: the decoder reads its input
      # shifted right, a start token first.
      keys = ["<s>"] + queries[:-1]
    if weights.shape[-1] == len(keys) + 1:  # a class token in front.
      keys = ["<cls>"] + keys
    if weights.shape[-2] == len(queries) + 1:
      queries = ["<cls>"] + queries
    maps.append(AttentionMap(f"{stack.split('/')[-1]} {_NAMES.get(module, module)}",
                             weights, queries, keys))
  return maps, tokens


def figure(m: AttentionMap):
  """Layers (rows) by heads (columns); each cell a [queries, keys] heat map."""
  layers, heads, lq, lk = m.weights.shape
  cell = max(2.0, 0.15 * max(lq, lk) + 0.6)
  fig, axes = plt.subplots(layers, heads, figsize=(cell * heads + 1.6, cell * layers + 1.4),
                           squeeze=False, layout="constrained")
  for layer in range(layers):
    for head in range(heads):
      ax = axes[layer][head]
      image = ax.imshow(m.weights[layer, head], vmin=0.0, vmax=1.0, cmap="viridis",
                        aspect="auto", interpolation="nearest")
      # Tokens on the outer axes only: every cell of a row (column) shares them.
      ax.set_xticks(range(lk), m.key_tokens if layer == layers - 1 else [], rotation=90,
                    fontsize=7)
      ax.set_yticks(range(lq), m.query_tokens if head == 0 else [], fontsize=7)
      ax.set_title(f"layer {layer}, head {head}", fontsize=8)
  rows = "the token being produced" if m.title.startswith("decoder") else "queries"
  fig.suptitle(f"{m.title} (rows: {rows}; columns: the tokens attended to)")
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
  return fig


def write_maps(maps: list[AttentionMap], output: str) -> list[str]:
  os.makedirs(output, exist_ok=True)
  paths = []
  for m in maps:
    fig = figure(m)
    path = os.path.join(output, f"{m.stem}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths
