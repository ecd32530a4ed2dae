"""The flags, inputs and outputs that the decoding tools share (translate, generate,
transcribe, embed, export_hf, report, compress), and their error handling."""

from __future__ import annotations

import contextlib
import os
import sys

from absl import flags, logging

from transformer_jax import kinds
from transformer_jax.errors import USER_ERRORS, BadInput
from transformer_jax.tools import cli

_DECODING_FLAGS = ("method", "beam_size", "alpha", "temperature", "top_k", "top_p",
                   "ctc_weight", "oov_penalty", "segment_frames", "keep_placeholders")


def define_common(tool: str, workdir_required: bool = True) -> None:
  """The flags every decoding tool shares; --method offers what the kinds that `tool`
  decodes offer (kinds' decode_methods), and their flags."""
  methods = list(dict.fromkeys(m for name in kinds.names() if kinds.get(name).decode_tool == tool
                               for m in kinds.get(name).decode_methods))
  flags.DEFINE_string("workdir", None, "The train.py workdir of the run.",
                      required=workdir_required)
  flags.DEFINE_integer("step", -1, "Checkpoint step to load (-1: the latest).")
  flags.DEFINE_enum("method", None, methods,
                    "Decoder (default: the run's config.decoding.method"
                    + ("; ctc: the CTC head, for runs trained with one)." if "ctc" in methods
                       else ")."))
  if "beam" in methods:
    flags.DEFINE_integer("beam_size", None, "Beams (method=beam).")
    flags.DEFINE_float("alpha", None, "Length penalty ((5 + len) / 6) ** alpha (method=beam).")
  if tool == "translate":
    flags.DEFINE_boolean("keep_placeholders", None, "Each printf placeholder of a source comes "
                         "out exactly as often in its translation (default: the run's "
                         "config.decoding.keep_placeholders).")
  if "beam" in methods and "ctc" in methods:
    flags.DEFINE_float("ctc_weight", None, "Weight of the CTC head's prefix scores in the beam "
                       "(method=beam; 0: the decoder alone).")
    flags.DEFINE_float("oov_penalty", None, "Cost in the beam of each word outside the run's "
                       "lexicon.txt (method=beam, letter models; 0: no word list).")
  if "ctc" in methods:
    flags.DEFINE_integer("segment_frames", None, "Recordings longer than this many 10 ms "
                         "frames are cut at pauses into pieces that fit and decoded piece by "
                         "piece (default: the run's config.decoding.segment_frames; 0: whole).")
  flags.DEFINE_float("temperature", None, "Sampling temperature (method=sample).")
  flags.DEFINE_integer("top_k", None, "Sample from the k most likely tokens (0: all).")
  flags.DEFINE_float("top_p", None, "Sample from the smallest set with this probability (1: all).")
  flags.DEFINE_integer("seed", None, "Random seed of sampling (default: the run's config.seed).")
  flags.DEFINE_integer("batch_size", 0, "Sequences decoded together (0: the run's global batch).")
  flags.DEFINE_integer("max_length", 0, "Longest output in tokens (0: config.max_predict_length).")


def load_args() -> dict:
  """inference.load_run's keyword arguments from the flags."""
  f = flags.FLAGS
  decoding = {name: f[name].value for name in _DECODING_FLAGS
              if name in f and f[name].value is not None}
  out = {"workdir": f.workdir, "step": f.step, "decoding": decoding,
         "batch_size": f.batch_size, "max_length": f.max_length}
  if f.seed is not None:
    out["seed"] = f.seed
  return out


def pretrained_decode_options():
  """decode/search.py DecodeOptions from the decoding flags given (the method: greedy unless
  --method), for the tools' pretrained paths, which have no run config to default to."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from transformer_jax.decode import search  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  fields = {x.name for x in dataclasses.fields(search.DecodeOptions)}
  given = {name: f[name].value for name in _DECODING_FLAGS
           if name in f and name in fields and f[name].value is not None}
  return search.DecodeOptions(**{"method": "greedy", **given})


def read_lines(path: str | None) -> list[str]:
  """The lines of --input (stdin without it), which must be UTF-8 text."""
  name = "standard input" if path is None else f"--input={path!r}"
  try:
    if path is None:
      data = sys.stdin.buffer.read()
    else:
      with open(path, "rb") as fh:
        data = fh.read()
  except OSError as e:
    raise BadInput(f"{name}: {e.strerror}") from e
  try:
    return data.decode("utf-8").splitlines()
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise BadInput(f"{name}: line {line} is not UTF-8 text (byte {data[e.start]:#04x}); "
                   "convert it, e.g. with iconv -t UTF-8") from e


def check_output_file(path: str | None) -> None:
  """--output must be a file that can be written: checked before any work is done."""
  if path is None:
    return
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise BadInput(f"--output={path!r} is a folder; give a file name")
  if not os.path.isdir(folder):
    raise BadInput(f"--output={path!r}: no folder {folder}")
  if not os.access(path if os.path.exists(path) else folder, os.W_OK):
    raise BadInput(f"--output={path!r}: not writable")


def write_lines(path: str | None, lines) -> None:
  text = "".join(line + "\n" for line in lines)
  if path is None:
    sys.stdout.write(text)
    sys.stdout.flush()
    return
  try:
    with open(path, "w", encoding="utf-8") as fh:
      fh.write(text)
  except OSError as e:
    raise BadInput(f"--output={path!r}: {e.strerror}") from e


@contextlib.contextmanager
def tool_main():
  """Quiet library logs; bad flags, workdirs, checkpoints or inputs: `error: ...` on
  stderr and exit code 2."""
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  except USER_ERRORS as e:
    cli.exit_with_error(str(e))
