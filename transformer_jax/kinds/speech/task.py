"""Speech to text (speech_to_text): utterances in, transcripts out, WER and CER.

Validation: eval/loss on the validation utterances and, with
config.num_eval_bleu_examples > 0, eval/wer and eval/cer on that many decoded ones.
Test: test/wer and test/cer (synthetic speech: the held-out voice), test/real_wer and
test/real_cer on the real recordings where they are asked for, each next to the WER of
the best constant answer (`constant_wer`).
"""

from __future__ import annotations

import collections
import os
import time

import jax

from transformer_jax.decode import lexicon, prompted
from transformer_jax.kinds import task as base
from transformer_jax.kinds.speech import pipeline as speech_pipeline, splits as speech_splits
from transformer_jax.kinds.speech.corpus import normalize
from transformer_jax.metrics import scores as evaluation

CACHE_DIR = "speech_cache"  # synthesised and resampled audio, in the workdir.


def constant_wer(train_texts, test_texts) -> tuple[float, str]:
  """(WER, answer) of the best constant answer: nothing, one of the five most frequent
  training transcripts or one of the five most frequent training words, the same for
  every test utterance. A model must beat it to have listened."""
  texts = [normalize(t) for t in train_texts]
  words = collections.Counter(w for t in texts for w in t.split())
  candidates = ([""] + [t for t, _ in collections.Counter(texts).most_common(5)]
                + [w for w, _ in words.most_common(5)])
  return min((evaluation.transcription_scores([c] * len(test_texts), list(test_texts))["wer"],
              c) for c in candidates)


