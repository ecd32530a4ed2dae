"""Building blocks: embeddings, positions, masks, norms, dense layers, MLP.

Shapes are in the names: B batch, L/S query/key length, D model width,
H heads, K head width, F MLP width, V vocabulary, C classes. Every parameter
carries logical axis names; the config's rules map them to mesh axes.
Positions come in three kinds: fixed sinusoidal and learned tables (added to
the embeddings) and rotary (applied to queries and keys inside attention).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.compress import quant
from transformer_jax.models.dropout import Dropout

Array = jax.Array
Dtype = Any

# The MLP's activations. "gelu" is jax.nn.gelu's default, the tanh approximation
# (GPT-2's "gelu_new"); "gelu_exact" is the erf form (BERT's "gelu").
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
}

# Logical names of activations (distinct from the parameters' names, so one
# mesh axis can shard a weight dimension and the batch at the same time).
ACT_BLD = ("act_batch", "act_length", "act_embed")
ACT_BLHK = ("act_batch", "act_length", "act_heads", "act_kv")
ACT_BLNK = ("act_batch", "act_length", "act_kv_heads", "act_kv")  # N key/value heads (GQA).
ACT_BLF = ("act_batch", "act_length", "act_mlp")
ACT_BLV = ("act_batch", "act_length", "act_vocab")
ACT_BD = ("act_batch", "act_embed")
ACT_BC = ("act_batch", "act_classes")


def constrain(x: Array, names: tuple[str, ...]) -> Array:
  return nn.with_logical_constraint(x, names)


# Bits of the matmul inputs (0: as they are), read when a model is traced: set it
# around `model.apply` with `activation_quantization` (config.quantization).
_ACTIVATION_BITS = contextvars.ContextVar("activation_bits", default=0)


@contextlib.contextmanager
def activation_quantization(bits: int):
  """Within it, `project` rounds its input to `bits` (one scale per row); 0: off."""
  token = _ACTIVATION_BITS.set(bits)
  try:
    yield
  finally:
    _ACTIVATION_BITS.reset(token)


def project(x: Array, w: Array, n_in: int = 1) -> Array:
  """Contracts x's last `n_in` axes with w's first `n_in`: x [..., I...] @ w [I..., O...].

  Computed as one 2-D matmul [N, I] @ [I, O] (reshapes of row-major arrays are
  free). Autodiff then takes the weight gradient as x2d.T @ dy2d, which XLA:CPU
  hands to its matmul with the transpose folded in; from the [B, L, ...] einsum it
  instead copies dy transposed first, and fuses the residual stream's gradient
  sum (recomputed from every later layer) into that copy: a fifth of a base-config
  step.
  """
  lead, inner = x.shape[:x.ndim - n_in], x.shape[x.ndim - n_in:]
  size = int(np.prod(inner))
  if bits := _ACTIVATION_BITS.get():
    x = quant.fake_quant_rows(x.reshape(*lead, size), bits)
  y = jnp.dot(x.reshape(-1, size), w.reshape(size, -1))
  return y.reshape(*lead, *w.shape[n_in:])


@jax.custom_vjp
def add_bias(y: Array, b: Array) -> Array:
  """y + b over y's last axis, b cast to y's dtype.

  Its backward pass takes b's gradient as a product, ones[N] @ dy[N, O] with a
  float32 result, where autodiff's sum over y's leading axes (after a float32
  copy of dy) becomes, inside a train step, a tree of XLA:CPU reduce-windows that
  run nearly scalar: the MLP biases alone took 8% of a base-config step's op time.
  """
  return y + b.astype(y.dtype)


def _add_bias_fwd(y, b):
  return add_bias(y, b), (jnp.zeros((0,), b.dtype),)  # carries b's dtype.


def _add_bias_bwd(residuals, dy):
  (b_empty,) = residuals
  dy_NO = dy.reshape(-1, dy.shape[-1])
  db = jnp.dot(jnp.ones((1, dy_NO.shape[0]), dy.dtype), dy_NO,
               preferred_element_type=jnp.float32)[0]
  return dy, db.astype(b_empty.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def param_with_names(module: nn.Module, name: str, init, shape, names, dtype=jnp.float32):
  if len(names) != len(shape):
    raise ValueError(f"{module.name}/{name}: logical names {names} do not match "
                     f"the rank of shape {shape}")
  return module.param(name, nn.with_logical_partitioning(init, names), shape, dtype)


# --------------------------------------------------------------------------- masks


def padding_mask(q_valid_BL: Array, k_valid_BS: Array) -> Array:
  """[B, 1, L, S] True where both query and key are real tokens."""
  return (q_valid_BL[:, None, :, None] & k_valid_BS[:, None, None, :])


def causal_mask(length: int) -> Array:
  """[1, 1, L, L] True where the key is not after the query."""
  idx = jnp.arange(length)
  return (idx[None, :] <= idx[:, None])[None, None]


def segment_mask(q_segments_BL: Array, k_segments_BS: Array) -> Array:
  """[B, 1, L, S] True where query and key belong to the same packed example."""
  return q_segments_BL[:, None, :, None] == k_segments_BS[:, None, None, :]


def combine_masks(*masks: Array | None) -> Array | None:
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  out = masks[0]
  for m in masks[1:]:
    out = out & m
  return out


# --------------------------------------------------------------------------- positions


def sinusoidal_positions(positions_BL: Array, dim: int, max_timescale: float = 1e4) -> Array:
  """The paper's fixed sin/cos encodings for integer positions: [B, L, dim]."""
  half = dim // 2
  inv_freq = np.exp(-np.log(max_timescale) * np.arange(half) / max(half - 1, 1))
  angles = positions_BL[..., None].astype(jnp.float32) * inv_freq
  enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if dim % 2:
    enc = jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, 1)])
  return enc


