"""Continues text with a trained decoder-only language model run.

  python -m transformer_jax.generate --workdir=runs/lm --prompt="def main(" [--prompt=...]
      [--input=prompts.txt] [--step=N] [--method=greedy|sample] [--temperature=0.8]
      [--top_k=40] [--top_p=0.95] [--seed=0] [--batch_size=N] [--max_length=N]

Loads the run's config, tokenizer and latest (or --step) checkpoint and prints
each prompt with its continuation, one per line (newlines inside escaped as
"\\n", carriage returns as "\\r"). Prompts come from --prompt (repeatable) or, one per line, from --input.
Sampling options default to the run's config.decoding; --seed makes samples
reproducible. Exit code 2 on a bad workdir, step or option.
"""

from __future__ import annotations

from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt; repeat for several.")
_INPUT = flags.DEFINE_string("input", None, "A file of prompts, one per line.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the texts go (default: stdout).")
tool_flags.define_common("generate")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with tool_flags.tool_main():
    prompts = list(_PROMPT.value)
    if _INPUT.value:
      prompts += tool_flags.read_lines(_INPUT.value)
    if not prompts:
      raise tool_flags.BadInput("give --prompt or --input")
    tool_flags.check_output_file(_OUTPUT.value)
    from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
    run = inference.load_run(tool="generate", **tool_flags.load_args())
    texts = inference.generate_texts(run, prompts)
    tool_flags.write_lines(_OUTPUT.value, [t.replace("\r", "\\r").replace("\n", "\\n")
                                           for t in texts])


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
