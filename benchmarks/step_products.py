"""How fast the base step's kinds of matrix product run alone, against the matmul rate.

  python benchmarks/step_products.py --config=configs/base.py [--rounds=5]

At the config's shapes (global batch B, length L, width D, MLP F, H heads of K,
vocabulary V), each jitted forward + backward (the step's 3x the forward FLOPs),
timed alone: a weight product [B*L, D] @ [D, F] and its gradients (the projections,
the MLP), the tied logits [B*L, D] @ [D, V], and one attention module's
products ([B, H, L, K] x [B, H, S, K] -> [B, H, L, S] and back), with its
softmax and head transposes and without. Each figure is the best of `--rounds`
rounds of 20 calls; the float32 2048^2 matmul rate (flops.measure_cpu_matmul) is
measured before and after. Read the attention rows against the weight products':
products this small run far below the rate, and a step holds 9 attention modules
(3 encoder self, 3 decoder self, 3 cross) at the base shape.
"""

import jax
import jax.numpy as jnp
from absl import app, flags
from best_of import best_seconds  # benchmarks/best_of.py
from ml_collections import config_flags

from transformer_jax.observe import flops

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds of 20 calls each (the best counts).")


def _attention(q, k, v):
  """The model's xla attention layout: [B, L, H, K] in and out, float32 softmax."""
  probs = jax.nn.softmax(jnp.einsum("BLHK,BSHK->BHLS", q, k), axis=-1)
  return jnp.einsum("BHLS,BSHK->BLHK", probs, v)


def _products_only(q, k, v):
  """The same two products on [B, H, L, K] operands: no transposes, no softmax."""
  return jnp.einsum("BHLS,BHSK->BHLK", jnp.einsum("BHLK,BHSK->BHLS", q, k), v)


def _fwd_bwd(f):
  return jax.jit(jax.grad(lambda *a: jnp.sum(f(*a)), argnums=tuple(range(3))))


def main(argv):
  del argv
  c = _CONFIG.value
  b, n = c.per_device_batch_size * jax.device_count(), c.max_target_length
  d, f, h, v = c.model.emb_dim, c.model.mlp_dim, c.model.num_heads, c.data.vocab_size
  kd = c.model.qkv_dim // h
  keys = iter(jax.random.split(jax.random.key(0), 8))

  def rand(*shape):
    return jax.random.normal(next(keys), shape, jnp.float32)
  x, w, table = rand(b * n, d), rand(d, f), rand(v, d)
  q, k, val = rand(b, n, h, kd), rand(b, n, h, kd), rand(b, n, h, kd)
  qt, kt, vt = (a.transpose(0, 2, 1, 3) for a in (q, k, val))
  rows = [
      (f"weight product [{b * n}, {d}] @ [{d}, {f}]", _fwd_bwd(lambda a, m, _: a @ m),
       (x, w, w), 3 * 2 * b * n * d * f),
      (f"tied logits [{b * n}, {d}] @ [{d}, {v}]", _fwd_bwd(lambda a, t, _: a @ t.T),
       (x, table, table), 3 * 2 * b * n * d * v),
      (f"attention, one module ({b}x{h} heads, {n}x{n}, K={kd})", _fwd_bwd(_attention),
       (q, k, val), 3 * 2 * 2 * b * h * n * n * kd),
      ("  its two products alone", _fwd_bwd(_products_only), (qt, kt, vt),
       3 * 2 * 2 * b * h * n * n * kd),
  ]
  before = flops.measure_cpu_matmul()
  results = [(label, best_seconds(fn, args, _ROUNDS.value), work)
             for label, fn, args, work in rows]
  peak = (before + flops.measure_cpu_matmul()) / 2
  print(f"devices: {flops.device_description()} | float32 | "
        f"matmul rate {peak / 1e9:.0f} GFLOP/s (2048^2, before and after)")
  print("| product (forward + backward) | ms | GFLOP/s | of the matmul rate |")
  print("| --- | --- | --- | --- |")
  for label, seconds, work in results:
    print(f"| {label} | {seconds * 1e3:.2f} | {work / seconds / 1e9:.1f} | "
          f"{work / seconds / peak:.2f} |")


if __name__ == "__main__":
  app.run(main)
