"""Ahead-of-time compilation of the train step for a TPU topology, on a CPU-only host.

  python -m transformer_jax.aot --config=configs/transformer_big.py --topology=v5p-128
  python -m transformer_jax.aot --config=configs/lm_1b.py --topology=v5e-256 --num_slices=2

libtpu (`pip install -e ".[tpu]"`) describes the topology's chips without any
TPU attached (parallel/topology.py); the train step that train.py would run (`programs.build`, same
config, same shardings) is lowered and compiled for them. Printed per chip:
parameter, optimizer-state and temporary memory against the chip's HBM, and
the step's FLOPs. Exit codes: 0 fits, 2 bad config or topology, 3 does not fit.

--num_slices=N describes N slices joined over the data-centre network; a
config that leaves config.mesh.dcn_data at 1 gets dcn_data=N (the data axis
then spans the slices), one that sets it must set it to N.
"""

from __future__ import annotations

import math
import os
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

from transformer_jax import kinds  # noqa: E402
from transformer_jax import config as config_lib  # noqa: E402
from transformer_jax.parallel import memory, sharding  # noqa: E402
from transformer_jax.parallel.topology import (GENERATIONS, TOPOLOGY_FORMS, GiB,  # noqa: E402
                                               MissingLibtpu, Topology, TopologyError,
                                               parse_topology, topology_devices)
from transformer_jax.tools import cli  # noqa: E402
from transformer_jax.train import programs  # noqa: E402

__all__ = ["GENERATIONS", "MissingLibtpu", "Topology", "TopologyError", "compile_for_topology",
           "format_report", "parse_topology", "topology_devices"]

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
