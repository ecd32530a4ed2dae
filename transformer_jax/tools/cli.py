"""Command-line flags for train.py and the tools: a bad flag is one `error:` line, exit code 2.

absl's own parser ends a mistyped `--config.field=value` override in a raw
AttributeError traceback, and a value of the wrong type in a "FATAL Flags parsing
error" with exit code 1. `parse_flags` (pass it to `app.run` as `flags_parser`)
turns both, and every other flag error, into one line that names the flag and,
for a config override, the nearest valid field names.
"""

from __future__ import annotations

import difflib
import os
import runpy
import sys

from absl import flags, logging

EXIT_BAD_INPUT = 2


def exit_with_error(message: str, hard: bool = False) -> None:
  """Prints `error: MESSAGE` and exits with code 2. `hard` skips the interpreter's
  teardown, where the background threads of a failed asynchronous save (Orbax's) would
  print tracebacks of their own into the middle of a clean report."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  if hard:
    sys.stdout.flush()
    os._exit(EXIT_BAD_INPUT)  # pylint: disable=protected-access
  sys.exit(EXIT_BAD_INPUT)


def _fields(config, prefix: str = "") -> list[str]:
  out = []
  for key, value in config.items():
    name = f"{prefix}{key}"
    out.append(name)
    if hasattr(value, "items"):
      out.extend(_fields(value, name + "."))
  return out


def _config_file(argv: list[str], flag: str) -> str | None:
  for arg in argv:
    if arg.startswith(f"--{flag}="):
      return arg.split("=", 1)[1]
  return None


def unknown_override(argv: list[str], flag: str = "config") -> str | None:
  """The message for the first `--config.X=...` override that names no field of the config
  file given by `--config=PATH`; None when all exist (or the file cannot be read here)."""
  path = _config_file(argv, flag)
  if path is None:
    return None
  try:
    config = runpy.run_path(path.split(":", 1)[0])["get_config"]()
  except Exception:  # pylint: disable=broad-except
    return None  # absl reports an unreadable config file itself.
  fields = _fields(config)
  for arg in argv:
    if not arg.startswith(f"--{flag}."):
      continue
    name = arg[len(flag) + 3:].split("=", 1)[0]
    if name not in fields:
      near = difflib.get_close_matches(name, fields, n=3, cutoff=0.6)
      parent = name.rsplit(".", 1)[0] if "." in name else ""
      if not near and parent in fields:
        near = [f for f in fields if f.startswith(parent + ".")][:8]
      hint = f"; did you mean {', '.join(near)}?" if near else ""
      return f"--{flag}.{name}: no such config field{hint}"
  return None


def quiet_orbax() -> None:
  """Drops Orbax's own log lines (its background save threads log each failure with a
  traceback): the checkpoint code reports what failed, in one line. Not at INFO level
  and below (the library's logs are wanted then)."""
  if logging.get_verbosity() >= logging.INFO:
    return
  logging.get_absl_handler().addFilter(
      lambda record: "/orbax/" not in record.pathname.replace("\\", "/"))
  # A failed save's writer callbacks can still fire on Orbax's closed event loop; Python
  # reports such an error from a foreign thread through sys.unraisablehook (or
  # sys.excepthook). Those, and only those, are dropped: the failure itself is reported
  # by the checkpoint code.
  default_except, default_unraisable = sys.excepthook, sys.unraisablehook

  def closed_loop(kind, value) -> bool:
    return kind is RuntimeError and str(value) == "Event loop is closed"

  def except_hook(kind, value, tb):
    if not closed_loop(kind, value):
      default_except(kind, value, tb)

  def unraisable_hook(unraisable):
    if not closed_loop(unraisable.exc_type, unraisable.exc_value):
      default_unraisable(unraisable)

  sys.excepthook, sys.unraisablehook = except_hook, unraisable_hook


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with every failure reported by `fail` (exit code 2)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    exit_with_error(unknown_override(argv) or str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    exit_with_error(unknown_override(argv) or f"bad flag: {str(e).splitlines()[0]}")
  return []  # not reached.
