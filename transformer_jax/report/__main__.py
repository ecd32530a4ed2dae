"""Pictures and a one-page report of one or more runs; attention maps of one run.

  python -m transformer_jax.report --workdir=runs/base [--workdir=runs/other] [--output=DIR]
  python -m transformer_jax.report attention --workdir=runs/base --text="File not found"
      [--step=-1] [--output=DIR]

The first form reads each workdir's metrics.jsonl (and config.json) only, so it
works while a run is going and for runs of every kind: loss, learning rate,
throughput, gradient norm and the task's quality figures as PNGs (runs overlaid),
and report.md beside them (config differences, final figures, wall time, tokens
seen, example outputs). Default output: the workdir's report/ folder (with several
workdirs: report/ in the current folder).

The second loads the run's checkpoint and draws each attention kind's heads for
the text (a translation's decoder reads the model's own translation) into
attention_*.png (default: WORKDIR/report/).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "A train.py workdir (repeat to overlay).")
_OUTPUT = flags.DEFINE_string("output", None, "Where the PNGs and report.md go.")
_TEXT = flags.DEFINE_string("text", None, "attention: the text to look at.")
_STEP = flags.DEFINE_integer("step", -1, "attention: checkpoint step (-1: the latest).")


def _output(workdirs: list[str]) -> str:
  if _OUTPUT.value:
    return _OUTPUT.value
  return os.path.join(workdirs[0], "report") if len(workdirs) == 1 else "report"


def _report(workdirs: list[str]) -> None:
  from transformer_jax.report import markdown, plots, runs  # pylint: disable=import-outside-toplevel
  try:
    loaded = runs.read_all(workdirs)
  except runs.ReportError as e:
    raise tool_flags.BadInput(str(e)) from e
  output = _output(workdirs)
  if os.path.exists(output) and not os.path.isdir(output):
    raise tool_flags.BadInput(f"--output={output!r} is a file, not a folder")
  pictures = plots.write_all(loaded, output)
  command = "python -m transformer_jax.report " + " ".join(sys.argv[1:])
  with open(os.path.join(output, "report.md"), "w", encoding="utf-8") as f:
    f.write(markdown.report_markdown(loaded, pictures, command))
  print(f"wrote {len(pictures)} pictures and report.md to {output}", file=sys.stderr)


def _attention(workdirs: list[str]) -> None:
  if len(workdirs) != 1:
    raise tool_flags.BadInput("attention: give one --workdir")
  if _TEXT.value is None:
    raise tool_flags.BadInput("attention: --text is required")
  from transformer_jax.report import attention  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
  run = inference.load_run(workdirs[0], tool=None, step=_STEP.value, batch_size=1,
                           decoding={"method": "greedy"}, as_floats=True)
  maps, tokens = attention.attention_maps(run, _TEXT.value)
  paths = attention.write_maps(maps, _output(workdirs))
  if "translation" in tokens:
    print(f"translation: {tokens['translation']}")
  for path in paths:
    print(f"wrote {path}")


def main(argv):
  if len(argv) > 2 or (len(argv) == 2 and argv[1] != "attention"):
    raise app.UsageError(f"the one command is 'attention' (or none, for the report); got "
                         f"{argv[1:]}")
  with tool_flags.tool_main():
    workdirs = _WORKDIR.value or []
    if not workdirs:
      raise tool_flags.BadInput("--workdir is required")
    if len(argv) == 2:
      _attention(workdirs)
    else:
      _report(workdirs)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
