"""WER and CER of a trained speech run's splits, decoded by each method in turn.

  python benchmarks/speech_decoders.py --workdir=runs/speech --method=greedy --method=ctc \
      --method=beam [--alpha=1.0] [--beam_size=4] [--ctc_weight=0 --ctc_weight=0.3 ...] \
      [--oov_penalty=0 --oov_penalty=4 ...] [--segment_frames=0 --segment_frames=480 ...]
      [--decode_all] [--split=real_val --split=real_train] [--max_utterances=60]

Loads the workdir as the transcribe tool does (`inference.load_run`, the decoding
fields replaced), reads its splits from the workdir's synthesis cache
(`speech_splits.load_speech`; the real-recording test split where the run has one), keeps the
utterances that the run's test decodes (data.max_decode_frames, max_predict_length; every
one with --decode_all), and prints one line per method and split (validation, test, and the
real recordings' test and validation splits where the run has them). Each variant runs
with each --segment_frames (0: recordings decoded whole; N: longer ones cut at pauses into
pieces of at most N frames, kinds/speech/segments.py).
--split real_train decodes the real training prompts (each once, as the run heard them
without augmentation): set beside real_val, it shows how much of the real speaker the model
learnt and how much it only memorised.
Method `ctc`, and beam with --ctc_weight > 0 (joint CTC/attention scores, one line per
weight), need a run trained with a CTC head (model.ctc_weight > 0).
"""

import os
import time

from absl import app, flags

from transformer_jax.kinds.speech import pipeline as speech_pipeline, splits as speech_splits
from transformer_jax.kinds.speech.task import CACHE_DIR
from transformer_jax.metrics import scores as evaluation
from transformer_jax.tools import loaded_run as inference

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
_SEGMENTS = flags.DEFINE_multi_integer(
    "segment_frames", [0], "Longest piece in frames (0: whole), each with each variant.")
_ALL = flags.DEFINE_boolean("decode_all", False,
                            "Decode every utterance, also those over data.max_decode_frames.")
_SPLITS = flags.DEFINE_multi_enum(
    "split", ["validation", "test", "real_val", "real_test"],
    ["validation", "test", "real_val", "real_test", "real_train"],
    "The splits to decode (those the run has).")
_MAX = flags.DEFINE_integer("max_utterances", 0,
                            "Decode at most this many of each split, the first ones (0: all).")


def _splits(d, cache_dir: str) -> dict:
  data = speech_splits.load_speech(d, cache_dir)
  splits = {"validation": data.validation, "test": data.test,
            "real_val": data.real_validation, "real_test": data.real_test}
  if "real_train" in _SPLITS.value and data.real_train:  # only where they trained.
    splits["real_train"] = speech_splits.real_splits(d, cache_dir)["train"]
  return splits


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
  variants = [(f"{name} seg{n}" if len(_SEGMENTS.value) > 1 else name,
               {**decoding, "segment_frames": n})
              for name, decoding in variants for n in _SEGMENTS.value]
  splits = None  # the same for every variant: only the decoding fields change.
  for method, decoding in variants:
    run = inference.load_run(_WORKDIR.value, tool="transcribe", decoding=decoding)
    if splits is None:
      splits = _splits(run.config.data, os.path.join(_WORKDIR.value, CACHE_DIR))
    for name in _SPLITS.value:
      utts = splits.get(name)
      if utts is None:
        continue
      if not _ALL.value:
        utts = utts.take(speech_pipeline.fits(utts, run.tokenizer,
                                              run.config.data.max_decode_frames,
                                              run.config.max_predict_length))
      if _MAX.value:
        utts = utts.take(range(min(_MAX.value, len(utts))))
      t0 = time.monotonic()
      scores = evaluation.transcription_scores(
          inference.transcribe_audio(run, utts.samples), utts.texts)
      print(f"{method:22s} {name:10s} {len(utts):4d} utterances: WER {scores['wer']:6.2f}%  "
            f"CER {scores['cer']:6.2f}%  ({time.monotonic() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
  app.run(main)
