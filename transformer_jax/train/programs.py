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
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from transformer_jax import kinds
from transformer_jax.adapters import lora
from transformer_jax.compress import quant
from transformer_jax.decode import search as decoding
from transformer_jax.models import config as models_config, layers
from transformer_jax.models.transformer import TransformerConfig
from transformer_jax.observe import flops
from transformer_jax.parallel import sharding
from transformer_jax.train import optim, steps


@dataclasses.dataclass(frozen=True)
class Programs:
  """What one run compiles. Trace and call the steps inside `self.context()`."""
  kind: kinds.ModelKind
  model_config: TransformerConfig
  mesh: Mesh
  rules: tuple
  global_batch_size: int
  tx: optax.GradientTransformation
  schedule: Callable  # (step, horizon=num_train_steps) -> learning rate (optim.py).
  init_fn: Callable[[jax.Array], Any]  # rng -> TrainState with boxed params.
  abstract_state: steps.TrainState  # ShapeDtypeStructs carrying their shardings.
  state_shardings: steps.TrainState
  batch_sharding: NamedSharding
  train_step: Callable  # (state, batch) -> (state, metric sums); donates state.
  eval_step: Callable  # (params, batch) -> metric sums.
  # (params, ids [B, S], rng) -> ids [B, max_predict_length] with config.decoding: the
  # kind's decoder (source ids -> translations, prompts -> prompt + continuation);
  # None for kinds that do not decode.
  decode: Callable | None
  batch_shapes: dict[str, jax.ShapeDtypeStruct]
  rows: list[int]  # the global batch rows this process feeds.
  # Model FLOPs of one train step (flops.py); None for a kind without a formula.
  train_flops: float | None = None
  # The unjitted eval and decode functions (params as stored: float, or with QTensors).
  eval_fn: Callable | None = None
  decode_fn: Callable | None = None
  # PartitionSpecs of the parameters' logical names, like the params (when compressing
  # or adapting; `logical_names()` computes them otherwise).
  param_names: Any = None
  # An adapter run's (config.lora.rank > 0): its spec, the model's fresh parameters
  # (rng -> boxed params) and their shardings, and (params, rng) -> its boxed TrainState.
  lora: lora.Spec | None = None
  init_params_fn: Callable | None = None
  param_shardings: Any = None
  adapt_fn: Callable | None = None
  lora_targets: tuple[str, ...] = ()  # the kernels config.lora chose (their paths).

  def context(self):
    """The mesh and logical axis rules that tracing needs: `nn.with_logical_constraint`
    applies only under `jax.set_mesh` (the older `with mesh:` no longer does)."""
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def init_state(self, rng: jax.Array) -> steps.TrainState:
    """Fresh state, every array born on its shards."""
    return sharding.init_sharded(self.init_fn, self.state_shardings, self.mesh, self.rules, rng)

  def init_params(self, rng: jax.Array) -> Any:
    """An adapter run's fresh model parameters (the base before any is loaded into it),
    born on their shards."""
    params_rng, _ = jax.random.split(rng)
    return sharding.init_sharded(self.init_params_fn, self.param_shardings, self.mesh,
                                 self.rules, params_rng)

  def adapt(self, params: Any, rng: jax.Array) -> steps.TrainState:
    """An adapter run's fresh state from the model's parameters (its base): fresh
    adapters, the frozen base as config.lora keeps it."""
    return sharding.init_sharded(self.adapt_fn, self.state_shardings, self.mesh, self.rules,
                                 params, rng)

  def model_params(self, state: steps.TrainState) -> Any:
    """What the eval and decode programs take: the parameters, or an adapter run's frozen
    base and adapters together (`lora.Adapted`)."""
    if self.lora is None:
      return state.params
    return lora.Adapted(frozen=state.frozen, trainable=state.params)

  def merged(self, params: Any) -> Any:
    """The model's parameters as the model takes them: an adapter run's (`lora.Adapted`)
    base and adapters merged into floats; any other as it is."""
    if not isinstance(params, lora.Adapted):
      return params
    return lora.merge(params.frozen, params.trainable, self.lora.scale,
                      lora.names_by_path(self.param_names))

  def global_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of a batch -> the global, sharded batch."""
    return sharding.global_batch(local_batch, self.batch_sharding)

  def empty_batch(self) -> dict[str, np.ndarray]:
    """This process's rows of a batch of padding only (weight 0)."""
    return self.kind.empty_batch(self.batch_shapes, len(self.rows))

  def decode_ids(self, params, ids_BL: np.ndarray, rng: jax.Array) -> np.ndarray:
    """The decode program on one *global* batch of ids [global_batch_size, L]: this
    process feeds its rows; every process gets all output rows back."""
    if self.decode is None:
      raise ValueError(f"model kind {self.kind.name!r} does not decode")
    inputs = self.global_batch({"inputs": np.asarray(ids_BL)[self.rows]})["inputs"]
    with self.context():
      return np.asarray(jax.device_get(self.decode(params, inputs, rng)))

  def logical_names(self) -> Any:
    if self.param_names is not None:
      return self.param_names
    return param_names(self.kind.model(self.model_config), self.kind, self.batch_shapes)

  def for_params(self, params) -> Programs:
    """These programs, or for parameters stored as integers (`quant.QTensor`, from the
    compress tool) a copy whose eval and decode programs take them as they are: kept
    as integers in memory, turned into floats inside each call."""
    if not quant.has_quantized(params):
      return self
    replicated = sharding.replicated(self.mesh)
    decode = None
    if self.decode_fn is not None:
      decode = jax.jit(self.decode_fn, in_shardings=(None, self.batch_sharding, replicated),
                       out_shardings=replicated)
    return dataclasses.replace(
        self, decode=decode,
        eval_step=jax.jit(self.eval_fn, in_shardings=(None, self.batch_sharding),
                          out_shardings=replicated))

  def batch_specs(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Abstract global batch (for lowering without data)."""
    return {k: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.batch_sharding)
            for k, s in self.batch_shapes.items()}


def build(config: ml_collections.ConfigDict, mesh: Mesh, vocab_size: int,
          num_classes: int = 0, decode_kwargs: dict | None = None) -> Programs:
  """Model, optimizer, state shardings and jitted steps for `config` on `mesh`.

  The model kind's record (`kinds.get(config.model.kind)`) supplies the model,
  the batch, the objective and the decoder. `vocab_size` is the tokenizer's (0
  for kinds without one); `num_classes` the data's labels (classifiers; 0 takes
  config.model.num_classes); `decode_kwargs` go to the kind's decoder as they are
  (the task's `decode_kwargs()`: speech's word list).
  """
  kind = kinds.get(config.model.kind)
  model_config = models_config.model_config(config, vocab_size, num_classes)
  model = kind.model(model_config)
  eval_model = kind.model(model_config.replace(deterministic=True))
  rules = sharding.logical_axis_rules(config)
  global_batch_size = sharding.global_batch_size(config, mesh.size)
  shapes = kind.batch_shapes(config, global_batch_size)
  spec = lora.Spec.from_config(config)
  compressing = bool(config.quantization.bits or config.pruning.sparsity)
  names = param_names(model, kind, shapes) if compressing or spec else None
  tx = optim.make_optimizer(config, names)
  init_fn = functools.partial(steps.create_train_state, model, tx, batch_shapes=shapes,
                              kind=kind)
  adapted = {}
  if spec is not None:
    adapted = _adapter_parts(spec, model, kind, shapes, tx, names, model_config.dtype)
    init_fn = adapted["init_fn"]
  abstract, state_shardings = sharding.state_shardings(
      init_fn, mesh, rules, jax.random.key(0))
  batch_sharding = sharding.batch_sharding(mesh, rules)
  replicated = sharding.replicated(mesh)
  bits, act_bits = config.quantization.bits, config.quantization.activation_bits

  def prepare(params):
    """The weights the model computes with: stored integers as floats, and with
    config.quantization.bits the float weights rounded as the integers would be; an
    adapter run's base and adapters merged."""
    if isinstance(params, lora.Adapted):
      return lora.merge(params.frozen, params.trainable, spec.scale, lora.names_by_path(names))
    params = quant.materialize(params)
    return quant.fake_quant_tree(params, names, bits) if bits else params

  train_step = jax.jit(
      functools.partial(steps.train_step, model=model, tx=tx,
                        label_smoothing=config.label_smoothing, kind=kind,
                        accum_steps=config.gradient_accumulation_steps,
                        prepare=prepare if bits else None, activation_bits=act_bits,
                        skip_nonfinite=config.max_skipped_nonfinite_steps > 0,
                        adapt=adapted.get("adapt")),
      in_shardings=(state_shardings, batch_sharding),
      out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  eval_fn = functools.partial(steps.eval_step, model=eval_model, kind=kind, prepare=prepare,
                              activation_bits=act_bits)
  params_shardings = state_shardings.params
  if spec is not None:
    params_shardings = lora.Adapted(frozen=state_shardings.frozen,
                                    trainable=state_shardings.params)
  eval_step = jax.jit(eval_fn, in_shardings=(params_shardings, batch_sharding),
                      out_shardings=replicated)
  decode = decode_fn = None
  if kind.decode is not None:
    decode_fn = functools.partial(
        _decode, decode=kind.decode, prepare=prepare, activation_bits=act_bits,
        config=model_config, options=decoding.DecodeOptions.from_config(config.decoding),
        max_length=config.max_predict_length, vocab_limit=vocab_size, **(decode_kwargs or {}))
    decode = jax.jit(decode_fn, in_shardings=(params_shardings, batch_sharding, replicated),
                     out_shardings=replicated)
  return Programs(
      kind=kind, model_config=model_config, mesh=mesh, rules=rules,
      global_batch_size=global_batch_size, tx=tx, schedule=optim.learning_rate_schedule(config),
      init_fn=init_fn, abstract_state=sharding.abstract_like(abstract, state_shardings),
      state_shardings=state_shardings, batch_sharding=batch_sharding, train_step=train_step,
      eval_step=eval_step, decode=decode, batch_shapes=shapes,
      rows=sharding.process_batch_rows(batch_sharding, global_batch_size),
      train_flops=flops.train_flops_per_step(kind.forward_flops, model_config, shapes),
      eval_fn=eval_fn, decode_fn=decode_fn, param_names=names, lora=spec,
      init_params_fn=adapted.get("init_params_fn"), adapt_fn=adapted.get("adapt_fn"),
      lora_targets=adapted.get("targets", ()),
      param_shardings=(nn.logical_to_mesh_sharding(names, mesh, rules) if spec else None))


def _adapter_parts(spec: lora.Spec, model, kind, shapes, tx, names, dtype) -> dict:
  """An adapter run's init and merge (adapters/lora.py): the kernels that config.lora
  chooses (a pattern that matches nothing fails here, before anything compiles)."""
  by_path = lora.names_by_path(names)
  param_shapes = {k: v.shape for k, v in lora.flat(nn.meta.unbox(_abstract_params(
      model, kind, shapes))).items()}
  targets, train_also = lora.select(spec, by_path, param_shapes)
  dummy = {k: jax.ShapeDtypeStruct(s.shape, s.dtype) for k, s in shapes.items()}

  def init_params_fn(rng):
    batch = {k: jax.numpy.ones(s.shape, s.dtype) for k, s in dummy.items()}
    return model.init(rng, **kind.model_inputs(batch))["params"]

  def adapt_fn(params, rng):
    params_rng, dropout_rng = jax.random.split(rng)
    params = lora.flat(nn.meta.unbox(params))
    trainable = lora.init(params, targets, train_also, spec.rank,
                          jax.random.fold_in(params_rng, 1))
    return steps.TrainState(
        step=jax.numpy.array(0, jax.numpy.int32), params=trainable,
        opt_state=tx.init(trainable), rng=jax.random.key_data(dropout_rng),
        frozen=lora.frozen_base(params, by_path, train_also, spec.base_bits, dtype,
                                spec.base_quant_type))

  def init_fn(rng):
    params_rng, _ = jax.random.split(rng)
    return adapt_fn(init_params_fn(params_rng), rng)

  def adapt(frozen, trainable, rng):
    return lora.merge(frozen, trainable, spec.scale, by_path, rng, spec.dropout)

  return {"init_fn": init_fn, "init_params_fn": init_params_fn, "adapt_fn": adapt_fn,
          "adapt": adapt, "targets": tuple(sorted(targets))}


def _decode(params, ids, rng, *, decode, prepare, activation_bits, **options):
  """The kind's decoder on the weights that `prepare` makes of `params`."""
  with layers.activation_quantization(activation_bits):
    return decode(prepare(params), ids, rng, **options)


def _abstract_params(model: nn.Module, kind: kinds.ModelKind,
                     shapes: dict[str, jax.ShapeDtypeStruct]) -> Any:
  """The boxed parameters' shapes, from an abstract init."""
  dummy = {k: jax.ShapeDtypeStruct(s.shape, s.dtype) for k, s in shapes.items()}
  return jax.eval_shape(
      lambda rng, batch: model.init(rng, **kind.model_inputs(batch))["params"],
      jax.random.key(0), dummy)


def param_names(model: nn.Module, kind: kinds.ModelKind,
                shapes: dict[str, jax.ShapeDtypeStruct]) -> Any:
  """The parameters' logical axis names (a tree of PartitionSpecs), from an abstract init."""
  return nn.get_partition_spec(_abstract_params(model, kind, shapes))