def learned_positions(module: nn.Module, positions_BL: Array, num_positions: int, dim: int,
                      dtype: Dtype = jnp.float32) -> Array:
  """Rows of a learned table "pos_embedding" [num_positions, dim] (created in `module`)."""
  length = positions_BL.shape[-1]
  if length > num_positions:
    raise ValueError(f"sequence length {length} exceeds max_length={num_positions}, the rows "
                     "of the learned position table")
  table = param_with_names(module, "pos_embedding", nn.initializers.normal(stddev=0.02),
                           (num_positions, dim), ("pos_length", "embed"))
  table = constrain(table, ("pos_length", None))
  return jnp.take(table, positions_BL, axis=0).astype(dtype)


def rotary_frequencies(head_dim: int, max_timescale: float = 1e4,
                       scaling: tuple = ()) -> np.ndarray:
  """RoPE's angular frequencies [head_dim / 2]: max_timescale**(-2i/head_dim), stretched by
  `scaling`: () none; ("linear", factor): all divided by factor (position interpolation);
  ("llama3", factor, low_freq_factor, high_freq_factor, original_length): Llama 3.1's,
  the long wavelengths divided by factor, the short kept, those between blended."""
  inv_freq = max_timescale ** (-np.arange(0, head_dim, 2) / head_dim)
  if not scaling:
    return inv_freq
  if scaling[0] == "linear":
    return inv_freq / scaling[1]
  if scaling[0] == "llama3":
    factor, low, high, original = scaling[1:]
    wavelength = 2 * np.pi / inv_freq
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    return np.where(wavelength > original / low, inv_freq / factor,
                    np.where(wavelength < original / high, inv_freq, blended))
  raise ValueError(f"rotary scaling {scaling[0]!r} is not one of ('linear', 'llama3')")


