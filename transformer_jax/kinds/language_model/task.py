"""Language modelling (decoder_lm): documents -> packed token sequences; perplexity and samples.
Or translation pairs as prompted documents (pairs.py): BLEU and chrF of decoded translations."""

from __future__ import annotations

import logging
import time

import jax

from transformer_jax.kinds import task as base
from transformer_jax.kinds.language_model import pairs as lm_pairs, prompts, text as lm_text
from transformer_jax.metrics import summaries

NUM_SAMPLES = 3
PROMPT_TOKENS = 12


class LanguageModelTask(base.TaskBase):
  """Next-token prediction; the test figures put the LM beside a unigram model of the same text."""

  def __init__(self, config, workdir: str, is_writer: bool):
    self.config = config
    self.docs = lm_text.load_documents(config.data)
    logging.info("documents: %d train, %d validation, %d test", len(self.docs.train),
                 len(self.docs.validation), len(self.docs.test))
    self.tokenizer = base.load_tokenizer(
        config, workdir, lambda: (line for doc in self.docs.train for line in doc.splitlines()
                                  if line.strip()),
        is_writer, use_placeholders=False, keep_whitespace=True)
    self.vocab_size = self.tokenizer.vocab_size

  def train_stream(self, *, global_batch_size: int, rows, seed: int):
    c = self.config
    return lm_text.LMTrainStream(
        self.docs.train, self.tokenizer, global_batch_size=global_batch_size, rows=rows,
        max_length=c.max_target_length, seed=seed, num_packing_bins=c.data.num_packing_bins)

  def _batches(self, documents, batch_size, process_index, process_count):
    c = self.config
    return lm_text.lm_eval_batches(
        documents, self.tokenizer, batch_size=batch_size, max_length=c.max_target_length,
        num_packing_bins=c.data.num_packing_bins, process_index=process_index,
        process_count=process_count)

  def eval_batches(self, *, batch_size: int, process_index: int, process_count: int):
    return self._batches(self.docs.validation, batch_size, process_index, process_count)

  def samples(self, run: base.Evaluator, params) -> list[tuple[str, str]]:
    """(prompt, prompt + continuation) for the first test documents (in the split's
    hash order), with config.decoding."""
    prompts = []
    for doc in self.docs.test:
      ids = self.tokenizer.encode(doc, add_eos=False)[:PROMPT_TOKENS]
      if len(ids) == PROMPT_TOKENS:
        prompts.append(ids)
      if len(prompts) == NUM_SAMPLES:
        break
    if not prompts:
      return []
    batch = base.prompt_batch(prompts, run.global_batch_size, self.config.max_predict_length)
    out = run.decode(params, batch, jax.random.key(self.config.seed))
    return [(self.tokenizer.decode(p), self.tokenizer.decode(out[i]))
            for i, p in enumerate(prompts)]

  def final_test(self, run: base.Evaluator, params, step: int) -> dict[str, float]:
    del step
    n = jax.process_count()
    sums = run.eval_sums(params, self._batches(self.docs.test, run.local_batch_size,
                                               jax.process_index(), n))
    test = summaries.summarize(sums)
    unigram = lm_text.unigram_log_probs(self.docs.train, self.tokenizer)  # fitted once.
    record = {"test/loss": test["nll"], "test/perplexity": test["perplexity"],
              "test/accuracy": test["accuracy"],
              "test/unigram_perplexity": lm_text.unigram_perplexity(
                  (), self.docs.test, self.tokenizer, log_probs=unigram),
              "eval/unigram_perplexity": lm_text.unigram_perplexity(
                  (), self.docs.validation, self.tokenizer, log_probs=unigram)}
    samples = self.samples(run, params)
    if run.primary:
      print(f"Test set ({len(self.docs.test)} documents): perplexity {record['test/perplexity']:.2f}"
            f" (a unigram model of the training split: {record['test/unigram_perplexity']:.1f}),"
            f" next-token accuracy {record['test/accuracy']:.3f}", flush=True)
      for prompt, text in samples:
        print(f"  prompt: {prompt!r}\n  sample: {text!r}", flush=True)
    record["examples"] = [{"prompt": prompt, "sample": text} for prompt, text in samples]
    return record


def language_model_task(config, workdir: str, is_writer: bool) -> base.TaskBase:
  """The decoder_lm's task for config.data.source: documents, or prompted translation pairs."""
  if prompts.is_prompted(config):
    return PromptedTranslationTask(config, workdir, is_writer)
  return LanguageModelTask(config, workdir, is_writer)


