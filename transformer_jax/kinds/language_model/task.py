"""Language modelling (decoder_lm): documents -> packed token sequences; perplexity and samples."""

from __future__ import annotations

import logging

import jax

from transformer_jax.kinds import task as base
from transformer_jax.kinds.language_model import text as lm_text
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
