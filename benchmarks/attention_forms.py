"""Four ways to write one attention module's core, timed forward + backward at a config's shape.

  python benchmarks/attention_forms.py --config=configs/base.py [--rounds=7]

The core is what sits between the projections: queries, keys and values [B, L, H, K]
in, [B, L, H, K] out, with a padding-and-causal mask (as the decoder's
self-attention). The forms, all computing the same thing (checked here):
- `einsum`: the model's (`attention.MultiHeadAttention`, attention="xla"): two einsums
  on the [B, L, H, K] operands, the mask applied with `where` before and after the
  float32 softmax;
- `transposed`: heads moved ahead of the positions once, `jnp.matmul`, an additive
  mask bias and a hand-written softmax;
- `folded`: heads folded into the batch ([B*H, L, K]) and `lax.dot_general`;
- `dot_product`: `jax.nn.dot_product_attention` (attention="dot_product").
Each figure is the best and the median of `--rounds` rounds of 30 calls of the
jitted gradient of sum(out * a fixed random cotangent).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from transformer_jax.observe import flops

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Timed rounds of 30 calls each.")

_MIN = jnp.finfo(jnp.float32).min


def einsum(q, k, v, mask):
  logits = jnp.einsum("BLHK,BSHK->BHLS", q / np.sqrt(q.shape[-1]), k)
  probs = jax.nn.softmax(jnp.where(mask, logits, _MIN), axis=-1)
  return jnp.einsum("BHLS,BSHK->BLHK", jnp.where(mask, probs, 0.0), v)


def transposed(q, k, v, mask):
  q_t = q.transpose(0, 2, 1, 3) / np.sqrt(q.shape[-1])
  logits = jnp.matmul(q_t, k.transpose(0, 2, 3, 1)) + jnp.where(mask, 0.0, _MIN)
  e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  out = jnp.matmul(e / jnp.sum(e, axis=-1, keepdims=True), v.transpose(0, 2, 1, 3))
  return jnp.where(jnp.any(mask, axis=-1)[..., None], out, 0.0).transpose(0, 2, 1, 3)


def folded(q, k, v, mask):
  b, l, h, kd = q.shape
  s = k.shape[1]

  def fold(x, n):
    return x.transpose(0, 2, 1, 3).reshape(b * h, n, kd)
  logits = jax.lax.dot_general(fold(q / np.sqrt(kd), l), fold(k, s),
                               (((2,), (2,)), ((0,), (0,)))).reshape(b, h, l, s)
  probs = jax.nn.softmax(jnp.where(mask, logits, _MIN), axis=-1)
  probs = jnp.where(mask, probs, 0.0).reshape(b * h, l, s)
  out = jax.lax.dot_general(probs, fold(v, s), (((2,), (1,)), ((0,), (0,))))
  return out.reshape(b, h, l, kd).transpose(0, 2, 1, 3)


def dot_product(q, k, v, mask):
  out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=1.0 / np.sqrt(q.shape[-1]))
  return jnp.where(jnp.moveaxis(jnp.any(mask, axis=-1), 1, 2)[..., None], out, 0.0)


FORMS = {"einsum": einsum, "transposed": transposed, "folded": folded,
         "dot_product": dot_product}


def main(argv):
  del argv
  c = _CONFIG.value
  b, n, h = c.per_device_batch_size * jax.device_count(), c.max_target_length, c.model.num_heads
  kd = c.model.qkv_dim // h
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, cotangent = (jax.random.normal(key, (b, n, h, kd), jnp.float32) for key in keys)
  lengths = jnp.array([n, n * 3 // 4, n // 2, n])[jnp.arange(b) % 4]
  valid = jnp.arange(n)[None, :] < lengths[:, None]
  mask = (valid[:, None, :, None] & valid[:, None, None, :]) & jnp.tril(jnp.ones((n, n), bool))
  grads = {name: jax.jit(jax.grad(lambda q, k, v, f=f: jnp.sum(f(q, k, v, mask) * cotangent),
                                  argnums=(0, 1, 2)))
           for name, f in FORMS.items()}
  reference = grads["einsum"](q, k, v)
  times = {name: [] for name in grads}
  for _ in range(_ROUNDS.value):
    for name, fn in grads.items():
      jax.block_until_ready(fn(q, k, v))
      t0 = time.perf_counter()
      for _ in range(30):
        out = fn(q, k, v)
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - t0) / 30)
  work = 3 * 2 * 2 * b * h * n * n * kd
  print(f"devices: {flops.device_description()} | float32 | "
        f"{b} rows x {h} heads, {n} x {n} positions, head width {kd}, padding + causal mask")
  print("| form (forward + backward) | best ms | median ms | products' GFLOP/s (best) | "
        "largest gradient difference from einsum |")
  print("| --- | --- | --- | --- | --- |")
  for name, fn in grads.items():
    diff = max(float(jnp.max(jnp.abs(a - r))) for a, r in zip(fn(q, k, v), reference))
    best = min(times[name])
    print(f"| {name} | {best * 1e3:.2f} | {np.median(times[name]) * 1e3:.2f} | "
          f"{work / best / 1e9:.1f} | {diff:.1e} |")


if __name__ == "__main__":
  app.run(main)
