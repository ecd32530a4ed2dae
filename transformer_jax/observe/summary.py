"""What a run is about to train: its parameters, their sharding, sizes and FLOPs.

`model_markdown` is WORKDIR/model.md: the totals (parameters, bytes of parameters
and optimizer state per device, mesh, global batch, tokens and FLOPs per step), a
table per block, and every parameter with its shape, dtype, logical axes, mesh
sharding and count. `console_table` is the short form that train.py prints.
"""

from __future__ import annotations

import dataclasses
import math
import re

import jax
from jax.sharding import PartitionSpec

from transformer_jax.compress import quant
from transformer_jax.parallel import memory

_LAYER = re.compile(r"^(layer_\d+|layers)$")


@dataclasses.dataclass(frozen=True)
class ParamRow:
  path: str
  shape: tuple[int, ...]
  dtype: str
  logical: tuple  # logical axis names, one per dimension.
  sharding: tuple  # mesh axes, one per dimension (None: not split).
  count: int
  device_bytes: int  # bytes of it on one device.

  @property
  def block(self) -> str:
    """The path up to and including its layer (`encoder/layer_0`), else its module."""
    parts = self.path.split("/")
    for i, part in enumerate(parts[:-1]):
      if _LAYER.match(part):
        return "/".join(parts[:i + 1])
    return "/".join(parts[:-1]) or "(top)"


def _spec(spec, ndim: int) -> tuple:
  spec = tuple(spec) if spec is not None else ()
  return spec + (None,) * (ndim - len(spec))


def param_rows(programs) -> list[ParamRow]:
  """One row per parameter array of `programs` (programs.Programs), in path order."""
  names = jax.tree_util.tree_leaves_with_path(
      programs.logical_names(), is_leaf=lambda x: isinstance(x, PartitionSpec))
  logical = {jax.tree_util.keystr(p, simple=True, separator="/"): s for p, s in names}
  rows = []
  for path, x in jax.tree_util.tree_leaves_with_path(programs.abstract_state.params):
    key = jax.tree_util.keystr(path, simple=True, separator="/")
    rows.append(ParamRow(
        path=key, shape=tuple(x.shape), dtype=str(x.dtype),
        logical=_spec(logical.get(key), len(x.shape)),
        sharding=_spec(x.sharding.spec, len(x.shape)), count=math.prod(x.shape),
        device_bytes=math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize))
  return sorted(rows, key=lambda r: r.path)


def tokens_per_step(programs) -> tuple[int, str]:
  """(units of one global batch, unit): token positions of the text arrays (`inputs`,
  `targets`) for token kinds, frame positions for speech ([B, frames, features]
  inputs), else rows."""
  shapes = programs.batch_shapes
  if programs.kind.unit == "tokens":
    return sum(math.prod(shapes[k].shape) for k in ("inputs", "targets")
               if k in shapes and len(shapes[k].shape) == 2), "tokens"
  if programs.kind.unit == "frames":
    return math.prod(shapes["inputs"].shape[:2]), "frames"
  return programs.global_batch_size, programs.kind.unit


def _axes(names: tuple) -> str:
  return ", ".join("-" if n is None else (n if isinstance(n, str) else "+".join(n))
                   for n in names) or "-"


def totals(programs, rows: list[ParamRow]) -> dict:
  """The run's headline figures (numbers, for model.md and the report); `rows` are
  param_rows(programs)."""
  units, unit = tokens_per_step(programs)
  out = {"kind": programs.kind.name, "params": sum(r.count for r in rows),
         "param_arrays": len(rows),
         "params_bytes_per_device": memory.per_device_bytes(programs.abstract_state.params),
         "opt_state_bytes_per_device":
             memory.per_device_bytes(programs.abstract_state.opt_state),
         "mesh": dict(programs.mesh.shape), "global_batch": programs.global_batch_size,
         f"{unit}_per_step": units, "train_flops_per_step": programs.train_flops}
  if programs.train_flops:
    out[f"train_flops_per_{unit[:-1]}"] = programs.train_flops / units
  frozen = programs.abstract_state.frozen
  if frozen is not None:  # an adapter run: `params` above are the trainable ones.
    out["frozen_params"] = quant.num_values(frozen)
    out["frozen_bytes_per_device"] = memory.per_device_bytes(frozen)
  return out


