"""The error a bad config raises, shared by config validation, the mesh helpers and the kinds."""

from __future__ import annotations


class ConfigError(ValueError):
  """A config field has a bad value; the message names the field."""


def fail(field: str, value, why: str):
  """Raises ConfigError("config.FIELD=VALUE: WHY")."""
  raise ConfigError(f"config.{field}={value!r}: {why}")


class NumericalError(FloatingPointError):
  """Training produced a non-finite loss or gradient; the message names the step, the last
  good checkpoint and the likely causes."""
