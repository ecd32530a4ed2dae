"""WER and CER of a trained speech run's splits, decoded by each method in turn.

  python benchmarks/speech_decoders.py --workdir=runs/speech --method=greedy --method=ctc \
      --method=beam [--alpha=1.0] [--beam_size=4] [--ctc_weight=0 --ctc_weight=0.3 ...] \
      [--oov_penalty=0 --oov_penalty=4 ...]

Loads the workdir as the transcribe tool does (`inference.load_run`, the decoding
fields replaced), reads its splits from the workdir's synthesis cache
(`speech_splits.load_speech`; the real-recording test split where the run has one), keeps the
utterances that the run's test decodes (data.max_decode_frames, max_predict_length), and
prints one line per method and split.
Method `ctc`, and beam with --ctc_weight > 0 (joint CTC/attention scores, one line per
weight), need a run trained with a CTC head (model.ctc_weight > 0).
"""

import os
import time

from absl import app, flags

from transformer_jax import evaluation, inference
from transformer_jax.data import speech_pipeline, speech_splits
from transformer_jax.tasks.speech import CACHE_DIR

_WORKDIR = flags.DEFINE_string("workdir", None, "A speech_to_text train.py workdir.",
                               required=True)
_METHODS = flags.DEFINE_multi_enum("method", ["greedy"], ["greedy", "beam", "sample", "ctc"],
                                   "Decoding methods, each in turn.")
_BEAM = flags.DEFINE_integer("beam_size", 4, "Beams (method=beam).")
_ALPHA = flags.DEFINE_float("alpha", 1.0, "Length penalty (method=beam).")
_CTC_WEIGHTS = flags.DEFINE_multi_float(
    "ctc_weight", [0.0], "Weights of the CTC prefix scores (method=beam), each in turn.")
_OOV = flags.DEFINE_multi_float(
    "oov_penalty", [0.0], "Costs of a word outside the run's lexicon.txt (method=beam), each "
    "with each --ctc_weight.")


def main(argv):
  del argv
  variants = []
  for method in _METHODS.value:
    if method != "beam":
      variants.append((method, {"method": method}))
    for weight in _CTC_WEIGHTS.value if method == "beam" else ():
      for oov in _OOV.value:
        variants.append((f"beam w{weight:g} oov{oov:g}", {
            "method": method, "beam_size": _BEAM.value, "alpha": _ALPHA.value,
            "ctc_weight": weight, "oov_penalty": oov}))
  for method, decoding in variants:
    run = inference.load_run(_WORKDIR.value, tool="transcribe", decoding=decoding)
    data = speech_splits.load_speech(run.config.data, os.path.join(_WORKDIR.value, CACHE_DIR))
    for name, utts in (("validation", data.validation), ("test", data.test),
                       ("real_test", data.real_test)):
      if utts is None:
        continue
      utts = utts.take(speech_pipeline.fits(utts, run.tokenizer, run.config.data.max_decode_frames,
                                            run.config.max_predict_length))
      t0 = time.monotonic()
      scores = evaluation.transcription_scores(
          inference.transcribe_audio(run, utts.samples), utts.texts)
      print(f"{method:16s} {name:10s} {len(utts):4d} utterances: WER {scores['wer']:6.2f}%  "
            f"CER {scores['cer']:6.2f}%  ({time.monotonic() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
  app.run(main)