class SpeechTask(base.TaskBase):
  """Speech splits -> featurized batches; decoded transcripts scored by jiwer."""

  def __init__(self, config, workdir: str, is_writer: bool):
    self.config = c = config
    t0 = time.monotonic()
    self.data = speech_splits.load_speech(c.data, os.path.join(workdir, CACHE_DIR))
    d = self.data
    self.tokenizer = base.load_tokenizer(config, workdir,
                                         lambda: (normalize(t) for t in d.train.texts),
                                         is_writer, use_placeholders=False)
    self.vocab_size = self.tokenizer.vocab_size
    # The training transcripts' words: the transcribe tool's copy in WORKDIR/lexicon.txt.
    self.words = sorted({w for t in d.train.texts for w in normalize(t).split()})
    if is_writer:
      lexicon.write_words(workdir, self.words)
    self._length = (c.data.max_frames, c.max_target_length)
    self.form = speech_pipeline.Form.from_config(c.data)
    self.train_use = speech_pipeline.fits(d.train, self.tokenizer, *self._length, self.form)
    self.validation_use = speech_pipeline.fits(d.validation, self.tokenizer, *self._length,
                                               self.form)
    if is_writer:
      real = (f", {len(d.real_test)} real test recordings ({d.real_test.seconds() / 60:.1f} min)"
              if d.real_test is not None else "")
      if d.real_validation is not None:
        real += f", {len(d.real_validation)} real validation recordings"
      print(f"speech: {len(d.train)} train utterances ({d.train.seconds() / 3600:.2f} h, "
            f"{d.real_train} of them real), {len(d.validation)} validation, {len(d.test)} test"
            f"{real}; ready in {time.monotonic() - t0:.0f}s", flush=True)
      too_long = (f"longer than data.max_frames={c.data.max_frames} frames or "
                  f"max_target_length={c.max_target_length} tokens")
      base.say_dropped("train", len(d.train) - len(self.train_use), len(d.train),
                       "utterances are", f"{too_long}: left out of training")
      base.say_dropped("validation", len(d.validation) - len(self.validation_use),
                       len(d.validation), "utterances are", f"{too_long}: left out of eval/loss")

  def train_stream(self, *, global_batch_size: int, rows, seed: int):
    return speech_pipeline.SpeechTrainStream(
        self.data.train, self.train_use, self.tokenizer, global_batch_size=global_batch_size,
        rows=rows, max_frames=self._length[0], max_length=self._length[1], seed=seed,
        aug=speech_pipeline.Augment.from_config(self.config.data.augment),
        num_packing_bins=self.config.data.num_packing_bins,
        form=self.form)

  def eval_batches(self, *, batch_size: int, process_index: int, process_count: int):
    return speech_pipeline.eval_batches(
        self.data.validation, self.validation_use, self.tokenizer, batch_size=batch_size,
        max_frames=self._length[0], max_length=self._length[1], process_index=process_index,
        process_count=process_count, form=self.form)

  def decode_kwargs(self) -> dict:
    """The word list's trie where beam search charges decoding.oov_penalty (lexicon.py);
    Whisper's forced decoder prompt (prompted.py)."""
    return {**lexicon.decode_kwargs(self.config, self.tokenizer, lambda: self.words),
            **prompted.decode_kwargs(self.config)}

  def transcribe(self, run: base.Evaluator, params, utts: speech_splits.Utterances):
    """(WER/CER scores, [(reference, transcript)]) of `utts` decoded with config.decoding."""
    rng = jax.random.key(self.config.seed)
    hyps = speech_pipeline.decode_in_batches(
        utts, batch_size=run.global_batch_size, tokenizer=self.tokenizer,
        decode_batch=lambda inputs, n: run.decode(params, inputs, jax.random.fold_in(rng, n)),
        segment_frames=self.config.decoding.segment_frames,
        form=self.form)
    return evaluation.transcription_scores(hyps, utts.texts), list(zip(utts.texts, hyps))

  @staticmethod
  def _first(utts: speech_splits.Utterances, n: int) -> speech_splits.Utterances:
    return utts if n <= 0 else utts.take(range(min(n, len(utts))))

  def _decodable(self, split: str, utts: speech_splits.Utterances,
                 say: bool) -> speech_splits.Utterances:
    """The utterances of at most data.max_decode_frames frames whose transcript fits
    max_predict_length tokens (others are left out, and counted)."""
    c = self.config
    keep = speech_pipeline.fits(utts, self.tokenizer, c.data.max_decode_frames,
                                c.max_predict_length, self.form)
    if say:
      base.say_dropped(split, len(utts) - len(keep), len(utts), "utterances are",
                       f"longer than data.max_decode_frames={c.data.max_decode_frames} frames "
                       f"or max_predict_length={c.max_predict_length} tokens: left out")
    return utts.take(keep)

  def extra_eval(self, run: base.Evaluator, params) -> dict[str, float]:
    n = self.config.num_eval_bleu_examples
    if n <= 0:
      return {}
    scores = {}
    splits = [("", self.data.validation), ("real_", self.data.real_validation)]
    for prefix, utts in splits:
      if utts is not None and len(utts):
        utts = self._decodable("validation", self._first(utts, n), False)
        scores.update({prefix + k: v for k, v in self.transcribe(run, params, utts)[0].items()})
    return scores

  def final_test(self, run: base.Evaluator, params, step: int) -> dict[str, float]:
    del step
    c, d = self.config, self.data
    record, examples = {}, []
    splits = [("", "synthetic speech, held-out voice", d.test)]
    if d.real_test is not None:
      splits.append(("real_", "real recordings", d.real_test))
    for prefix, what, utts in splits:
      t0 = time.monotonic()
      utts = self._decodable(f"test ({what})", self._first(utts, c.num_predict_examples),
                             run.primary)
      scores, pairs = self.transcribe(run, params, utts)
      baseline, answer = constant_wer(d.train.texts, utts.texts)
      record.update({f"test/{prefix}wer": scores["wer"], f"test/{prefix}cer": scores["cer"],
                     f"test/{prefix}constant_wer": baseline})
      if run.primary:
        print(f"Test set, {what} ({len(utts)} utterances, {base.decoder_name(c.decoding)}, "
              f"{time.monotonic() - t0:.0f}s): WER {scores['wer']:.2f}%, CER "
              f"{scores['cer']:.2f}% (best constant answer, {answer!r}: WER {baseline:.1f}%)",
              flush=True)
        for ref, hyp in pairs[:c.num_example_translations]:
          print(f"  reference:  {ref}\n  transcript: {hyp}", flush=True)
      examples += [{"split": what, "reference": ref, "transcript": hyp}
                   for ref, hyp in pairs[:c.num_example_translations]]
    record["examples"] = examples
    return record
