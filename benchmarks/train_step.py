"""Train-step speed of a config's model on this machine (synthetic full-length batches).

  python benchmarks/train_step.py --config=configs/base.py [--steps=20] [--config.model.dtype=bfloat16]
  python benchmarks/train_step.py --config=configs/base.py --sweep [--steps=5]

For each variant: compile time, step time, token slots per second (every
position of the batch, no padding), model FLOP/s (transformer_jax/flops.py,
3x the forward matrix products) and MFU against the peak: the chip's data-sheet
bf16 rate, or on a CPU the float32 matmul rate measured in this run. `--sweep`
times a grid of global batch sizes and model sizes of the config's kind.
On a CPU the matmul rate is measured in this run, just before and just after each
variant (the machine's speed drifts when it is shared), and each variant's MFU is
taken against the mean of its two measurements; the cached rate that `train.py`
logs against is printed beside it.
"""

import itertools
import time

from transformer_jax.train import hugepages

hugepages.reexec()  # as train.py does (TRANSFORMER_JAX_HUGEPAGES=0: without).

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags
from synthetic import synthetic_batch  # benchmarks/synthetic.py

from transformer_jax import kinds
from transformer_jax.observe import flops
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (after 2 warm-up steps).")
_VOCAB = flags.DEFINE_integer("vocab_size", 0, "Vocabulary size; 0: config.data.vocab_size.")
_SWEEP = flags.DEFINE_bool("sweep", False, "Time a grid of batch sizes x model sizes.")
_SWEEP_BATCH = flags.DEFINE_list("sweep_batch", ["16", "32", "64"],
                                 "--sweep: global batch sizes.")
# --sweep: model sizes as width:mlp:encoder layers:decoder layers.
_SWEEP_MODELS = flags.DEFINE_list("sweep_models", ["256:1024:3:3", "512:2048:3:3",
                                                   "256:1024:6:6"],
                                  "--sweep: model sizes, width:mlp:encoder:decoder layers.")


def time_step(config, vocab_size: int, steps: int) -> dict:
  """Compile seconds, seconds per step, token slots per step and model FLOPs per step."""
  kinds.validate(config, jax.device_count())
  num_classes = max(config.model.num_classes, 2)
  progs = programs.build(config, sharding.make_mesh(config), vocab_size, num_classes)
  state = progs.init_state(jax.random.key(0))
  batch = synthetic_batch(progs, config, vocab_size)
  with progs.context():
    t0 = time.perf_counter()
    compiled = progs.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(2):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / steps
  slots = sum(np.prod(s.shape) for k, s in progs.batch_shapes.items()
              if k in ("inputs", "targets"))
  return {"compile_s": compile_s, "step_s": step_s, "slots": int(slots),
          "flops": progs.train_flops, "batch": progs.global_batch_size}


def _timed(config, vocab_size: int, steps: int, on_cpu: bool) -> dict:
  """time_step, with the CPU's matmul rate measured just before and after it."""
  before = flops.measure_cpu_matmul() if on_cpu else None
  r = time_step(config, vocab_size, steps)
  if on_cpu:
    r["peak"] = (before + flops.measure_cpu_matmul()) / 2
  return r


def _row(label: str, r: dict, peak: float | None) -> str:
  peak = r.get("peak", peak)
  flop_rate = r["flops"] / r["step_s"] if r["flops"] else None
  cells = [label, f"{r['batch']}", f"{r['compile_s']:.1f} s", f"{r['step_s'] * 1e3:.1f} ms",
           f"{r['slots'] / r['step_s']:,.0f}",
           f"{flop_rate / 1e9:,.1f}" if flop_rate else "-",
           f"{peak / 1e9:,.0f}" if peak else "-",
           f"{flop_rate / peak:.3f}" if flop_rate and peak else "-"]
  return "| " + " | ".join(cells) + " |"


def main(_):
  config = _CONFIG.value
  vocab_size = _VOCAB.value or config.data.vocab_size
  peak = flops.peak_flops()
  peak_rate, peak_name = peak if peak else (None, "unknown")
  print(f"devices: {flops.device_description()} | "
        f"dtype {config.model.dtype} | length {config.max_target_length} | "
        f"vocabulary {vocab_size}")
  on_cpu = jax.devices()[0].platform == "cpu"
  if peak_rate:
    print(f"peak: {peak_rate / 1e9:,.0f} GFLOP/s ({peak_name}"
          + ("; cached, as train.py's train/mfu: the rows' peak is measured beside each"
             if on_cpu else "") + ")")
  print("| variant | global batch | compile | step | token slots/s | model GFLOP/s "
        "| peak GFLOP/s | MFU |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  if not _SWEEP.value:
    print(_row("config", _timed(config, vocab_size, _STEPS.value, on_cpu), peak_rate),
          flush=True)
    return
  for model, batch in itertools.product(_SWEEP_MODELS.value, _SWEEP_BATCH.value):
    width, mlp, enc, dec = (int(x) for x in model.split(":"))
    c = config.copy_and_resolve_references()
    c.model.emb_dim, c.model.qkv_dim, c.model.mlp_dim = width, width, mlp
    c.model.num_heads = max(width // 64, 1)
    c.model.num_encoder_layers, c.model.num_decoder_layers = enc, dec
    c.global_batch_size = int(batch)
    print(_row(f"{width}/{mlp}, {enc}+{dec} layers",
               _timed(c, vocab_size, _STEPS.value, on_cpu), peak_rate), flush=True)


if __name__ == "__main__":
  app.run(main)
