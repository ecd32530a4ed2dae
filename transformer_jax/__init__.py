"""transformer_jax: Transformer models in JAX/Flax, from a laptop CPU to TPU pods."""

__version__ = "0.1.0"
