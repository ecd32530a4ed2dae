"""Ahead-of-time compilation of the train step for a TPU topology, on a CPU-only host.

  python -m transformer_jax.aot --config=configs/transformer_big.py --topology=v5p-128
  python -m transformer_jax.aot --config=configs/lm_1b.py --topology=v5e-256 --num_slices=2

libtpu (`pip install -e ".[tpu]"`) describes the topology's chips without any
TPU attached; the train step that train.py would run (`programs.build`, same
config, same shardings) is lowered and compiled for them. Printed per chip:
parameter, optimizer-state and temporary memory against the chip's HBM, and
the step's FLOPs. Exit codes: 0 fits, 2 bad config or topology, 3 does not fit.

--num_slices=N describes N slices joined over the data-centre network; a
config that leaves config.mesh.dcn_data at 1 gets dcn_data=N (the data axis
then spans the slices), one that sets it must set it to N.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
import sys
import time

os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server on a CPU host.
# Only descriptions of chips are loaded, no TPU is claimed: several compiles may
# run at once (libtpu otherwise holds a machine-wide lockfile).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from transformer_jax.tools import cli  # noqa: E402
from transformer_jax import config as config_lib  # noqa: E402
from transformer_jax import kinds  # noqa: E402
from transformer_jax.parallel import memory, sharding
from transformer_jax.train import programs

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Generation:
  dims: int  # torus dimensions.
  cores_per_chip_in_name: int  # v4-32 / v5p-128 count TensorCores (2 per chip).
  chip_config: str  # libtpu's chip configuration (v4: one megacore device per chip).
  hbm_bytes: int
  max_chips: int  # the largest single slice (pods beyond it: --num_slices).


GENERATIONS = {
    "v4": Generation(3, 2, "megacore", 32 * GiB, 4096),
    "v5p": Generation(3, 2, "default", 95 * GiB, 8960),
    # 2-D slices stop at 16x16 (libtpu aborts compiling for a v5e side over 16).
    "v5e": Generation(2, 1, "default", 16 * GiB, 256),
    "v6e": Generation(2, 1, "default", 32 * GiB, 256),
}
ALIASES = {"v5litepod": "v5e"}
TOPOLOGY_FORMS = ("v4-N, v5p-N (N TensorCores, 2 per chip), v5e-N, v5litepod-N, v6e-N "
                  "(N chips), or libtpu's form such as v5p:4x4x4 / v5e:16x16")


class TopologyError(ValueError):
  """--topology names no TPU slice we can describe."""


class MissingLibtpu(RuntimeError):
  """libtpu, which describes TPU chips on a CPU host, is not installed."""


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str  # as the user gave it.
  generation: str
  shape: tuple[int, ...]  # chips along each torus dimension.

  @property
  def chips(self) -> int:
    return math.prod(self.shape)

  @property
  def libtpu_name(self) -> str:
    return f"{self.generation}:{'x'.join(map(str, self.shape))}"

  @property
  def hbm_bytes(self) -> int:
    return GENERATIONS[self.generation].hbm_bytes

  def host_bounds(self) -> tuple[int, int, int]:
    """Chips per host: 2x2 where the torus allows, else one chip per host."""
    if len(self.shape) >= 2 and self.shape[0] % 2 == 0 and self.shape[1] % 2 == 0:
      return (2, 2, 1)
    return (1, 1, 1)


def torus_shape(chips: int, dims: int) -> tuple[int, ...]:
  """The standard slice shape: v4/v5p 16 chips -> 2x2x4, 64 -> 4x4x4; v5e 256 -> 16x16."""
  shape = [1] * dims
  if dims == 3:  # the smallest 3-D slice is a 2x2x1 host.
    shape = [2, 2, 1]
  while math.prod(shape) < chips:
    smallest = min(shape)
    i = max(j for j, s in enumerate(shape) if s == smallest)
    shape[i] *= 2
  return tuple(shape)


def parse_topology(name: str) -> Topology:
  """v5p-128 -> v5p:4x4x4, v5e-256 -> v5e:16x16, or libtpu's own form as given."""
  m = re.fullmatch(r"(v\d+[a-z]*)(?::(\d+(?:x\d+)+)|-(\d+))", name.strip())
  gen = ALIASES.get(m.group(1), m.group(1)) if m else None
  if not m or gen not in GENERATIONS:
    raise TopologyError(f"--topology={name!r}: expected {TOPOLOGY_FORMS}")
  g = GENERATIONS[gen]
  if m.group(2):
    shape = tuple(int(x) for x in m.group(2).split("x"))
    if len(shape) != g.dims:
      raise TopologyError(f"--topology={name!r}: {gen} is a {g.dims}-D torus")
    if min(shape) < 1 or math.prod(shape) > g.max_chips or (g.dims == 2 and max(shape) > 16):
      raise TopologyError(f"--topology={name!r}: not a {gen} slice (at most {g.max_chips} "
                          f"chips{', 16 a side' if g.dims == 2 else ''}); larger: --num_slices")
    return Topology(name, gen, shape)
  count = int(m.group(3))
  chips, rest = divmod(count, g.cores_per_chip_in_name)
  smallest = 4 if g.dims == 3 else 1  # 2-D slices: 1 chip, then 2x2 and up.
  if (rest or chips < smallest or chips & (chips - 1) or chips > g.max_chips
      or (g.dims == 2 and chips == 2)):
    largest = 2 ** (g.max_chips.bit_length() - 1) * g.cores_per_chip_in_name
    sizes = f"{4 * g.cores_per_chip_in_name if g.dims == 3 else '1 or 4'} to {largest}"
    raise TopologyError(f"--topology={name!r}: {count} is not a {gen} slice size (a power "
                        f"of two, {sizes}; more chips: --num_slices); expected {TOPOLOGY_FORMS}")
  return Topology(name, gen, torus_shape(chips, g.dims))


