"""Translates text with a trained encoder-decoder run, or a language model trained on
prompted translation pairs (its config.data.prompt_template).

  python -m transformer_jax.translate --workdir=runs/base [--input=src.txt] [--output=out.txt]
      [--step=N] [--method=greedy|beam|sample] [--beam_size=4] [--alpha=0.6]
      [--temperature=1.0] [--top_k=0] [--top_p=1.0] [--batch_size=N] [--max_length=N]

Loads the run's config, tokenizer and latest (or --step) checkpoint, reads one
source sentence per line from --input (default: stdin), and writes one
translation per line to --output (default: stdout), in the input's order; an
empty line gives an empty line. A language model's translation is the continuation
of the line's prompt up to EOS or a newline. Decoding options default to the run's
config.decoding. Exit code 2 on a bad workdir, step or option.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_INPUT = flags.DEFINE_string("input", None, "Source text, one sentence per line (default: stdin).")
_OUTPUT = flags.DEFINE_string("output", None, "Where translations go (default: stdout).")
tool_flags.define_common("translate")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with tool_flags.tool_main():
    tool_flags.check_output_file(_OUTPUT.value)
    from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
    run = inference.load_run(tool="translate", **tool_flags.load_args())
    lines = tool_flags.read_lines(_INPUT.value)
    t0 = time.perf_counter()
    translations = inference.translate_lines(run, lines)
    seconds = time.perf_counter() - t0
    tool_flags.write_lines(_OUTPUT.value, translations)
    print(f"translated {len(lines)} lines with step {run.step} "
          f"({run.config.decoding.method}) in {seconds:.1f}s", file=sys.stderr)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
