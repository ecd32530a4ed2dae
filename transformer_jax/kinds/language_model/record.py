"""decoder_lm: a GPT-style decoder-only language model.

Documents cut into chunks of max_target_length tokens and packed; next-token
loss; greedy or sampled continuation of prompts; perplexity next to a unigram
model of the training split.
"""

from __future__ import annotations

from transformer_jax.decode import search as decoding
from transformer_jax.kinds.base import (ModelKind, lazy_task, packed_shapes, register,
                                        sequence_inputs)
from transformer_jax.metrics import objectives
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.observe import flops

KIND = register(ModelKind(
    name="decoder_lm",
    description="language model: decoder-only Transformer, perplexity and samples",
    model=DecoderLM,
    batch_shapes=packed_shapes(("targets",)),
    model_inputs=sequence_inputs,
    objective=objectives.next_token_objective,
    eval_sums=objectives.next_token_eval,
    eval_metrics=lambda config: ("loss", "perplexity", "accuracy"),
    task=lazy_task("transformer_jax.kinds.language_model.task", "LanguageModelTask"),
    data_sources=("python_stdlib", "files"),
    file_format="plain UTF-8 text, documents separated by blank lines",
    forward_flops=flops.decoder_only_forward,
    hf_architectures=("gpt2", "llama", "qwen2", "gemma3_text"),
    unit="tokens",
    count_units=objectives.count_tokens("targets"),
    decode=decoding.generate,
    decode_tool="generate",
    decode_methods=("greedy", "sample"),  # no beam search for LMs (decoding.generate).
))
