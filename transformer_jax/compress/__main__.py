"""Compresses a trained run: int8/int4 weights, magnitude pruning, and what it cost.

  python -m transformer_jax.compress quantize --workdir=W --output=W2 [--bits=8]
      [--activation_bits=0]
  python -m transformer_jax.compress prune --workdir=W --output=W2 --sparsity=0.5
      [--finetune_steps=N] [--scope=layer|global] [--structure=none|groups] [--bits=0]
      [--learning_rate=LR]

W2 is a workdir that translate, generate and train.py (for fine-tuning) load as
they load any run; its checkpoint stores integers and scales (and pruned weights
as non-zeros plus a bitmask), not float copies. Unless --report=False, both runs
are then measured (parameter bytes on disk and in memory, decode speed, the
task's test figures) and the comparison printed and kept in W2/compression.md
and W2/compression.json. Bad options or workdirs: one `error:` line, exit code 2,
before any work.
"""

from __future__ import annotations

import sys

from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_COMMANDS = ("quantize", "prune")
_WORKDIR = flags.DEFINE_string("workdir", None, "The train.py workdir to compress.")
_OUTPUT = flags.DEFINE_string("output", None, "The new workdir to write.")
_STEP = flags.DEFINE_integer("step", -1, "Checkpoint step of --workdir (-1: the latest).")
_BITS = flags.DEFINE_integer("bits", None, "Weight bits: 8 or 4 (quantize: default 8; "
                             "prune: 0, i.e. float, unless set).")
_ACT_BITS = flags.DEFINE_integer("activation_bits", 0, "Matmul input bits: 0 (float) or 8.")
_SPARSITY = flags.DEFINE_float("sparsity", None, "Fraction of kernel weights set to zero.")
_FINETUNE = flags.DEFINE_integer("finetune_steps", 0, "Steps of fine-tuning after pruning.")
_SCOPE = flags.DEFINE_string("scope", "layer", "layer: the same fraction of every kernel; "
                             "global: one magnitude threshold over all kernels.")
_STRUCTURE = flags.DEFINE_string("structure", "none", "none: single weights; groups: whole "
                                 "attention heads and MLP units.")
_LR = flags.DEFINE_float("learning_rate", 0.0, "Fine-tune peak learning rate (0: a quarter "
                         "of the run's).")
_REPORT = flags.DEFINE_bool("report", True, "Measure both runs and write the report.")


def _check_flags(command: str) -> None:
  """Everything the flags alone can get wrong, before anything is loaded."""
  bad = tool_flags.BadInput
  if not _WORKDIR.value:
    raise bad("--workdir is required")
  if not _OUTPUT.value:
    raise bad("--output is required (a new folder)")
  bits = _BITS.value
  if command == "quantize" and bits not in (None, 4, 8):
    raise bad(f"--bits={bits}: quantize supports 8 or 4")
  if command == "prune":
    if bits not in (None, 0, 4, 8):
      raise bad(f"--bits={bits}: prune supports 0 (float), 8 or 4")
    if _SPARSITY.value is None:
      raise bad("--sparsity is required for prune (a fraction in (0, 1))")
    if not 0 < _SPARSITY.value < 1:
      raise bad(f"--sparsity={_SPARSITY.value}: must be a fraction in (0, 1)")
    if _FINETUNE.value < 0:
      raise bad(f"--finetune_steps={_FINETUNE.value}: must be >= 0")
    if _SCOPE.value not in ("layer", "global"):
      raise bad(f"--scope={_SCOPE.value!r}: must be 'layer' or 'global'")
    if _STRUCTURE.value not in ("none", "groups"):
      raise bad(f"--structure={_STRUCTURE.value!r}: must be 'none' or 'groups'")
  if _ACT_BITS.value not in (0, 8):
    raise bad(f"--activation_bits={_ACT_BITS.value}: must be 0 or 8")


def main(argv):
  if len(argv) != 2 or argv[1] not in _COMMANDS:
    raise app.UsageError(f"give one command: {' | '.join(_COMMANDS)} (got {argv[1:]})")
  command = argv[1]
  with tool_flags.tool_main():
    _check_flags(command)
    from transformer_jax.compress import ops, report  # pylint: disable=import-outside-toplevel
    if command == "quantize":
      ops.quantize(_WORKDIR.value, _OUTPUT.value, _BITS.value or 8, _ACT_BITS.value, _STEP.value)
    else:
      ops.prune(_WORKDIR.value, _OUTPUT.value, _SPARSITY.value, _FINETUNE.value, _SCOPE.value,
                _STRUCTURE.value, _BITS.value or 0, _LR.value, _STEP.value)
    print(f"wrote {_OUTPUT.value}", file=sys.stderr, flush=True)
    if _REPORT.value:
      report.compare(_WORKDIR.value, _OUTPUT.value, _STEP.value, " ".join(sys.argv[1:]))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
