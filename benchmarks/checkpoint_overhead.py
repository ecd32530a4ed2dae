"""What saving a checkpoint every step costs the train loop (asynchronous Orbax saves).

  python benchmarks/checkpoint_overhead.py --config=configs/base.py [--steps=12] [--every=1]
      [--rounds=3]

Runs the config's real train step on synthetic full-length batches, in
`--rounds` rounds of `--steps` steps without saving followed by `--steps` steps
with a checkpoint after every `--every`-th step (state + a data position +
metadata, as train.py saves them; the last 3 kept, as by default). Alternating
the two cancels the machine's slow drift. Prints each round's mean wall time per
step and overhead, and the overhead of all rounds together. The loop waits for a
step's result before timing the next one, as train.py does at log steps.

Then, with nothing else running, the CPU time (user + system, all threads) of
one save: an Orbax save to completion, and as a floor, the same arrays copied
to the host and written into fresh files with `np.save` (median of 3 each).
On a machine whose CPU is also the accelerator, that CPU time is what a save
takes away from training.
"""

import os
import resource
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from transformer_jax.checkpoint import manager as checkpoint
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 12, "Timed steps per variant (after 2 warm-up steps).")
_VOCAB = flags.DEFINE_integer("vocab_size", 8000, "Vocabulary size.")
_EVERY = flags.DEFINE_integer("every", 1, "Save after every N-th step.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds of (steps without, steps with saving).")


def main(_):
  config = _CONFIG.value
  progs = programs.build(config, sharding.make_mesh(config), _VOCAB.value)
  state = progs.init_state(jax.random.key(0))
  shape = (progs.global_batch_size, config.max_target_length)
  ids = np.random.default_rng(0).integers(3, _VOCAB.value, shape, dtype=np.int32)
  batch = sharding.global_batch({"inputs": ids, "targets": ids}, progs.batch_sharding)
  data_state = {"global_batch_size": shape[0], "rows": {str(r): {"pos": r} for r in range(shape[0])}}
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))

  blocking = []  # seconds spent inside save() calls.

  def run(n, ckpt=None):
    nonlocal state
    t0 = time.perf_counter()
    for _ in range(n):
      state, m = progs.train_step(state, batch)
      jax.block_until_ready(m)
      if ckpt is not None and int(state.step) % _EVERY.value == 0:
        t1 = time.perf_counter()
        ckpt.save(int(state.step), state, data_state, {"benchmark": True})
        blocking.append(time.perf_counter() - t1)
    return (time.perf_counter() - t0) / n

  with progs.context(), tempfile.TemporaryDirectory() as tmp:
    ckpt = checkpoint.Checkpointer(os.path.join(tmp, "ckpt"), max_to_keep=3)
    run(2)
    run(2, ckpt)
    ckpt.wait()
    blocking.clear()
    plain, saving, drains = [], [], []
    for _ in range(_ROUNDS.value):
      plain.append(run(_STEPS.value))
      saving.append(run(_STEPS.value, ckpt))
      t0 = time.perf_counter()
      ckpt.wait()  # the next round without saving starts with no save in flight.
      drains.append(time.perf_counter() - t0)
    orbax_cpu, raw_cpu = [], []
    for i in range(3):
      orbax_cpu.append(_cpu_seconds(
          lambda s=10_000 + i: (ckpt.save(s, state, data_state, {}), ckpt.wait())))
      raw_cpu.append(_cpu_seconds(lambda d=os.path.join(tmp, f"raw_{i}"): _write_npy(d, state)))
    ckpt.close()
  print(f"state {state_bytes / 2**20:.1f} MiB | batch {shape[0]} x {shape[1]} | "
        f"{jax.device_count()} device(s)")
  for i, (p, s) in enumerate(zip(plain, saving)):
    print(f"round {i + 1}: step without saving {p * 1e3:.0f} ms | with a save every "
          f"{_EVERY.value} step(s) {s * 1e3:.0f} ms | overhead {100 * (s / p - 1):+.1f}% "
          f"(last save drained in {drains[i] * 1e3:.0f} ms)")
  print(f"all rounds: {np.mean(plain) * 1e3:.0f} ms -> {np.mean(saving) * 1e3:.0f} ms per step, "
        f"overhead {100 * (np.mean(saving) / np.mean(plain) - 1):+.1f}%; save() blocked the loop "
        f"{np.median(blocking) * 1e3:.0f} ms per call (median)")
  print(f"CPU time of one save, idle loop: Orbax {np.median(orbax_cpu) * 1e3:.0f} ms | "
        f"np.save of the same arrays into new files {np.median(raw_cpu) * 1e3:.0f} ms")


def _cpu_seconds(fn) -> float:
  before = resource.getrusage(resource.RUSAGE_SELF)
  fn()
  after = resource.getrusage(resource.RUSAGE_SELF)
  return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _write_npy(directory: str, state) -> None:
  os.makedirs(directory)
  for i, x in enumerate(jax.tree.leaves(jax.device_get(state))):
    np.save(os.path.join(directory, f"{i}.npy"), np.asarray(x))


if __name__ == "__main__":
  app.run(main)
