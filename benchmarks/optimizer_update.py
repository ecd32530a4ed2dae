"""The optimizer update alone, at a config's parameter shapes: a pass bound by memory.

  python benchmarks/optimizer_update.py --config=configs/base.py [--rounds=5]

Times the config's optimizer (`optim.make_optimizer`: AdamW, global-norm clipping)
applied to the model's parameters with a fixed gradient, jitted, and beside it a
plain `p - lr * g`, which reads two arrays and writes one. Both print the bytes they
must move per call over their time: elementwise passes like these run at the
memory's rate, not the matmul units', so their share of a step grows on a machine
whose products are faster (read beside `benchmarks/train_step.py`). Alone, the
update costs more than inside the train step, where XLA fuses it (and the clipping
norm) with the passes that make the gradients: read it as an upper bound (BUILD_NOTES).
"""

from transformer_jax.train import hugepages

hugepages.reexec()  # as train.py does.

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from best_of import best_seconds  # benchmarks/best_of.py
from ml_collections import config_flags

from transformer_jax.observe import flops
from transformer_jax.parallel import sharding
from transformer_jax.train import optim, programs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds of 50 calls each (the best counts).")


def main(argv):
  del argv
  config = _CONFIG.value
  progs = programs.build(config, sharding.make_mesh(config), config.data.vocab_size,
                         max(config.model.num_classes, 2))
  params = progs.init_state(jax.random.key(0)).params
  tx = optim.make_optimizer(config)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

  @jax.jit
  def update(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def plain(params, grads):
    return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads)

  count = sum(p.size for p in jax.tree.leaves(params))
  size = 4 * count  # float32 bytes of one array of all parameters.
  rows = [
      # AdamW reads p, g, mu, nu and writes p, mu, nu; clipping reads g once more.
      ("the config's optimizer (AdamW, clipping)", update, (params, tx.init(params), grads),
       8 * size),
      ("plain p - lr * g", plain, (params, grads), 3 * size),
  ]
  print(f"devices: {flops.device_description()} | {count:,} float32 "
        f"parameters ({size / 1e6:.1f} MB an array)")
  print("| update | ms | GB/s moved (the least bytes it must read and write) |")
  print("| --- | --- | --- |")
  for label, fn, args, moved in rows:
    seconds = best_seconds(fn, args, _ROUNDS.value, calls=50)
    print(f"| {label} | {seconds * 1e3:.2f} | {moved / seconds / 1e9:.1f} |")


if __name__ == "__main__":
  app.run(main)
