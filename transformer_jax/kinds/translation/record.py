"""encoder_decoder: translation with the Transformer of "Attention Is All You Need".

Packed source and target token sequences; label-smoothed next-token loss on the
target; beam search, greedy or sampled decoding; BLEU and chrF on decoded
validation (eval/bleu) and test (test/bleu) sentences.
"""

from __future__ import annotations

from transformer_jax.decode import search as decoding
from transformer_jax.errors import fail
from transformer_jax.kinds.base import (ModelKind, lazy_task, packed_shapes, register,
                                        sequence_inputs)
from transformer_jax.metrics import objectives
from transformer_jax.models.transformer import EncoderDecoder
from transformer_jax.observe import flops


def _eval_metrics(config) -> tuple[str, ...]:
  bleu = ("bleu", "chrf", "placeholders") if config.num_eval_bleu_examples > 0 else ()
  return ("loss", "perplexity", "accuracy") + bleu


def check_corpus(data_config, source: str) -> None:
  """The corpus fields for pairs read from `source` (gettext | files); the decoder_lm's
  translation_pairs checks its pairs with it too."""
  d = data_config
  if source == "gettext" and (d.validation_fraction <= 0 or d.test_fraction <= 0):
    fail("data.validation_fraction", d.validation_fraction,
         "gettext needs validation_fraction and test_fraction > 0")


def _check(config) -> None:
  check_corpus(config.data, config.data.source)


KIND = register(ModelKind(
    name="encoder_decoder",
    description="translation: encoder-decoder Transformer, BLEU/chrF",
    model=EncoderDecoder,
    batch_shapes=packed_shapes(("inputs", "targets")),
    model_inputs=sequence_inputs,
    objective=objectives.next_token_objective,
    eval_sums=objectives.next_token_eval,
    eval_metrics=_eval_metrics,
    task=lazy_task("transformer_jax.kinds.translation.task", "TranslationTask"),
    data_sources=("gettext", "files"),
    file_format='TSV source<TAB>target or JSONL {"source": ..., "target": ...}',
    forward_flops=flops.encoder_decoder_forward,
    unit="tokens",  # source and target tokens, as the Flax WMT example counts them.
    count_units=objectives.count_tokens("targets", "inputs"),
    decode=decoding.translate,
    decode_tool="translate",
    decoding_fields=("keep_placeholders",),
    check_config=_check,
))