def topology_devices(topology: Topology, num_slices: int = 1) -> list:
  """libtpu's descriptions of the slice's chips (no TPU needed)."""
  if importlib.util.find_spec("libtpu") is None:
    raise MissingLibtpu("libtpu is not installed; it describes TPU chips on a CPU host: "
                       "pip install -e \".[tpu]\"")
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  desc = topologies.get_topology_desc(
      platform="tpu", topology_name=topology.libtpu_name,
      chip_config_name=GENERATIONS[topology.generation].chip_config,
      chips_per_host_bounds=topology.host_bounds(), num_slices=num_slices)
  return list(desc.devices)


def compile_for_topology(config: ml_collections.ConfigDict, topology: Topology,
                         num_slices: int = 1) -> dict:
  """Compiles config's train step for the topology; returns the per-chip figures.

  With several slices, config.mesh.dcn_data (the slice count; default 1) is set
  to num_slices; a config that sets it must agree with num_slices. Raises
  ConfigError for a bad config or layout, MissingLibtpu without libtpu.
  """
  if num_slices > 1 and config.mesh.dcn_data == 1:
    config = config.copy_and_resolve_references()
    config.mesh.dcn_data = num_slices
  kinds.validate(config)
  kind = kinds.get(config.model.kind)
  if kind.uses_classes and config.model.num_classes <= 0:
    raise config_lib.ConfigError(
        f"config.model.num_classes={config.model.num_classes}: a {kind.name!r} model compiled "
        "without data needs its number of classes")
  if config.mesh.dcn_data != num_slices:
    raise config_lib.ConfigError(
        f"config.mesh.dcn_data={config.mesh.dcn_data!r}: the topology has {num_slices} "
        "slice(s) (--num_slices)")
  num_devices = topology.chips * num_slices
  sharding.validate_devices(config, num_devices)
  devices = topology_devices(topology, num_slices)
  if len(devices) != num_devices:
    raise TopologyError(f"libtpu described {len(devices)} devices for {topology.libtpu_name} "
                        f"x {num_slices}, expected {num_devices}")
  mesh = sharding.make_mesh(config, devices)
  progs = programs.build(config, mesh, config.data.vocab_size if kind.uses_vocab else 0)
  t0 = time.monotonic()
  with progs.context():
    lowered = progs.train_step.lower(progs.abstract_state, progs.batch_specs())
    try:
      compiled = lowered.compile()
    except Exception as e:  # pylint: disable=broad-except
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      # The TPU compiler itself refuses a program that cannot fit.
      return {"topology": topology.libtpu_name, "num_slices": num_slices,
              "chips": num_devices, "fits": False, "compiler_message": str(e).strip(),
              "hbm_bytes": topology.hbm_bytes}
  seconds = time.monotonic() - t0
  mem = memory.Footprint.of(compiled)
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  state = progs.abstract_state
  return {
      "topology": topology.libtpu_name, "num_slices": num_slices, "chips": num_devices,
      "mesh": dict(mesh.shape), "global_batch": progs.global_batch_size,
      "length": config.max_target_length,
      "num_params": sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)),
      "params_bytes": memory.per_device_bytes(state.params),
      "opt_state_bytes": memory.per_device_bytes(state.opt_state),
      "argument_bytes": mem.arguments, "output_bytes": mem.outputs,
      "alias_bytes": mem.aliased, "temp_bytes": mem.temporaries,
      "code_bytes": mem.code, "total_bytes": mem.total,
      "hbm_bytes": topology.hbm_bytes, "fits": mem.total <= topology.hbm_bytes,
      "flops": float(cost.get("flops", 0.0)), "compile_seconds": seconds,
  }


