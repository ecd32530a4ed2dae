"""Our encoder-decoder train step against the Flax WMT example's, at equal work.

  git clone https://github.com/google/flax
  python benchmarks/vs_flax_wmt.py --flax_wmt_dir=flax/examples/wmt [--steps=5] [--rounds=3] \
      [--dropout=0.1] [--config=configs/base.py] [--config.model.emb_dim=512 ...]

Ours is built as benchmarks/train_step.py builds it. Theirs is `models.Transformer`
from the example's models.py (the only file imported: flax, jax, numpy) in a step
like its train.py's: label-smoothed cross-entropy over the target weights, its
metrics, AdamW (b1 0.9, b2 0.98, eps 1e-9), a constant learning rate, jitted with
the state donated. Sizes, vocabulary, dtype, label smoothing and weight decay come
from the config for both (3+3 layers, width 256, 4 heads, MLP 1024, length 64;
--wmt_shape, on by default, sets vocabulary 8,000, batch 32, float32: the shape the
comparison is defined at); --dropout sets both models' dropout and attention dropout. Both get the same batch of random ids, full length.
Compiled, 2 warm-up steps each, then each round times --steps of theirs, then of
ours. Prints median step time, token slots/s (source + target positions), model
FLOP/s (flops.py, ours for both) against this CPU's f32 matmul rate, ours/theirs.
Both models run in one process with malloc on transparent huge pages, as train.py
runs (transformer_jax/hugepages.py; TRANSFORMER_JAX_HUGEPAGES=0: plain malloc for
both); the header line says which.
"""

import contextlib
import importlib.util
import os
import statistics
import time

from transformer_jax.train import hugepages

hugepages.reexec()  # as train.py does, for both models (TRANSFORMER_JAX_HUGEPAGES=0: without).

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax.training import train_state
from ml_collections import config_flags

from transformer_jax import config as config_lib, kinds
from transformer_jax.observe import flops
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_WMT_SHAPE = flags.DEFINE_bool(
    "wmt_shape", True, "Compare at the shape the comparison is defined at: float32, vocabulary "
    "8,000, 32 rows (over the config's own dtype, vocabulary and batch); the config's 3+3 "
    "layers, width 256, 4 heads, MLP 1024 and length 64 stay.")
_FLAX_WMT_DIR = flags.DEFINE_string(
    "flax_wmt_dir", None, "examples/wmt of a clone of github.com/google/flax (its models.py).",
    required=True)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps of each model per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds, each theirs then ours.")
_DROPOUT = flags.DEFINE_float("dropout", 0.1, "Dropout and attention dropout of both models.")


def _load_models(directory: str):
  path = os.path.join(directory, "models.py")
  if not os.path.isfile(path):
    raise app.UsageError(f"no {path}: pass --flax_wmt_dir=<flax clone>/examples/wmt")
  spec = importlib.util.spec_from_file_location("flax_wmt_models", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _xent_sum(logits, targets, weights, label_smoothing: float):
  """Weighted sum of the smoothed cross-entropy less its minimum, in their one-hot form."""
  vocab = logits.shape[-1]
  confidence, low = 1.0 - label_smoothing, label_smoothing / (vocab - 1)
  soft = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
  floor = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  return (((-soft * jax.nn.log_softmax(logits)).sum(-1) - floor) * weights).sum()


def _their_step(model, label_smoothing: float):
  def step(state, batch, dropout_rng):
    inputs, targets = batch["inputs"], batch["targets"]
    weights = (targets > 0).astype(jnp.float32)
    rng = jax.random.fold_in(dropout_rng, state.step)

    def loss_fn(params):
      logits = model.apply({"params": params}, inputs, targets, rngs={"dropout": rng})
      return _xent_sum(logits, targets, weights, label_smoothing) / weights.sum(), logits

    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": _xent_sum(logits, targets, weights, 0.0),
               "accuracy": ((logits.argmax(-1) == targets) * weights).sum(),
               "denominator": weights.sum()}
    return state.apply_gradients(grads=grads), metrics
  return step


def _compile(jitted, *args):
  t0 = time.perf_counter()
  return jitted.lower(*args).compile(), time.perf_counter() - t0


def _timed(step, state, n: int, *args):
  """(state, seconds per step) of n steps, blocking at the end."""
  t0 = time.perf_counter()
  for _ in range(n):
    state, metrics = step(state, *args)
  jax.block_until_ready((state, metrics))
  return state, (time.perf_counter() - t0) / n


