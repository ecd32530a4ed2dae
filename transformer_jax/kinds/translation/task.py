"""Translation (encoder_decoder): parallel corpora, BLEU/chrF on decoded text."""

from __future__ import annotations

import logging
import time

from transformer_jax.decode import placeholders
from transformer_jax.kinds import task as base
from transformer_jax.kinds.translation import corpus as sources, pipeline


class TranslationTask(base.TranslationScoring):
  """Sentence pairs -> packed source/target batches; decoded translations scored by sacrebleu."""

  def __init__(self, config, workdir: str, is_writer: bool):
    self.config = config
    self.corpus = sources.load_corpus(config.data)
    logging.info("corpus: %d train, %d validation, %d test pairs", len(self.corpus.train),
                 len(self.corpus.validation), len(self.corpus.test))
    self.tokenizer = base.load_tokenizer(
        config, workdir, lambda: (s for pair in self.corpus.train for s in pair), is_writer)
    self.vocab_size = self.tokenizer.vocab_size
    if is_writer:
      self._say_long_pairs()

  def decode_kwargs(self) -> dict:
    """The placeholder pieces whose counts decoding keeps (decoding.keep_placeholders)."""
    return placeholders.decode_kwargs(self.config, self.tokenizer)

  def _say_long_pairs(self) -> None:
    """Pairs longer than max_target_length tokens are left out of eval/loss, and their
    sources are cut before decoding (BLEU): say how many."""
    c, n = self.config, self.config.max_target_length
    too_long = f"longer than max_target_length={n} tokens"

    def long_sources(pairs):
      return sum(len(self.tokenizer.encode(src)) > n for src, _ in pairs)

    validation = self.corpus.validation
    base.say_dropped("validation", pipeline.count_too_long(validation, self.tokenizer, n),
                     len(validation), "pairs are", f"{too_long}: left out of eval/loss")
    bleu = validation[:c.num_eval_bleu_examples]
    base.say_dropped("validation (eval/bleu)", long_sources(bleu), len(bleu), "sources are",
                     f"{too_long}: cut to that length before decoding")
    test = self._test_pairs()
    base.say_dropped("test (test/bleu)", long_sources(test), len(test), "sources are",
                     f"{too_long}: cut to that length before decoding")

  def _test_pairs(self):
    n = self.config.num_predict_examples
    return self.corpus.test[:n] if n > 0 else self.corpus.test

  def train_stream(self, *, global_batch_size: int, rows, seed: int):
    c = self.config
    return pipeline.TrainStream(
        self.corpus.train, self.tokenizer, global_batch_size=global_batch_size, rows=rows,
        max_length=c.max_target_length, seed=seed, num_packing_bins=c.data.num_packing_bins)

  def eval_batches(self, *, batch_size: int, process_index: int, process_count: int):
    c = self.config
    return pipeline.eval_batches(
        self.corpus.validation, self.tokenizer, batch_size=batch_size,
        max_length=c.max_target_length, num_packing_bins=c.data.num_packing_bins,
        process_index=process_index, process_count=process_count)

  def hypotheses(self, run: base.Evaluator, sources, decode_batch):
    return pipeline.decode_in_batches(sources, self.tokenizer, batch_size=run.global_batch_size,
                                      max_length=self.config.max_target_length,
                                      decode_batch=decode_batch)

  def final_test(self, run: base.Evaluator, params, step: int) -> dict[str, float]:
    del step
    c = self.config
    t0 = time.monotonic()
    scores, signatures, examples = self.translate(run, params, self._test_pairs())
    return base.test_translations(run.primary, scores, signatures, examples,
                                  decoder=base.decoder_name(c.decoding),
                                  seconds=time.monotonic() - t0,
                                  shown=c.num_example_translations)
