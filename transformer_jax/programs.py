"""The jitted programs of a run, built from the config and a mesh alone.

Model, optimizer, the train state's shapes and shardings (from the logical
names and the config's rules), and the train / eval / decode steps jitted with
explicit shardings. Nothing here reads data, so the trainer and the
ahead-of-time compiler (`aot.py`) build exactly the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding

from transformer_jax import config as config_lib
from transformer_jax import decoding, optim, sharding, steps
from transformer_jax.models.classifier import EncoderClassifier
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.models.transformer import EncoderDecoder, TransformerConfig
from transformer_jax.models.vit import VisionTransformer

DECODE_FNS = {"encoder_decoder": decoding.translate, "decoder_lm": decoding.generate}
MODEL_CLASSES = {"encoder_decoder": EncoderDecoder, "decoder_lm": DecoderLM,
                 "encoder_classifier": EncoderClassifier, "vit": VisionTransformer}


def batch_shapes(config: ml_collections.ConfigDict,
                 global_batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch's arrays for the config's model kind."""
  b, length, kind = global_batch_size, config.max_target_length, config.model.kind
  ids = jax.ShapeDtypeStruct((b, length), jnp.int32)
  label = jax.ShapeDtypeStruct((b,), jnp.int32)
  if kind == "vit":
    d = config.data
    return {"image": jax.ShapeDtypeStruct((b, d.image_size, d.image_size, d.num_channels),
                                          jnp.float32), "label": label}
  if kind == "encoder_classifier":
    return {"inputs": ids, "label": label}
  keys = ["targets", "targets_segment_ids", "targets_positions"]
  if kind == "encoder_decoder":
    keys += ["inputs", "inputs_segment_ids", "inputs_positions"]
  return {k: ids for k in keys}


@dataclasses.dataclass(frozen=True)
class Programs:
  """What one run compiles. Trace and call the steps inside `self.context()`."""
  model_config: TransformerConfig
  mesh: Mesh
  rules: tuple
  global_batch_size: int
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  init_fn: Callable[[jax.Array], Any]  # rng -> TrainState with boxed params.
  abstract_state: steps.TrainState  # ShapeDtypeStructs carrying their shardings.
  state_shardings: steps.TrainState
  batch_sharding: NamedSharding
  train_step: Callable  # (state, batch) -> (state, metric sums); donates state.
  eval_step: Callable  # (params, batch) -> metric sums.
  # (params, ids [B, S], rng) -> ids [B, max_predict_length] with config.decoding: source
  # ids -> translations (encoder-decoder), or prompts -> prompt + continuation (LM);
  # None for classifiers.
  decode: Callable | None
  batch_shapes: dict[str, jax.ShapeDtypeStruct]

  def context(self):
    """The mesh and logical axis rules that tracing needs (jax.set_mesh, NOTES.md)."""
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def init_state(self, rng: jax.Array) -> steps.TrainState:
    """Fresh state, every array born on its shards."""
    return sharding.init_sharded(self.init_fn, self.state_shardings, self.mesh, self.rules, rng)

  def batch_specs(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Abstract global batch (for lowering without data)."""
    return {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.batch_sharding)
            for k, s in self.batch_shapes.items()}


def build(config: ml_collections.ConfigDict, mesh: Mesh, vocab_size: int,
          num_classes: int = 0) -> Programs:
  """Model, optimizer, state shardings and jitted steps for `config` on `mesh`.

  `vocab_size` is the tokenizer's (0 for images); `num_classes` the data's
  labels (classifiers; 0 takes config.model.num_classes).
  """
  kind = config.model.kind
  model_config = config_lib.model_config(config, vocab_size, num_classes)
  model_class = MODEL_CLASSES[kind]
  model = model_class(model_config)
  eval_model = model_class(model_config.replace(deterministic=True))
  rules = sharding.logical_axis_rules(config)
  tx = optim.make_optimizer(config)
  global_batch_size = config_lib.global_batch_size(config, mesh.size)
  shapes = batch_shapes(config, global_batch_size)
  init_fn = functools.partial(steps.create_train_state, model, tx, batch_shapes=shapes,
                              kind=kind)
  abstract, state_shardings = sharding.state_shardings(
      init_fn, mesh, rules, jax.random.key(0))
  batch_sharding = sharding.batch_sharding(mesh, rules)
  replicated = sharding.replicated(mesh)
  train_step = jax.jit(
      functools.partial(steps.train_step, model=model, tx=tx,
                        label_smoothing=config.label_smoothing, kind=kind),
      in_shardings=(state_shardings, batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  eval_step = jax.jit(functools.partial(steps.eval_step, model=eval_model, kind=kind),
                      in_shardings=(state_shardings.params, batch_sharding),
                      out_shardings=replicated)
  decode = None
  if kind in DECODE_FNS:
    decode = jax.jit(
        functools.partial(DECODE_FNS[kind], config=model_config,
                          options=decoding.DecodeOptions.from_config(config.decoding),
                          max_length=config.max_predict_length, vocab_limit=vocab_size),
        in_shardings=(state_shardings.params, batch_sharding, replicated),
        out_shardings=replicated)
  return Programs(
      model_config=model_config, mesh=mesh, rules=rules, global_batch_size=global_batch_size,
      tx=tx, schedule=optim.learning_rate_schedule(config), init_fn=init_fn,
      abstract_state=sharding.abstract_like(abstract, state_shardings),
      state_shardings=state_shardings, batch_sharding=batch_sharding, train_step=train_step,
      eval_step=eval_step, decode=decode, batch_shapes=shapes)