_ADVICE = ("raise config.mesh.fsdp or config.mesh.tensor, set config.model.remat='full', or "
           "lower config.per_device_batch_size")


def format_report(r: dict) -> str:
  if "compiler_message" in r:
    return (f"topology {r['topology']} x {r['num_slices']} slice(s), {r['chips']} chips\n"
            f"fits: NO, the TPU compiler says: {r['compiler_message']}\n{_ADVICE}")
  gib = lambda b: f"{b / GiB:8.3f} GiB"  # noqa: E731
  lines = [
      f"topology {r['topology']} x {r['num_slices']} slice(s): {r['chips']} chips; "
      f"mesh {r['mesh']}; global batch {r['global_batch']} x {r['length']}; "
      f"{r['num_params']:,} parameters; compiled in {r['compile_seconds']:.1f} s",
      "per chip:",
      f"  parameters       {gib(r['params_bytes'])}",
      f"  optimizer state  {gib(r['opt_state_bytes'])}",
      f"  temporaries      {gib(r['temp_bytes'])}",
      f"  arguments        {gib(r['argument_bytes'])} (state + batch; outputs "
      f"{gib(r['output_bytes']).strip()}, donated {gib(r['alias_bytes']).strip()})",
      f"  generated code   {gib(r['code_bytes'])}",
      f"  total            {gib(r['total_bytes'])} of {r['hbm_bytes'] / GiB:.0f} GiB HBM "
      f"({100 * r['total_bytes'] / r['hbm_bytes']:.1f}%)",
      f"  FLOPs per step   {r['flops']:.3e}",
  ]
  if r["fits"]:
    lines.append("fits: yes")
  else:
    short = (r["total_bytes"] - r["hbm_bytes"]) / GiB
    lines.append(f"fits: NO, {short:.2f} GiB over the chip's HBM: {_ADVICE}")
  return "\n".join(lines)


_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, f"TPU slice: {TOPOLOGY_FORMS}.")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "Slices joined over the data-centre network "
                                   "(config.mesh.dcn_data follows it where left at 1).")


def main(argv):
  del argv
  try:
    topology = parse_topology(_TOPOLOGY.value)
    if _NUM_SLICES.value < 1:
      raise TopologyError(f"--num_slices={_NUM_SLICES.value}: must be at least 1")
    report = compile_for_topology(_CONFIG.value, topology, _NUM_SLICES.value)
  except (config_lib.ConfigError, TopologyError, MissingLibtpu) as e:
    cli.exit_with_error(str(e))
  print(format_report(report), flush=True)
  if not report["fits"]:
    sys.exit(3)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "topology"])
  app.run(main, flags_parser=cli.parse_flags)
