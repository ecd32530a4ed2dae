"""What each model kind brings to the training loop: its data, tokenizer and evaluation.

`make_task(config, workdir, is_writer)` returns the task of `config.model.kind`.
Every task offers the same small interface to `trainer.py`:

  vocab_size, num_classes       sizes the model takes from the data
  train_stream(...)             a checkpointable `pipeline.RowStreams` of this process's rows
  eval_batches(...)             the validation split as fixed local batches
  extra_eval(run, params)       metrics beyond loss/accuracy at each evaluation (eval/bleu)
  final_test(run, params, step) the test-split figures logged at the end (test/...)
"""

from __future__ import annotations

from transformer_jax.tasks.base import Task


def make_task(config, workdir: str, is_writer: bool) -> Task:
  kind = config.model.kind
  # Imported here so that a kind's data code loads only when it is used.
  if kind == "encoder_decoder":
    from transformer_jax.tasks.translation import TranslationTask  # pylint: disable=import-outside-toplevel
    return TranslationTask(config, workdir, is_writer)
  if kind == "decoder_lm":
    from transformer_jax.tasks.language_model import LanguageModelTask  # pylint: disable=import-outside-toplevel
    return LanguageModelTask(config, workdir, is_writer)
  if kind == "encoder_classifier":
    from transformer_jax.tasks.classification import TextClassificationTask  # pylint: disable=import-outside-toplevel
    return TextClassificationTask(config, workdir, is_writer)
  if kind == "vit":
    from transformer_jax.tasks.classification import ImageClassificationTask  # pylint: disable=import-outside-toplevel
    return ImageClassificationTask(config, workdir, is_writer)
  raise ValueError(f"config.model.kind={kind!r}: no task")
