"""decoder_lm: a GPT-style decoder-only language model.

Documents cut into chunks of max_target_length tokens and packed; next-token
loss; greedy or sampled continuation of prompts; perplexity next to a unigram
model of the training split. Or, with data.source="translation_pairs", the
translation kind's sentence pairs as prompted documents (prompts.py, pairs.py):
the loss counts the translations alone, and the run is scored as the translation
kind is (BLEU, chrF), on translations decoded from its prompt.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from transformer_jax.decode import lm as decoding
from transformer_jax.kinds.base import (ModelKind, lazy_task, packed_shapes, register,
                                        sequence_inputs)
from transformer_jax.kinds.language_model import prompts
from transformer_jax.metrics import objectives
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.observe import flops

LM_METRICS = ("loss", "perplexity", "accuracy")
TRANSLATION_METRICS = ("bleu", "chrf", "placeholders")  # the translation kind's.

_packed = packed_shapes(("targets",))


def _batch_shapes(config, global_batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The packed targets; prompted pairs add their loss weights."""
  shapes = _packed(config, global_batch_size)
  if prompts.is_prompted(config):
    shapes[prompts.WEIGHTS] = jax.ShapeDtypeStruct(shapes["targets"].shape, jnp.float32)
  return shapes


def _eval_metrics(config) -> tuple[str, ...]:
  """Prompted pairs with num_eval_bleu_examples > 0 add the translation kind's scores."""
  if prompts.is_prompted(config) and config.num_eval_bleu_examples > 0:
    return LM_METRICS + TRANSLATION_METRICS
  return LM_METRICS


KIND = register(ModelKind(
    name="decoder_lm",
    description="language model: decoder-only Transformer, perplexity and samples",
    model=DecoderLM,
    batch_shapes=_batch_shapes,
    model_inputs=sequence_inputs,
    objective=objectives.next_token_objective,
    eval_sums=objectives.next_token_eval,
    eval_metrics=_eval_metrics,
    task=lazy_task("transformer_jax.kinds.language_model.task", "language_model_task"),
    data_sources=("python_stdlib", "files", prompts.SOURCE),
    file_format="plain UTF-8 text, documents separated by blank lines",
    forward_flops=flops.decoder_only_forward,
    hf_architectures=("gpt2", "llama", "qwen2", "gemma3_text"),
    unit="tokens",
    count_units=objectives.count_tokens("targets"),
    decode=decoding.generate,
    decode_tool="generate",
    prompt_template=prompts.template_of,
    decode_methods=("greedy", "sample"),  # no beam search for LMs (decoding.generate).
    check_config=prompts.check,
))
