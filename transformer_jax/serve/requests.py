"""Request bodies checked field by field: a bad one is an HTTPError (a 4xx) whose message
is one line naming the field and what it takes."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any


class HTTPError(Exception):
  """An answer other than 200: its status, a one-line reason, the field it names, and
  headers (Retry-After)."""

  def __init__(self, status: int, message: str, param: str | None = None,
               headers: dict[str, str] | None = None, kind: str = "invalid_request_error"):
    super().__init__(message)
    self.status, self.message, self.param = status, message, param
    self.headers = headers or {}
    self.kind = kind


def bad(message: str, param: str | None = None) -> HTTPError:
  return HTTPError(400, message, param)


def parse_json(body: bytes, limit: int) -> dict[str, Any]:
  if len(body) > limit:
    raise HTTPError(413, f"the body has {len(body)} bytes; this server takes at most {limit}")
  try:
    value = json.loads(body)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise bad(f"the body is not valid JSON: {e}") from e
  if not isinstance(value, dict):
    raise bad(f"the body must be a JSON object, not {type(value).__name__}")
  return value


class Fields:
  """A request object's fields, taken one by one; `done()` refuses any left over."""

  def __init__(self, body: dict[str, Any], known: Iterable[str], unsupported: Iterable[str] = ()):
    self.body = dict(body)
    self.known = tuple(known)
    self._unsupported = set(unsupported)
    for name in self.body:
      if name in self._unsupported:
        if self.body[name] is None:
          continue
        raise bad(f"field {name!r} is not supported by this server", name)
      if name not in self.known:
        raise bad(f"unknown field {name!r}; this endpoint takes {', '.join(self.known)}", name)

  def has(self, name: str) -> bool:
    return self.body.get(name) is not None

  def texts(self, name: str, *, required: bool = True, limit: int) -> tuple[list[str], bool]:
    """A string or a list of strings: (the strings, whether one string was given)."""
    value = self.body.get(name)
    if value is None:
      if required:
        raise bad(f"field {name!r} is required (a string or a list of strings)", name)
      return [], False
    if isinstance(value, str):
      return [value], True
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
      raise bad(f"field {name!r} must be a string or a list of strings", name)
    if len(value) > limit:
      raise bad(f"field {name!r} has {len(value)} items; this server takes at most {limit} "
                "in one request", name)
    return list(value), False

  def integer(self, name: str, default: int, low: int, high: int) -> int:
    value = self.body.get(name, default)
    if value is None:
      value = default
    if isinstance(value, bool) or not isinstance(value, int):
      raise bad(f"field {name!r} must be an integer, not {json.dumps(value)}", name)
    if not low <= value <= high:
      raise bad(f"field {name!r}={value} is out of range: this server takes {low}..{high}",
                name)
    return value

  def number(self, name: str, default: float, low: float, high: float) -> float:
    value = self.body.get(name, default)
    if value is None:
      value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise bad(f"field {name!r} must be a number, not {json.dumps(value)}", name)
    if not low <= value <= high:
      raise bad(f"field {name!r}={value} is out of range: this server takes {low}..{high}",
                name)
    return float(value)

  def choice(self, name: str, default, allowed: Iterable) -> Any:
    allowed = list(allowed)
    value = self.body.get(name, default)
    if value is None:
      value = default
    if value not in allowed or isinstance(value, bool) != isinstance(default, bool):
      raise bad(f"field {name!r}={json.dumps(value)}: this server takes one of "
                f"{', '.join(json.dumps(a) for a in allowed)}", name)
    return value

  def stops(self, name: str = "stop") -> list[str]:
    value = self.body.get(name)
    if value is None:
      return []
    if isinstance(value, str):
      value = [value]
    if (not isinstance(value, list) or len(value) > 4
        or not all(isinstance(v, str) and v for v in value)):
      raise bad(f"field {name!r} must be a non-empty string or a list of up to 4 of them", name)
    return value

  def string(self, name: str, default: str | None = None) -> str | None:
    value = self.body.get(name, default)
    if value is not None and not isinstance(value, str):
      raise bad(f"field {name!r} must be a string", name)
    return value


def messages(value: Any) -> list[dict[str, str]]:
  """A chat request's messages: [{"role": system|user|assistant, "content": text}, ...];
  content may be a list of {"type": "text", "text": ...} parts."""
  if not isinstance(value, list) or not value:
    raise bad("field 'messages' must be a non-empty list of {role, content} objects",
              "messages")
  out = []
  for i, m in enumerate(value):
    where = f"messages[{i}]"
    if not isinstance(m, dict) or "role" not in m or "content" not in m:
      raise bad(f"{where} must be an object with 'role' and 'content'", "messages")
    if m["role"] not in ("system", "user", "assistant", "developer"):
      raise bad(f"{where}.role={json.dumps(m['role'])}: this server takes system, developer, "
                "user or assistant", "messages")
    content = m["content"]
    if isinstance(content, list):
      if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                 for p in content):
        raise bad(f"{where}.content: only text parts ({{'type': 'text', 'text': ...}}) are "
                  "taken", "messages")
      content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
      raise bad(f"{where}.content must be a string or a list of text parts", "messages")
    role = "system" if m["role"] == "developer" else m["role"]
    out.append({"role": role, "content": content})
  return out
