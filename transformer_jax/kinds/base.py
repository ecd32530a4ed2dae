"""The record of a model kind, and the registry that finds it by name.

A kind is everything the loop, the steps, the compiler and the tools need to
know about one family of models: which Flax module, what a batch holds, how a
batch feeds the model, the objective and the eval sums, how it decodes (if it
does), what its throughput is counted in, where its data comes from and how
it is evaluated (its task). Nothing outside the record asks which kind runs.

A new kind is one file that builds a `ModelKind` and calls `register()`; the
built-in kinds live beside this file. A config file may register a kind of its
own before `get_config()` returns (see tests/toy_kind.py).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.errors import ConfigError

Batch = dict[str, jax.Array]


def _no_check(config) -> None:
  del config


def _no_prompt(config) -> str:
  del config
  return ""


@dataclasses.dataclass(frozen=True)
class ModelKind:
  """One model kind. `config` below is the run's ml_collections config."""
  name: str
  description: str
  # The Flax module, built from the derived TransformerConfig (config.model_config).
  model: Callable[..., Any]
  # (config, global batch rows) -> {batch key: jax.ShapeDtypeStruct} of one global batch.
  batch_shapes: Callable[[Any, int], dict[str, jax.ShapeDtypeStruct]]
  # batch -> the model's keyword arguments.
  model_inputs: Callable[[Batch], dict[str, jax.Array]]
  # (logits, batch, label_smoothing) -> metric sums with loss_sum and weight_sum (training).
  objective: Callable[..., dict[str, jax.Array]]
  # (logits, batch) -> metric sums (evaluation; no label smoothing).
  eval_sums: Callable[..., dict[str, jax.Array]]
  # config -> names of the eval/* metrics logged at every evaluation: those of
  # steps.summarize ("loss", "perplexity", "accuracy", "f1", ...) plus the task's extras.
  eval_metrics: Callable[[Any], tuple[str, ...]]
  # (config, workdir, is_writer) -> the kind's task (kinds/task.py): data, tokenizer,
  # evaluation. Import the data code inside, so that it loads only when used.
  task: Callable[[Any, str, bool], Any]
  data_sources: tuple[str, ...]  # config.data.source values; "files": the user's own.
  unit: str  # throughput: train/{unit}_per_sec ...
  count_units: Callable[[Batch], jax.Array]  # ... counts these in a batch.
  # Keys of the train metrics' summary (metrics/summaries.py) logged as train/<key> beside
  # loss, nll, accuracy and grad_norm, when the summary has them (e.g. a CTC head's "ctc").
  train_metrics: tuple[str, ...] = ()
  file_format: str = ""  # what data.source='files' reads, for messages.
  # Decoding, or None: (params, ids [B, S], rng, *, config, options, max_length,
  # vocab_limit) -> ids [B, max_length], jit-able (decode/search.py).
  decode: Callable[..., jax.Array] | None = None
  decode_tool: str = ""  # the tool that decodes it: "translate" | "generate" | "".
  # config -> the template that makes a source sentence a run's prompt ("{source}" in it),
  # for a decoder LM trained on prompted translation pairs: the translate tool decodes such
  # a run too; "" (the default): the run is not prompted.
  prompt_template: Callable[[Any], str] = _no_prompt
  # The config.decoding.method values its `decode` takes.
  decode_methods: tuple[str, ...] = ("greedy", "beam", "sample")
  # The optional config.decoding fields its decoder reads (config/checks.py's
  # OPTIONAL_DECODING); set for another kind, they are config errors.
  decoding_fields: tuple[str, ...] = ()
  uses_vocab: bool = True  # the model's vocabulary comes from a tokenizer.
  uses_classes: bool = False  # the model's head size comes from the data's labels.
  padding: Mapping[str, int] = dataclasses.field(default_factory=dict)  # fill of padding rows.
  extra: str = ""  # the pip extra its built-in data source needs (pip install -e ".[extra]").
  # (model config, {batch key: shape}) -> forward FLOPs of one global batch (observe/flops.py
  # has the formulas), for train/mfu; None: MFU is not reported.
  forward_flops: Callable[[Any, Mapping[str, Any]], float] | None = None
  # The Hugging Face model_types it imports and exports (pretrained/), e.g. ("bert",); a
  # run exports as the first whose options its model has.
  hf_architectures: tuple[str, ...] = ()
  # Its pooled encoder output is a text embedding (the embed tool).
  embeds: bool = False
  check_config: Callable[[Any], None] = _no_check  # raises ConfigError naming the field.

  def empty_batch(self, shapes: Mapping[str, jax.ShapeDtypeStruct], rows: int) -> dict:
    """`rows` rows of padding only (weight 0), shaped like the kind's batches."""
    return {k: np.full((rows,) + tuple(s.shape[1:]), self.padding.get(k, 0), s.dtype)
            for k, s in shapes.items()}


_KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
  """Adds `kind` to the registry under kind.name; returns it.

  A name taken by another kind is an error, unless the same file registers it
  again (a config file may be loaded twice).
  """
  old = _KINDS.get(kind.name)
  if old is not None and old is not kind and _origin(old) != _origin(kind):
    raise ValueError(f"model kind {kind.name!r} is already registered (by {_origin(old)})")
  _KINDS[kind.name] = kind
  return kind


def _origin(kind: ModelKind) -> str:
  return getattr(kind.task, "__module__", "?")


def lazy_task(module: str, name: str) -> Callable[[Any, str, bool], Any]:
  """A record's `task`: builds `module`.`name`(config, workdir, is_writer), importing the
  module (the kind's data code) only when a run needs it."""
  def task(config, workdir: str, is_writer: bool):
    return getattr(importlib.import_module(module), name)(config, workdir, is_writer)
  task.__module__ = module  # who registered the kind (register's check).
  return task


def get(name: str) -> ModelKind:
  """The registered kind `name`; an unknown name is a ConfigError listing the registered ones."""
  if name not in _KINDS:
    raise ConfigError(f"config.model.kind={name!r}: not a registered model kind; registered: "
                      f"{names()} (a new kind is one file that calls "
                      "transformer_jax.kinds.register)")
  return _KINDS[name]


def names() -> tuple[str, ...]:
  return tuple(sorted(_KINDS))


# --------------------------------------------------------------------------- helpers kinds share

SEQUENCE_ARGS = {"inputs": "inputs_BS", "targets": "targets_BL",
                 "inputs_positions": "inputs_positions_BS",
                 "targets_positions": "targets_positions_BL",
                 "inputs_segment_ids": "inputs_segment_ids_BS",
                 "targets_segment_ids": "targets_segment_ids_BL"}


def sequence_inputs(batch: Batch) -> dict[str, jax.Array]:
  """Packed sequence batches -> the keyword arguments of EncoderDecoder / DecoderLM."""
  return {name: batch[k] for k, name in SEQUENCE_ARGS.items() if k in batch}


def packed_shapes(features: tuple[str, ...]):
  """batch_shapes for packed token features: each with its segment ids and positions,
  [global batch, config.max_target_length] int32."""
  def shapes(config, global_batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    ids = jax.ShapeDtypeStruct((global_batch_size, config.max_target_length), jnp.int32)
    return {f"{f}{suffix}": ids for f in features
            for suffix in ("", "_segment_ids", "_positions")}
  return shapes
