"""Continues text with a decoder-only language model: a trained run, or pretrained weights.

  python -m transformer_jax.generate --workdir=runs/lm --prompt="def main(" [--prompt=...]
      [--input=prompts.txt] [--step=N] [--method=greedy|sample] [--temperature=0.8]
      [--top_k=40] [--top_p=0.95] [--seed=0] [--batch_size=N] [--max_length=N]
  python -m transformer_jax.generate --hf=DIR | --gguf=FILE [--chat [--system=...]]
      --prompt="..." [--max_new_tokens=128] [--stop=STRING ...] [sampling flags as above]

With --workdir: loads the run's config, tokenizer and latest (or --step) checkpoint
and prints each prompt with its continuation. With --hf (a llama, qwen2, gemma3_text
or gpt2 Hugging Face folder) or --gguf (a llama.cpp file of those architectures) it
prints each continuation alone; --chat puts each prompt through the model's chat
template as a user turn. With --workdir, a run fine-tuned from such a model takes --chat
and --stop too (its tokenizer's folder has the template), and then prints the replies
alone. One text per line (newlines inside escaped as "\\n",
carriage returns as "\\r"). Prompts come from --prompt (repeatable) or, one per line,
from --input. Sampling options default to the run's config.decoding (pretrained:
greedy); --seed makes samples reproducible. Exit code 2 on a bad workdir, folder,
file, step or option.
"""

from __future__ import annotations

from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt; repeat for several.")
_INPUT = flags.DEFINE_string("input", None, "A file of prompts, one per line.")
_OUTPUT = flags.DEFINE_string("output", None, "Where the texts go (default: stdout).")
_HF = flags.DEFINE_string("hf", None, "A Hugging Face decoder folder (in place of --workdir).")
_GGUF = flags.DEFINE_string("gguf", None, "A GGUF file (llama, gemma3; in place of --workdir).")
_CHAT = flags.DEFINE_boolean("chat", False, "Each prompt is a user turn of the model's chat "
                             "template; only the reply is printed.")
_SYSTEM = flags.DEFINE_string("system", None, "With --chat: a system turn first.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 128, "Tokens to generate (--hf / --gguf).")
_STOP = flags.DEFINE_multi_string("stop", [], "A string that ends the text; only the "
                                  "continuation is printed.")
tool_flags.define_common("generate", workdir_required=False)


def _pretrained(prompts: list[str]) -> list[str]:
  from transformer_jax.tools import pretrained_lm  # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  if _MAX_NEW.value < 1:
    raise tool_flags.BadInput(f"--max_new_tokens={_MAX_NEW.value} must be >= 1")
  lm = (pretrained_lm.load_gguf(_GGUF.value) if _GGUF.value
        else pretrained_lm.load_folder(_HF.value))
  return pretrained_lm.generate(
      lm, prompts, options=tool_flags.pretrained_decode_options(), max_new_tokens=_MAX_NEW.value,
      batch_size=f.batch_size or 1, seed=f.seed or 0, stop=_STOP.value, chat=_CHAT.value,
      system=_SYSTEM.value)


def _replies(run, prompts: list[str]) -> list[str]:
  """A run fine-tuned from a pretrained decoder (its tokenizer a Hugging Face folder): the
  continuations alone, through the folder's chat template with --chat, each cut at the
  folder's end-of-turn ids and at --stop."""
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import pretrained_lm  # pylint: disable=import-outside-toplevel
  folder = getattr(run.tokenizer, "folder", None)
  if folder is None:
    raise tool_flags.BadInput("--chat and --stop need a run whose tokenizer is a Hugging Face "
                              "folder's (config.init_from.hf / .gguf)")
  chat = pretrained_lm.chat_template_of(folder, run.tokenizer)
  if _CHAT.value:
    if not chat.template:
      raise tool_flags.BadInput(f"{folder}: no chat template; leave out --chat")
    prompts = [pretrained_lm.render_chat(chat.template, chat.special_tokens, p, _SYSTEM.value,
                                         folder) for p in prompts]
  out = []
  for prompt_ids, ids in inference.generate_ids(run, prompts):
    new = ids[len(prompt_ids):].tolist()
    ends = [k for k, t in enumerate(new) if t in chat.stop_ids or t == 0]
    text = run.tokenizer.decode(new[:ends[0]] if ends else new)
    cuts = [text.find(s) for s in _STOP.value if s and s in text]
    out.append(text[:min(cuts)] if cuts else text)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with tool_flags.tool_main():
    sources = [n for n, v in (("--workdir", flags.FLAGS.workdir), ("--hf", _HF.value),
                              ("--gguf", _GGUF.value)) if v]
    if len(sources) != 1:
      raise tool_flags.BadInput("give one of --workdir, --hf or --gguf"
                                + (f" (got {', '.join(sources)})" if sources else ""))
    if _SYSTEM.value and not _CHAT.value:
      raise tool_flags.BadInput("--system needs --chat")
    prompts = list(_PROMPT.value)
    if _INPUT.value:
      prompts += tool_flags.read_lines(_INPUT.value)
    if not prompts:
      raise tool_flags.BadInput("give --prompt or --input")
    tool_flags.check_output_file(_OUTPUT.value)
    if sources[0] != "--workdir":
      texts = _pretrained(prompts)
    else:
      from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
      run = inference.load_run(tool="generate", **tool_flags.load_args())
      texts = (_replies(run, prompts) if _CHAT.value or _STOP.value
               else inference.generate_texts(run, prompts))
    tool_flags.write_lines(_OUTPUT.value, [t.replace("\r", "\\r").replace("\n", "\\n")
                                           for t in texts])


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