def main(_):
  config = _CONFIG.value
  if _WMT_SHAPE.value:  # configs/base.py trains 16-row batches over a 4k vocabulary.
    config.model.dtype, config.data.vocab_size = "float32", 8000
    config.per_device_batch_size, config.global_batch_size = 32, 0
    config.model.positions = "sinusoidal"  # the example's (configs/base.py: rotary).
  config.model.dropout_rate = config.model.attention_dropout_rate = _DROPOUT.value
  kinds.validate(config, jax.device_count())
  m, vocab = config.model, config.data.vocab_size
  if m.kind != "encoder_decoder" or m.num_encoder_layers != m.num_decoder_layers:
    raise app.UsageError("needs an encoder_decoder config with as many encoder as decoder layers")
  models = _load_models(_FLAX_WMT_DIR.value)

  progs = programs.build(config, sharding.make_mesh(config), vocab)
  batch, length = progs.global_batch_size, config.max_target_length
  ids = np.random.default_rng(0).integers(3, vocab, (2, batch, length), dtype=np.int32)
  local = {"inputs": ids[0], "targets": ids[1]}
  for key in ("inputs", "targets"):  # ours takes the packed form: one example per row.
    local[f"{key}_segment_ids"] = np.ones((batch, length), np.int32)
    local[f"{key}_positions"] = np.tile(np.arange(length, dtype=np.int32), (batch, 1))
  our_batch, our_state = progs.global_batch(local), progs.init_state(jax.random.key(0))
  with progs.context():
    our_compiled, compile_s = _compile(progs.train_step, our_state, our_batch)

  their_config = models.TransformerConfig(
      vocab_size=vocab, output_vocab_size=vocab, share_embeddings=True,
      logits_via_embedding=m.logits_via_embedding, dtype=config_lib.DTYPES[m.dtype],
      emb_dim=m.emb_dim, num_heads=m.num_heads, num_layers=m.num_encoder_layers,
      qkv_dim=m.qkv_dim, mlp_dim=m.mlp_dim, max_len=length, dropout_rate=m.dropout_rate,
      attention_dropout_rate=m.attention_dropout_rate, deterministic=False, decode=False)
  init_rng, dropout_rng = jax.random.split(jax.random.key(0))
  dummy = jnp.ones((batch, length), jnp.float32)
  params = jax.jit(models.Transformer(their_config.replace(deterministic=True)).init)(
      init_rng, dummy, dummy)["params"]
  tx = optax.adamw(config.learning_rate, b1=0.9, b2=0.98, eps=1e-9,
                   weight_decay=config.weight_decay)
  their_state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
  their_batch = {"inputs": jnp.asarray(ids[0]), "targets": jnp.asarray(ids[1])}
  step = jax.jit(_their_step(models.Transformer(their_config), config.label_smoothing),
                 donate_argnums=(0,))
  their_compiled, their_compile_s = _compile(step, their_state, their_batch, dropout_rng)

  runs = {"theirs": (their_compiled, (their_batch, dropout_rng), contextlib.nullcontext),
          "ours": (our_compiled, (our_batch,), progs.context)}
  states, times = {"theirs": their_state, "ours": our_state}, {"theirs": [], "ours": []}
  for r in range(_ROUNDS.value + 1):  # round 0: 2 warm-up steps, not timed.
    for key, (compiled, args, context) in runs.items():
      with context():
        states[key], t = _timed(compiled, states[key], _STEPS.value if r else 2, *args)
      if r:
        times[key].append(t)

  matmul = flops.measure_cpu_matmul()
  slots, model_flops = 2 * batch * length, progs.train_flops
  print(f"{jax.device_count()} x {jax.devices()[0].device_kind} | {m.dtype} | "
        f"{m.num_encoder_layers}+{m.num_decoder_layers} layers, width {m.emb_dim}, "
        f"{m.num_heads} heads, MLP {m.mlp_dim} | vocabulary {vocab} | batch {batch} x {length} "
        f"| dropout {m.dropout_rate} | {_ROUNDS.value} rounds x {_STEPS.value} steps | f32 "
        f"matmul {matmul / 1e9:,.1f} GFLOP/s | {model_flops / 1e9:,.2f} GFLOPs/step (ours) | "
        f"malloc {'on huge pages' if hugepages.active() else 'plain'}")
  print("| model | compile | step (median) | token slots/s | model GFLOP/s | of f32 matmul |")
  print("| --- | --- | --- | --- | --- | --- |")
  rate = {}
  for key, name, seconds in (("theirs", "Flax WMT example", their_compile_s),
                             ("ours", "transformer_jax", compile_s)):
    step_s = statistics.median(times[key])
    rate[key] = slots / step_s
    print(f"| {name} | {seconds:.1f} s | {step_s * 1e3:.1f} ms | {rate[key]:,.0f} | "
          f"{model_flops / step_s / 1e9:,.1f} | {model_flops / step_s / matmul:.3f} |")
  print(f"ours / theirs (token slots/s): {rate['ours'] / rate['theirs']:.3f}")


if __name__ == "__main__":
  app.run(main)