def rotary_embedding(x_BLHK: Array, positions_BL: Array, max_timescale: float = 1e4,
                     inv_freq: np.ndarray | None = None) -> Array:
  """RoPE: rotates each pair (x[i], x[i + K/2]) by positions * max_timescale**(-2i/K)
  (or by positions * `inv_freq`, from rotary_frequencies).

  Applied to queries and keys, the dot product of a query at m and a key at n
  then depends on m - n only. Computed in float32, returned in x's dtype.

  Written as x * [cos, cos] + roll(x, K/2) * [-sin, sin], one elementwise pass over
  x: the same numbers as rotating the two halves apart and concatenating them, and
  XLA:CPU runs it faster (the base train step with rotary positions took 1.077x the
  sinusoidal one's time that way, 1.024x this way; BUILD_NOTES).
  """
  k = x_BLHK.shape[-1]
  if k % 2:
    raise ValueError(f"rotary positions need an even head width, got {k}")
  if inv_freq is None:
    inv_freq = rotary_frequencies(k, max_timescale)
  angles_BL1F = positions_BL[..., None, None].astype(jnp.float32) * inv_freq  # F = K / 2.
  sin_BL1F, cos_BL1F = jnp.sin(angles_BL1F), jnp.cos(angles_BL1F)
  cos_BL1K = jnp.concatenate([cos_BL1F, cos_BL1F], axis=-1)
  sin_BL1K = jnp.concatenate([-sin_BL1F, sin_BL1F], axis=-1)
  x_BLHK32 = x_BLHK.astype(jnp.float32)
  out = x_BLHK32 * cos_BL1K + jnp.roll(x_BLHK32, k // 2, axis=-1) * sin_BL1K
  return out.astype(x_BLHK.dtype)


# --------------------------------------------------------------------------- layers


class Embed(nn.Module):
  """Token embedding; `attend` reuses it as the output projection."""
  vocab_size: int
  features: int
  dtype: Dtype = jnp.float32

  def setup(self):
    self.embedding = param_with_names(
        self, "embedding", nn.initializers.normal(stddev=1.0),
        (self.vocab_size, self.features), ("vocab", "embed"))

  def __call__(self, ids_BL: Array) -> Array:
    # Look up in a table whose width is gathered (as FSDP gathers every weight):
    # the rows then come out split by batch, not by width.
    table = constrain(self.embedding, ("vocab", None))
    return jnp.take(table, ids_BL, axis=0).astype(self.dtype)

  def attend(self, x_BLD: Array) -> Array:
    return tied_logits(x_BLD, self.embedding.astype(self.dtype))


@jax.custom_vjp
def tied_logits(x_BLD: Array, table_VD: Array) -> Array:
  """x @ table.T: the output projection through the embedding table.

  Its backward pass is written out so that the table's gradient is computed as
  (x.T @ dlogits).T: the product then reads the [B*L, V] logits gradient in its
  own layout and transposes the small [D, V] result, where autodiff's
  dlogits.T @ x makes XLA:CPU copy the whole logits gradient transposed (with the
  loss's backward fused into that copy), a third of a base-config step's
  non-matmul time. That product is taken in 2-D, [D, B*L] @ [B*L, V] (see `project`).
  """
  return jnp.einsum("BLD,VD->BLV", x_BLD, table_VD)


def _tied_logits_fwd(x_BLD, table_VD):
  return tied_logits(x_BLD, table_VD), (x_BLD, table_VD)


def _tied_logits_bwd(residuals, d_logits_BLV):
  x_BLD, table_VD = residuals
  d_x_BLD = jnp.einsum("BLV,VD->BLD", d_logits_BLV, table_VD)
  x_ND = x_BLD.reshape(-1, x_BLD.shape[-1])
  d_table_VD = jnp.dot(x_ND.T, d_logits_BLV.reshape(-1, d_logits_BLV.shape[-1])).T
  return d_x_BLD.astype(x_BLD.dtype), d_table_VD.astype(table_VD.dtype)


tied_logits.defvjp(_tied_logits_fwd, _tied_logits_bwd)


class LayerNorm(nn.Module):
  """Layer norm with a logically named scale and bias, computed in float32."""
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    scale = param_with_names(self, "scale", nn.initializers.ones, (d,), ("embed",))
    bias = param_with_names(self, "bias", nn.initializers.zeros, (d,), ("embed",))
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    # Both moments straight from x (as flax.linen.LayerNorm): two reductions XLA fuses
    # into one pass, and a backward pass without a chain through (x - mean).
    var = jnp.maximum(jnp.square(x32).mean(-1, keepdims=True) - jnp.square(mean), 0.0)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square norm (Llama's): x / sqrt(mean(x^2) + eps) * scale, no mean, no bias;
  computed in float32. `names`: the scale's logical name (QK-norm's is over "kv").
  (Gemma stores scale - 1 and multiplies by 1 + its weight: import adds the 1.)"""
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  names: tuple = ("embed",)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = param_with_names(self, "scale", nn.initializers.ones, (x.shape[-1],), self.names)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + self.epsilon) * scale
    return y.astype(self.dtype)


NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}


def norm(kind: str, epsilon: float, dtype: Dtype, name: str) -> nn.Module:
  """The norm layer `kind` (a key of NORMS)."""
  return NORMS[kind](epsilon, dtype=dtype, name=name)


class Dense(nn.Module):
  """x @ kernel + bias over the last axis; `names` name the kernel's (in, out) axes."""
  features: int
  names: tuple[str, str]
  dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.xavier_uniform()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = param_with_names(self, "kernel", self.kernel_init, (x.shape[-1], self.features),
                              self.names)
    bias = param_with_names(self, "bias", nn.initializers.zeros, (self.features,),
                            self.names[1:])
    return add_bias(project(x, kernel.astype(self.dtype)), bias)


class Mlp(nn.Module):
  """Position-wise feed-forward: Dense(F) -> activation -> dropout -> Dense(D).

  `gated` (SwiGLU / GeGLU, as Llama and Gemma): activation(x wi_0) * (x wi_1) in place of
  activation(x wi); `use_bias` False drops bi and bo (Llama has none)."""
  mlp_dim: int
  dropout_rate: float = 0.0
  activation: str = "relu"
  dtype: Dtype = jnp.float32
  deterministic: bool = True
  gated: bool = False
  use_bias: bool = True

  def _dense(self, x: Array, name: str, shape, names) -> Array:
    w = param_with_names(self, name, nn.initializers.xavier_uniform(), shape, names)
    y = project(x, w.astype(self.dtype))
    if self.use_bias:
      b_name = {"wi": "bi", "wo": "bo"}.get(name, name.replace("w", "b", 1))
      y = add_bias(y, param_with_names(self, b_name, nn.initializers.zeros, shape[-1:],
                                       names[-1:]))
    return y

  @nn.compact
  def __call__(self, x_BLD: Array) -> Array:
    d, f = x_BLD.shape[-1], self.mlp_dim
    if self.gated:
      gate_BLF = self._dense(x_BLD, "wi_0", (d, f), ("embed", "mlp"))
      h_BLF = ACTIVATIONS[self.activation](gate_BLF) * self._dense(
          x_BLD, "wi_1", (d, f), ("embed", "mlp"))
    else:
      h_BLF = ACTIVATIONS[self.activation](self._dense(x_BLD, "wi", (d, f), ("embed", "mlp")))
    h_BLF = constrain(h_BLF, ACT_BLF)
    h_BLF = Dropout(self.dropout_rate)(h_BLF, deterministic=self.deterministic)
    y_BLD = self._dense(h_BLF, "wo", (f, d), ("mlp", "embed"))
    return constrain(y_BLD, ACT_BLD)