class PromptedTranslationTask(base.TranslationScoring):
  """The translation kind's pairs and splits as prompted documents (pairs.py); the loss counts
  the translations; BLEU, chrF and placeholders kept, as the translation kind scores them, on
  translations decoded from the prompt (config.decoding: greedy or sampled)."""

  def __init__(self, config, workdir: str, is_writer: bool):
    self.config = config
    self.corpus = lm_pairs.load_pairs(config.data)
    logging.info("corpus: %d train, %d validation, %d test pairs", len(self.corpus.train),
                 len(self.corpus.validation), len(self.corpus.test))
    template = config.data.prompt_template
    self.tokenizer = base.load_tokenizer(
        config, workdir, lambda: (lm_pairs.document_text(template, pair)
                                  for pair in self.corpus.train),
        is_writer, use_placeholders=True, keep_whitespace=True)
    self.vocab_size = self.tokenizer.vocab_size
    self.encoder = lm_pairs.PromptedPairs(self.tokenizer, template)
    lm_pairs.check_fits(self.corpus.train, self.encoder, config.max_target_length)
    lm_pairs.check_prompt_room(self.encoder, config.max_predict_length)
    if is_writer:
      self._say_long_pairs()

  def decode_kwargs(self) -> dict:
    """The decoder stops at EOS or a token holding a newline."""
    return lm_pairs.decode_kwargs(self.tokenizer)

  def _say_long_pairs(self) -> None:
    """Documents longer than max_target_length are left out of the loss batches, sources
    whose prompts take more than half of max_predict_length are cut before decoding."""
    c = self.config
    n, m = c.max_target_length, c.max_predict_length
    validation = self.corpus.validation
    base.say_dropped("validation", lm_pairs.count_too_long(validation, self.encoder, n),
                     len(validation), "pairs are",
                     f"longer than max_target_length={n} tokens as documents: left out of "
                     "eval/loss")
    cut = (f"longer than half of max_predict_length={m} tokens as prompts: cut to fit "
           "before decoding")
    bleu = validation[:c.num_eval_bleu_examples]
    base.say_dropped("validation (eval/bleu)",
                     lm_pairs.long_prompts([s for s, _ in bleu], self.encoder, m), len(bleu),
                     "sources are", cut)
    test = self._test_pairs()
    base.say_dropped("test", lm_pairs.count_too_long(test, self.encoder, n), len(test),
                     "pairs are", f"longer than max_target_length={n} tokens as documents: "
                     "left out of test/loss")
    base.say_dropped("test (test/bleu)",
                     lm_pairs.long_prompts([s for s, _ in test], self.encoder, m), len(test),
                     "sources are", cut)

  def _test_pairs(self):
    n = self.config.num_predict_examples
    return self.corpus.test[:n] if n > 0 else self.corpus.test

  def train_stream(self, *, global_batch_size: int, rows, seed: int):
    c = self.config
    return lm_pairs.PairTrainStream(
        self.corpus.train, self.encoder, global_batch_size=global_batch_size, rows=rows,
        max_length=c.max_target_length, seed=seed, num_packing_bins=c.data.num_packing_bins)

  def _batches(self, pairs, batch_size, process_index, process_count):
    c = self.config
    return lm_pairs.eval_batches(
        pairs, self.encoder, batch_size=batch_size, max_length=c.max_target_length,
        num_packing_bins=c.data.num_packing_bins, process_index=process_index,
        process_count=process_count)

  def eval_batches(self, *, batch_size: int, process_index: int, process_count: int):
    return self._batches(self.corpus.validation, batch_size, process_index, process_count)

  def hypotheses(self, run: base.Evaluator, sources, decode_batch):
    return lm_pairs.translate(sources, self.encoder, self.tokenizer,
                              batch_size=run.global_batch_size,
                              max_length=self.config.max_predict_length,
                              decode_batch=decode_batch)

  def final_test(self, run: base.Evaluator, params, step: int) -> dict[str, float]:
    """On the test pairs (config.num_predict_examples of them, in hash order; -1: all): the
    loss of their translations given their prompts, then BLEU and chrF of decoded ones."""
    del step
    c = self.config
    pairs = self._test_pairs()
    n = jax.process_count()
    sums = run.eval_sums(params, self._batches(pairs, run.local_batch_size,
                                               jax.process_index(), n))
    test = summaries.summarize(sums)
    record = {"test/loss": test["nll"], "test/perplexity": test["perplexity"],
              "test/accuracy": test["accuracy"]}
    if run.primary:
      print(f"Test set ({len(pairs)} pairs): perplexity {test['perplexity']:.2f} and "
            f"next-token accuracy {test['accuracy']:.3f} of the translations given their "
            "prompts", flush=True)
    t0 = time.monotonic()
    scores, signatures, examples = self.translate(run, params, pairs)
    record.update(base.test_translations(
        run.primary, scores, signatures, examples, decoder=base.decoder_name(c.decoding),
        seconds=time.monotonic() - t0, shown=c.num_example_translations))
    return record
