"""Train-step throughput of a config's model on this machine (synthetic full-length batches).

  python benchmarks/train_step.py --config=configs/base.py [--steps=20] [--config.model.dtype=bfloat16]

Prints step time, token slots per second (source + target positions, no
padding) and, for reference, this machine's float32 matmul rate measured in the
same run.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from transformer_jax import config as config_lib
from transformer_jax import programs, sharding

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (after 2 warm-up steps).")
_VOCAB = flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size.")


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(reps):
    f(a).block_until_ready()
  return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main(_):
  config = _CONFIG.value
  config_lib.validate(config, jax.device_count())
  progs = programs.build(config, sharding.make_mesh(config), _VOCAB.value)
  rng = jax.random.key(0)
  state = progs.init_state(rng)
  batch_size = progs.global_batch_size
  shape = (batch_size, config.max_target_length)
  ids = np.random.default_rng(0).integers(3, _VOCAB.value, shape, dtype=np.int32)
  batch = sharding.global_batch({"inputs": ids, "targets": ids}, progs.batch_sharding)
  step = progs.train_step
  with progs.context():
    for _ in range(2):
      state, m = step(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
      state, m = step(state, batch)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / _STEPS.value
  slots = 2 * batch_size * config.max_target_length
  print(f"devices {jax.device_count()} | batch {batch_size} x {config.max_target_length} | "
        f"dtype {config.model.dtype}")
  print(f"step {dt * 1e3:.1f} ms | {slots / dt:,.0f} token slots/s (source + target)")
  print(f"f32 matmul 2048^2 on this machine now: {matmul_gflops():.0f} GFLOP/s")


if __name__ == "__main__":
  app.run(main)
