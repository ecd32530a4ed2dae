"""The house's import rules: no import circle, and every import goes down the layers.

Every module's imports are read from its source (those inside functions too).
The layers, low to high (README.md, "Layout"); a module may import from its own
layer or a lower one, never from a higher one:

  errors -> config -> compress (the stored forms) -> models, data, metrics
  -> decode, parallel, checkpoint, observe -> kinds -> pretrained -> train -> tools
  -> commands (the top-level modules, `compress`'s command half, `report`)

And no module outside `kinds/` names a kind: what differs between kinds is a field
of the kind's record.
"""

from __future__ import annotations

import ast
import os
import shutil

import pytest

from transformer_jax import kinds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "transformer_jax"

# Module-name prefixes and their layers; the longest matching prefix wins.
LAYERS = {
    "errors": 0,
    "config": 1,
    "compress.quant": 2, "compress.sparsity": 2, "compress.stored": 2,
    "models": 3, "data": 3, "metrics": 3, "adapters": 3, "adapters.lora": 3,
    "decode": 4, "parallel": 4, "checkpoint": 4, "observe": 4,
    "kinds": 5,
    "pretrained": 6, "adapters.peft": 6,
    "train": 7,
    "tools": 8,
    "": 9,  # the package itself, the commands, compress's command half, report.
}
LAYER_NAMES = ["errors", "config", "compress (stored forms)", "models/data/metrics",
               "decode/parallel/checkpoint/observe", "kinds", "pretrained", "train", "tools",
               "commands"]


def modules(root: str) -> dict[str, str]:
  """{dotted name below the package: file} for every module of the package under `root`."""
  found = {}
  base = os.path.join(root, PACKAGE)
  for folder, _, files in os.walk(base):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, f), base)[:-3].replace(os.sep, ".")
        found["" if rel == "__init__" else rel.removesuffix(".__init__")] = os.path.join(folder, f)
  return found


def import_graph(root: str) -> dict[str, set[str]]:
  """{module: the package's modules it imports}, by reading every import statement."""
  mods = modules(root)
  graph = {}
  for name, path in mods.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        wanted = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = [PACKAGE] + (name.split(".") if name else [])
          parts = parts[:len(parts) - node.level + (1 if is_package else 0)]
          base = ".".join(parts + ([base] if base else []))
        # `from X import y`: the module X.y where y is one, else X itself.
        wanted = [f"{base}.{a.name}" if _rel(f"{base}.{a.name}") in mods else base
                  for a in node.names]
      else:
        continue
      for full in wanted:
        if full == PACKAGE or full.startswith(PACKAGE + "."):
          rel = _rel(full)
          while rel and rel not in mods:
            rel = rel.rpartition(".")[0]
          targets.add(rel)
    targets.discard(name)
    graph[name] = targets
  return graph


def _rel(full: str) -> str:
  return full[len(PACKAGE) + 1:]


def layer(module: str) -> int:
  best = ""
  for prefix in LAYERS:
    if (module == prefix or module.startswith(prefix + ".") or prefix == "") and \
        len(prefix) >= len(best):
      best = prefix
  return LAYERS[best]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import circle as [a, b, ..., a], or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done.
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    state[node] = 2
    path.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
  return [f"{a or PACKAGE} ({LAYER_NAMES[layer(a)]}) imports {b} ({LAYER_NAMES[layer(b)]})"
          for a in sorted(graph) for b in sorted(graph[a]) if layer(b) > layer(a)]


def test_the_package_has_no_import_circle():
  cycle = find_cycle(import_graph(REPO))
  assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_every_import_goes_down_the_layers():
  assert upward_imports(import_graph(REPO)) == []


def test_a_circle_or_an_upward_import_added_to_a_copy_is_caught(tmp_path):
  shutil.copytree(os.path.join(REPO, PACKAGE), tmp_path / PACKAGE)
  assert find_cycle(import_graph(str(tmp_path))) is None
  # config/saved.py imports config/defaults.py; make defaults import saved back, inside a
  # function, as a hidden circle would.
  with open(tmp_path / PACKAGE / "config" / "defaults.py", "a", encoding="utf-8") as f:
    f.write("\n\ndef _late():\n  from transformer_jax.config import saved  # noqa\n")
  cycle = find_cycle(import_graph(str(tmp_path)))
  assert cycle is not None and {"config.defaults", "config.saved"} <= set(cycle)
  # models importing the train package goes up four layers.
  with open(tmp_path / PACKAGE / "models" / "dropout.py", "a", encoding="utf-8") as f:
    f.write("\n\nfrom transformer_jax.train import steps  # noqa\n")
  assert upward_imports(import_graph(str(tmp_path))) == [
      "models.dropout (models/data/metrics) imports train.steps (train)"]


def test_the_config_package_imports_nothing_of_ours_but_errors():
  graph = import_graph(REPO)
  config = {m for m in graph if m == "config" or m.startswith("config.")}
  outside = {b for a in config for b in graph[a]} - config
  assert outside <= {"errors"}, outside


def _outside_kinds():
  # config/defaults.py names the default kind, as a value for the user to change.
  return sorted(p for m, p in modules(REPO).items()
                if not (m == "kinds" or m.startswith("kinds.")) and m != "config.defaults")


@pytest.mark.parametrize("path", _outside_kinds(), ids=lambda p: os.path.relpath(p, REPO))
def test_no_module_outside_kinds_names_a_kind(path):
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
              and isinstance(n.value, str)}
  assert not literals & set(kinds.names()), f"{path} names {literals & set(kinds.names())}"
