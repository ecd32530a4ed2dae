"""Device mesh, logical axis rules, born-sharded state and global batches.

Models name their axes logically ("embed", "mlp", "act_batch", ...); the rules
chosen in the config map those names onto the mesh axes ("data", "fsdp",
"tensor"). Nothing here knows about a particular model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from transformer_jax import config as config_lib

BATCH_AXES = ("data", "fsdp")

# Input batches ("batch", "length") and activations ("act_*") are split over
# the data-like axes; the activations' model dimensions follow the tensor axis.
_ACTIVATIONS = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("act_batch", BATCH_AXES),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("act_classes", None),
)

# Small parameter dimensions that every preset keeps whole: rows of a learned
# position table, class logits, a flattened image patch, token types.
_UNSHARDED = (("pos_length", None), ("classes", None), ("patch", None), ("token_types", None))

RULE_PRESETS: dict[str, tuple[tuple[str, Any], ...]] = {
    # Pure data parallelism: every parameter replicated.
    "data": (("vocab", None), ("embed", None), ("heads", None), ("kv", None),
             ("mlp", None)) + _UNSHARDED + _ACTIVATIONS,
    # FSDP (ZeRO-3 style): parameters sharded over fsdp along the model width.
    "fsdp": (("vocab", None), ("embed", "fsdp"), ("heads", None), ("kv", None),
             ("mlp", None)) + _UNSHARDED + _ACTIVATIONS,
    # FSDP + tensor (Megatron) parallelism: heads, MLP and vocabulary over tensor.
    "fsdp_tensor": (("vocab", "tensor"), ("embed", "fsdp"), ("heads", "tensor"),
                    ("kv", None), ("mlp", "tensor")) + _UNSHARDED + _ACTIVATIONS,
}


def initialize_distributed(config) -> None:
  """Starts jax.distributed when config.distributed asks for it (before any device use)."""
  d = config.distributed
  if d.coordinator_address:
    jax.distributed.initialize(coordinator_address=d.coordinator_address,
                               num_processes=d.num_processes, process_id=d.process_id)
  elif d.auto:
    jax.distributed.initialize()


def logical_axis_rules(config) -> tuple[tuple[str, Any], ...]:
  """The preset named by config.logical_axis_rules, with config's overrides applied."""
  overrides = {name: (tuple(axes) if isinstance(axes, list) else axes)
               for name, axes in config.logical_axis_rule_overrides}
  preset = RULE_PRESETS[config.logical_axis_rules]
  rules = [(name, overrides.pop(name, axes)) for name, axes in preset]
  return tuple(rules) + tuple(overrides.items())


def make_mesh(config, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all), sized from config.mesh.

  On TPUs the devices are laid out along the physical torus; with several
  slices (mesh.dcn_data > 1) the data axis is slice-major, so only the
  data-parallel gradient reduction crosses the data-centre network.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = config_lib.mesh_shape(config, len(devices))
  slices = config.mesh.dcn_data
  if slices > 1 and hasattr(devices[0], "slice_index"):
    found = len({d.slice_index for d in devices})
    if found != slices:
      raise config_lib.ConfigError(f"config.mesh.dcn_data={slices}: the devices form {found} "
                                   "slice(s)")
    ici = (shape[0] // slices, *shape[1:])  # one slice's share of the mesh.
    device_array = mesh_utils.create_hybrid_device_mesh(
        ici, (slices, 1, 1), devices, allow_split_physical_axes=True)
  elif devices[0].platform == "tpu":
    device_array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  else:
    device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, config_lib.MESH_AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(config_lib.MESH_AXES))


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Batch arrays [batch, ...] of any rank (ids, labels, images): the first axis sharded
  as the rules map "batch", the others whole."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_batch_rows(batch_sharding: NamedSharding, global_batch_size: int) -> list[int]:
  """The global batch rows held by this process's devices, in increasing order.

  These are the rows this process must supply to `global_batch`.
  """
  index_map = batch_sharding.addressable_devices_indices_map((global_batch_size, 1))
  rows = set()
  for index in index_map.values():
    rows.update(range(global_batch_size)[index[0]])
  return sorted(rows)


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding
                 ) -> dict[str, jax.Array]:
  """Assembles each process's rows into global arrays with the batch sharding."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


def state_shardings(init_fn: Callable[..., Any], mesh: Mesh, rules, *args):
  """Shapes and shardings of `init_fn(*args)`'s result, without computing it.

  `init_fn` returns a pytree whose parameters are boxed in `nn.Partitioned`
  (logical names); the names and `rules` give each array's sharding. Returns
  (abstract unboxed tree, shardings).
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
  return nn.meta.unbox(abstract), shardings


def init_sharded(init_fn: Callable[..., Any], shardings, mesh: Mesh, rules, *args):
  """Runs `init_fn(*args)` so that every array is born sharded (and unboxed)."""
  def init_unboxed(*a):
    return nn.meta.unbox(init_fn(*a))

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    return jax.jit(init_unboxed, out_shardings=shardings)(*args)


def abstract_like(tree, shardings):
  """ShapeDtypeStructs with shardings, for restoring a checkpoint onto a mesh."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
