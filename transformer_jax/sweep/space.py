"""A search space: a small Python file whose `get_space()` returns config fields and their
ranges, checked against the run's config before any trial runs.

  def get_space():
    return {
        "learning_rate": ("log_uniform", 1e-4, 3e-3),
        "warmup_steps": ("int", 10, 100),
        "model.dropout_rate": ("uniform", 0.0, 0.3),
        "lr_schedule": ("categorical", ["cosine", "linear"]),
    }

Kinds: "uniform" and "log_uniform" (floats), "int" and "log_int" (whole numbers),
"categorical" (a list of values). A bad space (no get_space, an unknown field, an empty or
reversed range, a log range through 0, a value of the field's wrong type) is one
ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import runpy
from typing import Any

from transformer_jax.errors import ConfigError

KINDS = ("uniform", "log_uniform", "int", "log_int", "categorical")


@dataclasses.dataclass(frozen=True)
class Param:
  name: str  # a config field, dotted: "model.dropout_rate".
  kind: str
  low: float | None = None
  high: float | None = None
  choices: tuple = ()

  def suggest(self, trial) -> Any:
    """This parameter's value for an Optuna trial."""
    if self.kind == "categorical":
      return trial.suggest_categorical(self.name, list(self.choices))
    if self.kind in ("int", "log_int"):
      return trial.suggest_int(self.name, int(self.low), int(self.high),
                               log=self.kind == "log_int")
    return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log_uniform")

  def describe(self) -> str:
    if self.kind == "categorical":
      return f"{self.name} in {list(self.choices)}"
    return f"{self.name} {self.kind} [{self.low}, {self.high}]"


def _fields(config, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      out.update(_fields(value, name + "."))
    else:
      out[name] = value
  return out


def _fail(where: str, message: str) -> ConfigError:
  return ConfigError(f"{where}: {message}")


def load_space(path: str, config) -> list[Param]:
  """The space in `path`, checked against `config` (the trials' config)."""
  if not os.path.isfile(path):
    raise ConfigError(f"--space={path}: no such file")
  try:
    module = runpy.run_path(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"--space={path}: cannot load it: {type(e).__name__}: {e}") from e
  if "get_space" not in module:
    raise ConfigError(f"--space={path}: defines no get_space()")
  space = module["get_space"]()
  if not isinstance(space, dict) or not space:
    raise ConfigError(f"--space={path}: get_space() must return a non-empty dict "
                      "{config field: (kind, ...)}")
  fields = _fields(config)
  return [_param(f"--space={path}: {name!r}", name, spec, fields) for name, spec in space.items()]


def _param(where: str, name: str, spec, fields: dict[str, Any]) -> Param:
  if name not in fields:
    near = difflib.get_close_matches(str(name), list(fields), n=3, cutoff=0.6)
    raise _fail(where, "no such config field" + (f"; did you mean {', '.join(near)}?"
                                                   if near else ""))
  current = fields[name]
  if not isinstance(spec, tuple) or not spec or spec[0] not in KINDS:
    raise _fail(where, f"give (kind, ...) with kind one of {', '.join(KINDS)}; got {spec!r}")
  kind = spec[0]
  if kind == "categorical":
    if len(spec) != 2 or not isinstance(spec[1], (list, tuple)) or not spec[1]:
      raise _fail(where, "categorical takes one non-empty list of values")
    for value in spec[1]:
      _check_type(where, value, current)
    return Param(name, kind, choices=tuple(spec[1]))
  if len(spec) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               for v in spec[1:]):
    raise _fail(where, f"{kind} takes (kind, low, high) with numbers; got {spec!r}")
  low, high = spec[1], spec[2]
  if not low < high:
    raise _fail(where, f"the range [{low}, {high}] is empty (low must be below high)")
  if kind.startswith("log_") and low <= 0:
    raise _fail(where, f"a log range needs low > 0 (got {low})")
  if kind in ("int", "log_int"):
    if not (float(low).is_integer() and float(high).is_integer()):
      raise _fail(where, f"{kind} takes whole numbers (got {low}, {high})")
    if isinstance(current, float):
      pass  # a float field takes whole numbers too.
    elif not isinstance(current, int) or isinstance(current, bool):
      raise _fail(where, f"the field holds {type(current).__name__} ({current!r}), not a number")
  elif not isinstance(current, float):
    raise _fail(where, f"{kind} gives floats; the field holds {type(current).__name__} "
                f"({current!r}){': use int' if isinstance(current, int) else ''}")
  return Param(name, kind, float(low), float(high))


def _check_type(where: str, value, current) -> None:
  ok = (isinstance(value, type(current)) or (isinstance(current, float) and
                                             isinstance(value, int) and not isinstance(value, bool)))
  if current is None or ok:
    return
  raise _fail(where, f"the value {value!r} is a {type(value).__name__}; the field holds "
              f"{type(current).__name__} ({current!r})")


def override_args(values: dict[str, Any]) -> list[str]:
  """--config.FIELD=VALUE arguments of train.py for these values."""
  out = []
  for name, value in sorted(values.items()):
    text = repr(value) if isinstance(value, float) else str(value)
    out.append(f"--config.{name}={text}")
  return out


def config_values(config, params) -> dict[str, Any]:
  """The config's own value of each searched field."""
  fields = _fields(config)
  return {p.name: fields[p.name] for p in params}
