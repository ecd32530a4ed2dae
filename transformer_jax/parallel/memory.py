"""Whether a compiled train step fits in a device's memory, from XLA's own accounting.

The trainer compiles the train step before any parameter is created and compares
XLA's figures for it (arguments, outputs, temporaries; donated buffers counted
once) with what one device has: a GPU's or TPU's own limit, on a CPU the
machine's RAM (its cgroup's limit where lower) shared by the process's devices,
or `config.memory_limit_mib` where set. A step that does not fit stops the run
with the numbers and the config fields that shrink it, instead of an allocator
dump minutes later. `aot.py` reports the same figures for TPU chips.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax

from transformer_jax.errors import ConfigError

GiB = 1024**3
MiB = 1024**2


class OutOfMemoryError(ConfigError):
  """The train step needs more memory than a device has; the message gives the
  figures and the fields to change."""


@dataclasses.dataclass(frozen=True)
class Footprint:
  """Bytes one device needs for a compiled program (XLA's CompiledMemoryStats)."""
  arguments: int
  outputs: int
  aliased: int  # outputs written into donated arguments: counted once.
  temporaries: int
  code: int

  @classmethod
  def of(cls, compiled) -> Footprint:
    m = compiled.memory_analysis()
    return cls(m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes,
               m.temp_size_in_bytes, m.generated_code_size_in_bytes)

  @property
  def total(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries + self.code


def per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs carrying shardings."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def _machine_ram() -> int:
  ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(path, encoding="ascii") as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit():
      ram = min(ram, int(text))
  return ram


def device_limit(limit_mib: int = 0, device: jax.Device | None = None) -> tuple[int, str]:
  """(bytes one device may use, where that figure comes from)."""
  if limit_mib > 0:
    return limit_mib * MiB, f"config.memory_limit_mib={limit_mib}"
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}  # backends without the call.
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"the memory of one {device.device_kind}"
  shared = len(jax.local_devices(backend=device.platform))
  where = "the machine's RAM" + (f" shared by {shared} devices" if shared > 1 else "")
  return _machine_ram() // shared, where


def advice(config) -> str:
  """The config fields that make a train step smaller, with their values."""
  mesh = config.mesh
  lora = config.get("lora")
  base = ""
  if lora is not None and lora.rank and lora.base_bits != 4:
    base = (f"hold the frozen base as int4 with config.lora.base_bits=4 (now "
            f"{lora.base_bits}), ")
  return (f"{base}lower config.per_device_batch_size (now {config.per_device_batch_size}) or "
          f"config.max_target_length (now {config.max_target_length}), raise "
          f"config.gradient_accumulation_steps (now {config.gradient_accumulation_steps}), "
          f"set config.model.remat='full' (now {config.model.remat!r}), or shard the state "
          f"over more devices with config.mesh.fsdp / config.mesh.tensor (now "
          f"{mesh.fsdp} / {mesh.tensor})")


def format_bytes(num_bytes: int) -> str:
  """`num_bytes` in the largest of GiB, MiB, KiB that it reaches: "1,234.50 MiB"."""
  for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
    if num_bytes >= scale:
      return f"{num_bytes / scale:,.2f} {unit}"
  return f"{num_bytes} B"


def check_fits(footprint: Footprint, state_bytes: int, limit: tuple[int, str], config,
               what: str = "the train step", frozen_bytes: int = 0) -> None:
  """Raises OutOfMemoryError when `footprint` exceeds `limit` (from device_limit).
  `state_bytes` counts the whole train state, of which an adapter run's frozen base is
  `frozen_bytes`."""
  available, source = limit
  if footprint.total <= available:
    return
  batch = footprint.arguments - state_bytes
  state = f"parameters and optimizer state {format_bytes(state_bytes)}"
  if frozen_bytes:
    state = (f"trainable parameters and optimizer state "
             f"{format_bytes(state_bytes - frozen_bytes)}, frozen base "
             f"{format_bytes(frozen_bytes)}")
  raise OutOfMemoryError(
      f"{what} needs {format_bytes(footprint.total)} per device but has "
      f"{format_bytes(available)} ({source}): {state}, batch {format_bytes(max(batch, 0))}, temporaries "
      f"(activations) {format_bytes(footprint.temporaries)}, "
      "by XLA's count when compiling. "
      f"To fit: {advice(config)}")


def is_out_of_memory(error: BaseException) -> bool:
  """An XLA error that reports exhausted device memory (compile- or run-time)."""
  return "RESOURCE_EXHAUSTED" in str(error)


def from_xla(error: BaseException, config, what: str = "the train step") -> OutOfMemoryError:
  """OutOfMemoryError for XLA's own out-of-memory error, with its first line."""
  first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
  return OutOfMemoryError(f"{what} ran out of device memory (XLA: {first[:300]}). "
                          f"To fit: {advice(config)}")
