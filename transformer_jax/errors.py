"""The errors a user sees: each message names the field, file or value, and what to do.

The commands (train.py and the tools) turn any of USER_ERRORS into one `error: ...`
line and exit code 2 (tools/cli.py); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
  """A config field has a bad value; the message names the field."""


def fail(field: str, value, why: str):
  """Raises ConfigError("config.FIELD=VALUE: WHY")."""
  raise ConfigError(f"config.{field}={value!r}: {why}")


class NumericalError(FloatingPointError):
  """Training produced a non-finite loss or gradient; the message names the step, the last
  good checkpoint and the likely causes."""


class CorpusError(ValueError):
  """Raised when a corpus cannot be found or read; the message says what to do."""


class TokenizerError(ValueError):
  """The tokenizer cannot be trained or loaded; the message names the field or file."""


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message names the file or the difference."""


class BadInput(ValueError):
  """A tool's input file or flag that cannot be used; the message names it."""


# Subclasses count too: PretrainedError and OutOfMemoryError are ConfigErrors.
USER_ERRORS = (ConfigError, NumericalError, CorpusError, TokenizerError, CheckpointError,
               BadInput)