def _blocks(rows: list[ParamRow]) -> list[tuple[str, int, int, int]]:
  """(block, arrays, parameters, bytes per device) in path order."""
  out: dict[str, list[int]] = {}
  for r in rows:
    b = out.setdefault(r.block, [0, 0, 0])
    b[0] += 1
    b[1] += r.count
    b[2] += r.device_bytes
  return [(k, *v) for k, v in out.items()]


def _headline(t: dict) -> list[str]:
  unit = next(k for k in t if k.endswith("_per_step") and not k.startswith("train_"))
  trainable = "trainable parameters" if "frozen_params" in t else "parameters"
  lines = [f"- {trainable}: {t['params']:,} in {t['param_arrays']} arrays",
           f"- per device: {trainable} {memory.format_bytes(t['params_bytes_per_device'])}, "
           "optimizer state "
           f"{memory.format_bytes(t['opt_state_bytes_per_device'])}",
           f"- mesh: {t['mesh']}; global batch: {t['global_batch']} rows, "
           f"{t[unit]:,} {unit.replace('_per_step', '')} per step"]
  if "frozen_params" in t:
    lines.insert(2, f"- frozen base (config.lora): {t['frozen_params']:,} parameters, "
                 f"{memory.format_bytes(t['frozen_bytes_per_device'])} per device, "
                 "no optimizer state")
  if t["train_flops_per_step"]:
    per = next(k for k in t if k.startswith("train_flops_per_") and k != "train_flops_per_step")
    lines.append(f"- training FLOPs: {t['train_flops_per_step']:.3e} per step, "
                 f"{t[per]:,.0f} per {per.rsplit('_', 1)[1]} (flops.py)")
  return lines


def model_markdown(programs) -> str:
  """WORKDIR/model.md: totals, blocks, every parameter."""
  rows = param_rows(programs)
  t = totals(programs, rows)
  out = [f"# Model: {t['kind']}", "", *_headline(t), "", "## Blocks", "",
         "| block | arrays | parameters | share | bytes per device |",
         "| --- | ---: | ---: | ---: | ---: |"]
  for block, arrays, count, nbytes in _blocks(rows):
    out.append(f"| {block} | {arrays} | {count:,} | {count / t['params']:.1%} | "
               f"{memory.format_bytes(nbytes)} |")
  out += ["", "## Parameters", "",
          "| path | shape | dtype | logical axes | mesh axes | parameters | bytes per device |",
          "| --- | --- | --- | --- | --- | ---: | ---: |"]
  for r in rows:
    out.append(f"| {r.path} | {'x'.join(map(str, r.shape)) or 'scalar'} | {r.dtype} | "
               f"{_axes(r.logical)} | {_axes(r.sharding)} | {r.count:,} | "
               f"{memory.format_bytes(r.device_bytes)} |")
  return "\n".join(out) + "\n"


def console_table(programs) -> str:
  """The blocks and totals, aligned for a terminal."""
  rows = param_rows(programs)
  t = totals(programs, rows)
  blocks = _blocks(rows)
  width = max(len(b[0]) for b in blocks)
  lines = [f"  {'parameters of':<{width}}  {'arrays':>6}  {'parameters':>12}  {'share':>6}"]
  for block, arrays, count, _ in blocks:
    lines.append(f"  {block:<{width}}  {arrays:>6}  {count:>12,}  {count / t['params']:>6.1%}")
  lines += ["  " + line[2:] for line in _headline(t)]
  lines.append("  every parameter with its logical axes and sharding: model.md in the workdir")
  return "\n".join(lines)
