"""Where transformer_jax keeps what a second run need not redo: $XDG_CACHE_HOME/transformer_jax
(default ~/.cache/transformer_jax). Holds the CPU's measured matmul rate (flops.py) and
XLA's persistent compilation cache (config.compilation_cache_dir = "auto")."""

from __future__ import annotations

import os


def user_cache_dir(*parts: str) -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "transformer_jax", *parts)


def enable_compilation_cache(path: str) -> str | None:
  """Points jax's persistent compilation cache at `path` ("auto": the user cache's "xla"
  folder; "": off), so that a second run (or a resume) loads its compiled programs
  instead of compiling them again. Returns the folder used, or None."""
  if not path:
    return None
  import jax  # pylint: disable=import-outside-toplevel
  folder = user_cache_dir("xla") if path == "auto" else os.path.expanduser(path)
  jax.config.update("jax_compilation_cache_dir", folder)
  # Only programs worth it (the steps and decoders, not small helpers).
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return folder
