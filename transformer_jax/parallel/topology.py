"""TPU slice topologies by name (v5p-128, v5e-256, ...): their chips, torus shape and hosts,
and libtpu's descriptions of their devices on a CPU-only host (no TPU attached)."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re

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
