"""Device mesh, logical axis rules, born-sharded state and global batches.

Models name their axes logically ("embed", "mlp", "act_batch", ...); the rules
chosen in the config map those names onto the mesh axes ("data", "fsdp",
"tensor"). The mesh's shape comes from config.mesh (`mesh_shape`), and
`validate_devices` checks it, and every sharded size, against the devices
before anything is built. Nothing here knows about a particular model kind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from transformer_jax.errors import ConfigError, fail
from transformer_jax.models.config import padded_vocab_size

MESH_AXES = ("data", "fsdp", "tensor")
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
    ("act_kv_heads", "tensor"),
    ("act_kv", None),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("act_classes", None),
)

# Small parameter dimensions that every preset keeps whole: rows of a learned
# position table, class logits, a flattened image patch, token types.
_UNSHARDED = (("pos_length", None), ("classes", None), ("patch", None), ("token_types", None),
              ("layers", None))  # the stacked axis of scanned layers (model.scan_layers).

RULE_PRESETS: dict[str, tuple[tuple[str, Any], ...]] = {
    # Pure data parallelism: every parameter replicated.
    "data": (("vocab", None), ("embed", None), ("heads", None), ("kv_heads", None),
             ("kv", None), ("mlp", None)) + _UNSHARDED + _ACTIVATIONS,
    # FSDP (ZeRO-3 style): parameters sharded over fsdp along the model width.
    "fsdp": (("vocab", None), ("embed", "fsdp"), ("heads", None), ("kv_heads", None),
             ("kv", None), ("mlp", None)) + _UNSHARDED + _ACTIVATIONS,
    # FSDP + tensor (Megatron) parallelism: heads, MLP and vocabulary over tensor (the
    # key/value heads of grouped-query attention too: as many as tensor devices at least).
    "fsdp_tensor": (("vocab", "tensor"), ("embed", "fsdp"), ("heads", "tensor"),
                    ("kv_heads", "tensor"), ("kv", None), ("mlp", "tensor"))
                   + _UNSHARDED + _ACTIVATIONS,
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


def check_rules(config) -> None:
  """config.logical_axis_rules names a preset; each override maps a name onto mesh axes."""
  if config.logical_axis_rules not in RULE_PRESETS:
    fail("logical_axis_rules", config.logical_axis_rules, f"must be one of {tuple(RULE_PRESETS)}")
  for entry in config.logical_axis_rule_overrides:
    ok = isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
    if not ok or any(a not in MESH_AXES for a in rule_axes(entry[1])):
      fail("logical_axis_rule_overrides", entry,
           f"each entry must be (logical name, mesh axis or tuple of {MESH_AXES} or None)")


def rule_axes(rule_value) -> tuple:
  """A rule's mesh axes as a tuple: "tensor" -> ("tensor",), None -> ()."""
  return (rule_value,) if isinstance(rule_value, str) else tuple(rule_value or ())


def global_batch_size(config, num_devices: int) -> int:
  """config.global_batch_size, or per_device_batch_size * devices when it is 0."""
  return config.global_batch_size or config.per_device_batch_size * num_devices


def mesh_shape(config, num_devices: int) -> tuple[int, int, int]:
  """The (data, fsdp, tensor) mesh shape; data spans all slices (mesh.dcn_data)."""
  data, fsdp, tensor = slice_mesh_shape(config, num_devices)
  return (config.mesh.dcn_data * data, fsdp, tensor)


def slice_mesh_shape(config, num_devices: int) -> tuple[int, int, int]:
  """Resolves config.mesh (one axis may be -1) against the devices of one slice."""
  sizes = [config.mesh[a] for a in MESH_AXES]
  described = {**dict(zip(MESH_AXES, sizes)), "dcn_data": config.mesh.dcn_data}
  for axis, size in zip(MESH_AXES, sizes):
    if not isinstance(size, int) or isinstance(size, bool) or size == 0 or size < -1:
      fail(f"mesh.{axis}", size, "must be a positive integer or -1")
  slices = config.mesh.dcn_data
  if not isinstance(slices, int) or slices < 1 or num_devices % slices:
    raise ConfigError(f"config.mesh={described}: dcn_data={slices} slices do not divide "
                      f"the {num_devices} devices")
  per_slice = num_devices // slices
  if sizes.count(-1) > 1:
    raise ConfigError(f"config.mesh={described}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if per_slice % known:
      raise ConfigError(f"config.mesh={described}: the fixed axes ({known}) do not divide "
                        f"the {per_slice} devices per slice")
    sizes[sizes.index(-1)] = per_slice // known
  if math.prod(sizes) != per_slice:
    raise ConfigError(f"config.mesh={described}: data * fsdp * tensor is {math.prod(sizes)}, "
                      f"but there are {per_slice} devices per slice ({num_devices} devices, "
                      f"{slices} slice(s))")
  return tuple(sizes)


def validate_devices(config, num_devices: int, num_processes: int = 1) -> None:
  """Checks config.mesh and the sharded sizes against the devices.

  Runs once jax.distributed has started (the device count is known), and
  before anything is built or compiled.
  """
  shape = dict(zip(MESH_AXES, mesh_shape(config, num_devices)))
  if num_devices % num_processes:
    raise ConfigError(f"{num_devices} devices do not split over {num_processes} processes")
  rules = dict(logical_axis_rules(config))
  m = config.model
  batch = global_batch_size(config, num_devices)
  accum = config.gradient_accumulation_steps
  if batch % accum:
    fail("gradient_accumulation_steps", accum, f"must divide the global batch of {batch} rows")
  sizes = {  # logical name -> (field, size)
      "embed": ("model.emb_dim", m.emb_dim),
      "mlp": ("model.mlp_dim", m.mlp_dim),
      "heads": ("model.num_heads", m.num_heads),
      "kv_heads": ("model.num_kv_heads", m.num_kv_heads or m.num_heads),
      "kv": ("model.qkv_dim / model.num_heads", m.qkv_dim // m.num_heads),
      "vocab": ("data.vocab_size (padded)", padded_vocab_size(config.data.vocab_size)),
      "batch": ("global_batch_size / gradient_accumulation_steps" if accum > 1 else
                "global_batch_size", batch // accum),
  }
  if batch % num_processes:
    fail("global_batch_size", batch, f"must divide over the {num_processes} processes")
  for name, (field, size) in sizes.items():
    axes = rule_axes(rules.get(name))
    shards = math.prod(shape[a] for a in axes)
    if size % shards:
      raise ConfigError(
          f"config.{field}={size} does not divide over the mesh axes {axes} "
          f"({shards} devices) that config.logical_axis_rules={config.logical_axis_rules!r} "
          f"maps '{name}' onto; config.mesh={shape}")


def make_mesh(config, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all), sized from config.mesh.

  On TPUs the devices are laid out along the physical torus; with several
  slices (mesh.dcn_data > 1) the data axis is slice-major, so only the
  data-parallel gradient reduction crosses the data-centre network.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(config, len(devices))
  slices = config.mesh.dcn_data
  if slices > 1 and hasattr(devices[0], "slice_index"):
    found = len({d.slice_index for d in devices})
    if found != slices:
      raise ConfigError(f"config.mesh.dcn_data={slices}: the devices form {found} "
                                   "slice(s)")
    ici = (shape[0] // slices, *shape[1:])  # one slice's share of the mesh.
    device_array = mesh_utils.create_hybrid_device_mesh(
        ici, (slices, 1, 1), devices, allow_split_physical_axes=True)
  elif devices[0].platform == "tpu":
    device_array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  else:
    device_array = np.asarray(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


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
