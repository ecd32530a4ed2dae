"""A run's saved config.json, read over today's defaults."""

from __future__ import annotations

import json

import ml_collections

from transformer_jax.config.defaults import default_config
from transformer_jax.errors import ConfigError


def from_json(path: str) -> ml_collections.ConfigDict:
  """A run's saved config.json (as train.py writes it) over today's defaults.

  Fields added since the run was made keep their defaults; a field this version
  does not know is an error that names it.
  """
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except OSError as e:
    raise ConfigError(f"cannot read the run's config {path}: {e.strerror}") from e
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path} is not valid JSON: {e}") from e
  config = default_config()

  def overlay(node, values, prefix):
    for key, value in values.items():
      if key not in node:
        raise ConfigError(f"{path}: unknown field config.{prefix}{key}")
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        overlay(node[key], value, f"{prefix}{key}.")
      else:
        node[key] = value
  overlay(config, saved, "")
  return config
