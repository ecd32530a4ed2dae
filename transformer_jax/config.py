"""Config defaults, up-front validation, and the derived model config.

`default_config()` holds every field with its default, in one place; the files
in `configs/` start from it and change what their job needs. `validate()`
runs before anything is built or compiled, and names the bad field.
"""

from __future__ import annotations

import json
import math
import re

import jax.numpy as jnp
import ml_collections

from transformer_jax.models.transformer import TransformerConfig

LR_SCHEDULES = ("rsqrt", "cosine", "linear", "constant")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
NORM_POSITIONS = ("pre", "post")
ACTIVATIONS = ("relu", "gelu", "silu")
# The data sources of each model kind ("files": the user's own files in the kind's format).
DATA_SOURCES = {"encoder_decoder": ("gettext", "files"), "decoder_lm": ("python_stdlib", "files"),
                "encoder_classifier": ("debian", "files"), "vit": ("mnist", "files")}
MESH_AXES = ("data", "fsdp", "tensor")
MODEL_KINDS = ("encoder_decoder", "decoder_lm", "encoder_classifier", "vit")
POSITIONS = ("sinusoidal", "learned", "rotary")
ATTENTION = ("xla", "dot_product")
POOLING = ("cls", "mean")
REMAT = ("none", "full", "dots")
DECODING_METHODS = ("greedy", "beam", "sample")
VOCAB_MULTIPLE = 128  # the model's vocabulary is padded up to a multiple of this.


class ConfigError(ValueError):
  """A config field has a bad value; the message names the field."""


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Loop (names as in the Flax examples).
  c.num_train_steps = 1000
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.checkpoint_every_seconds = 0.0  # also save when this much wall time passed; 0: off.
  c.max_checkpoints_to_keep = 3  # the latest N are kept ...
  c.keep_best_checkpoints = 0  # ... plus the best K by best_checkpoint_metric.
  c.best_checkpoint_metric = "eval/loss"
  c.best_checkpoint_mode = "min"  # min | max.
  # Start a new run from another run's parameters (optimizer and step fresh):
  # `workdir` of that run (or its checkpoints directory), `step` (-1: latest),
  # and `params`, a regex on parameter paths such as "encoder/.*" ("" = all
  # parameters whose shapes match).
  c.init_from = ml_collections.ConfigDict({"workdir": "", "step": -1, "params": ""})
  c.per_device_batch_size = 32
  # Rows of each global batch; 0: per_device_batch_size * devices. Set it to
  # keep batches (and so the data stream) the same when the device count changes.
  c.global_batch_size = 0
  c.max_target_length = 64  # packed length of source and target sequences.
  c.max_predict_length = 64  # longest decoded translation.
  c.num_eval_steps = -1  # validation batches per evaluation; -1: the whole split.
  c.num_predict_examples = -1  # test examples decoded at the end; -1: all.
  # Validation examples translated at every evaluation for eval/bleu and eval/chrf; 0: off.
  c.num_eval_bleu_examples = 0
  # The decoder of eval/bleu, test/bleu and the translate / generate tools:
  # greedy | beam (beam_size, alpha: GNMT length penalty) | sample (temperature,
  # top_k (0: off), top_p (1: off)).
  c.decoding = ml_collections.ConfigDict({
      "method": "greedy", "beam_size": 4, "alpha": 0.6, "temperature": 1.0, "top_k": 0,
      "top_p": 1.0})
  c.num_example_translations = 5
  # Optimizer and schedule.
  c.learning_rate = 2e-3
  c.warmup_steps = 200
  c.lr_schedule = "rsqrt"  # after warmup: rsqrt | cosine | linear | constant.
  c.adam_b1 = 0.9
  c.adam_b2 = 0.98
  c.adam_eps = 1e-9
  c.weight_decay = 0.0
  c.grad_clip_norm = 1.0  # 0 disables clipping.
  c.label_smoothing = 0.1
  # Parallelism. Within a slice, one of data / fsdp / tensor may be -1 (all
  # remaining devices). `dcn_data` is the number of slices (pods joined over the
  # data-centre network); the mesh's data axis then spans dcn_data * data devices.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, "dcn_data": 1})
  # A preset of transformer_jax.sharding.RULE_PRESETS: data | fsdp | fsdp_tensor.
  c.logical_axis_rules = "fsdp_tensor"
  # Entries that replace the preset's: ((logical name, mesh axis | tuple of mesh axes |
  # None), ...), e.g. (("vocab", None),) keeps the vocabulary unsharded.
  c.logical_axis_rule_overrides = ()
  # Multi-host: empty coordinator_address means one process, unless `auto` asks
  # jax.distributed.initialize() to detect the cluster (as on TPU VMs).
  c.distributed = ml_collections.ConfigDict({
      "coordinator_address": "", "num_processes": 1, "process_id": 0, "auto": False})
  # Model.
  c.model = ml_collections.ConfigDict()
  # encoder_decoder (translation) | decoder_lm (GPT-style LM) | encoder_classifier
  # (BERT-style text classifier) | vit (Vision Transformer).
  c.model.kind = "encoder_decoder"
  c.model.emb_dim = 256
  c.model.num_heads = 4
  c.model.qkv_dim = 256  # all heads together; head width = qkv_dim / num_heads.
  c.model.mlp_dim = 1024
  c.model.num_encoder_layers = 3
  c.model.num_decoder_layers = 3
  c.model.dropout_rate = 0.1
  c.model.attention_dropout_rate = 0.1
  c.model.norm_position = "pre"
  c.model.activation = "relu"
  c.model.logits_via_embedding = True
  c.model.dtype = "float32"
  c.model.remat = "none"  # none | full | dots: recompute activations to save memory.
  c.model.positions = "sinusoidal"  # sinusoidal | learned | rotary.
  # xla (einsum softmax) | dot_product (jax.nn.dot_product_attention, the entry point
  # of fused kernels; jax 0.10 runs its XLA version unless told otherwise; no
  # attention dropout).
  c.model.attention = "xla"
  c.model.pooling = "cls"  # classifiers: cls (class token) | mean (over real positions).
  c.model.patch_size = 4  # vit: square patches of this many pixels a side.
  c.model.num_classes = 0  # classifiers: 0 takes the number of labels in the data.
  # Data.
  c.data = ml_collections.ConfigDict()
  # encoder_decoder: gettext | files; decoder_lm: python_stdlib | files;
  # encoder_classifier: debian | files; vit: mnist | files.
  c.data.source = "gettext"
  c.data.source_lang = "en"
  c.data.target_lang = "de"
  c.data.locale_dirs = ("/usr/share/locale",)
  c.data.train_files = ()
  c.data.validation_files = ()
  c.data.test_files = ()
  c.data.validation_fraction = 0.03
  c.data.test_fraction = 0.03
  c.data.vocab_size = 8000
  c.data.tokenizer_path = ""  # empty: WORKDIR/tokenizer.model.
  c.data.num_packing_bins = 64
  c.data.min_class_examples = 100  # encoder_classifier: rarer labels are dropped.
  c.data.image_size = 28  # vit: images are image_size x image_size x num_channels.
  c.data.num_channels = 1
  return c


def from_json(path: str) -> ml_collections.ConfigDict:
  """A run's saved config.json (as train.py writes it) over today's defaults.

  Fields added since the run was made keep their defaults; a field this version
  does not know is an error that names it.
  """
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
  except OSError as e:
    raise ConfigError(f"cannot read the run's config {path}: {e.strerror}") from e
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path} is not valid JSON: {e}") from e
  config = default_config()

  def overlay(node, values, prefix):
    for key, value in values.items():
      if key not in node:
        raise ConfigError(f"{path}: unknown field config.{prefix}{key}")
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        overlay(node[key], value, f"{prefix}{key}.")
      else:
        node[key] = value
  overlay(config, saved, "")
  return config


def _fail(field: str, value, why: str):
  raise ConfigError(f"config.{field}={value!r}: {why}")


def _positive_int(config, field: str):
  value = _get(config, field)
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    _fail(field, value, "must be a positive integer")


def _get(config, field: str):
  node = config
  for part in field.split("."):
    if part not in node:
      raise ConfigError(f"config.{field} is missing")
    node = node[part]
  return node


def _one_of(config, field: str, choices):
  value = _get(config, field)
  if value not in choices:
    _fail(field, value, f"must be one of {tuple(choices)}")


def _fraction(config, field: str, low_open: bool = False):
  value = _get(config, field)
  if not isinstance(value, (int, float)) or value < 0 or value >= 1 or (low_open and value == 0):
    _fail(field, value, "must be a fraction in " + ("(0, 1)" if low_open else "[0, 1)"))


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None,
             num_processes: int = 1) -> None:
  """Checks the config; raises ConfigError naming the first bad field."""
  for f in ("num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
            "max_checkpoints_to_keep", "per_device_batch_size", "max_target_length",
            "max_predict_length", "model.emb_dim", "model.num_heads", "model.qkv_dim",
            "model.mlp_dim", "model.num_encoder_layers", "model.num_decoder_layers",
            "data.vocab_size", "data.num_packing_bins"):
    _positive_int(config, f)
  for f in ("warmup_steps", "checkpoint_every_seconds", "keep_best_checkpoints",
            "global_batch_size"):
    if _get(config, f) < 0:
      _fail(f, _get(config, f), "must be >= 0")
  _check_decoding(config)
  if config.num_eval_bleu_examples < 0:
    _fail("num_eval_bleu_examples", config.num_eval_bleu_examples, "must be >= 0 (0: off)")
  for f in ("num_eval_steps", "num_predict_examples"):
    v = _get(config, f)
    if v == 0 or v < -1:
      _fail(f, v, "must be positive, or -1 for all")
  if not config.learning_rate > 0:
    _fail("learning_rate", config.learning_rate, "must be > 0")
  if config.grad_clip_norm < 0:
    _fail("grad_clip_norm", config.grad_clip_norm, "must be >= 0 (0 disables clipping)")
  if config.weight_decay < 0:
    _fail("weight_decay", config.weight_decay, "must be >= 0")
  for f in ("label_smoothing", "adam_b1", "adam_b2", "model.dropout_rate",
            "model.attention_dropout_rate"):
    _fraction(config, f)
  _one_of(config, "lr_schedule", LR_SCHEDULES)
  _one_of(config, "model.dtype", DTYPES)
  _one_of(config, "model.norm_position", NORM_POSITIONS)
  _one_of(config, "model.activation", ACTIVATIONS)
  _one_of(config, "model.kind", MODEL_KINDS)
  _one_of(config, "data.source", DATA_SOURCES[config.model.kind])
  _one_of(config, "model.positions", POSITIONS)
  _one_of(config, "model.attention", ATTENTION)
  _one_of(config, "model.pooling", POOLING)
  _positive_int(config, "model.patch_size")
  _positive_int(config, "data.image_size")
  _positive_int(config, "data.num_channels")
  if config.model.num_classes < 0:
    _fail("model.num_classes", config.model.num_classes, "must be >= 0 (0: from the data)")
  if config.data.image_size % config.model.patch_size:
    _fail("model.patch_size", config.model.patch_size,
          f"must divide data.image_size={config.data.image_size}")
  if config.model.attention == "dot_product" and config.model.attention_dropout_rate > 0:
    _fail("model.attention_dropout_rate", config.model.attention_dropout_rate,
          "must be 0 with model.attention='dot_product' (it has no attention dropout)")
  _one_of(config, "model.remat", REMAT)
  _one_of(config, "best_checkpoint_mode", ("min", "max"))
  if config.init_from.params:
    try:
      re.compile(config.init_from.params)
    except re.error as e:
      _fail("init_from.params", config.init_from.params, f"is not a regex: {e}")
  if config.model.qkv_dim % config.model.num_heads:
    _fail("model.qkv_dim", config.model.qkv_dim,
          f"must divide by model.num_heads={config.model.num_heads}")
  _fraction(config, "data.validation_fraction")
  _fraction(config, "data.test_fraction")
  if config.data.source == "gettext" and (config.data.validation_fraction <= 0 or
                                          config.data.test_fraction <= 0):
    _fail("data.validation_fraction", config.data.validation_fraction,
          "gettext needs validation_fraction and test_fraction > 0")
  if config.data.validation_fraction + config.data.test_fraction >= 1:
    _fail("data.test_fraction", config.data.test_fraction,
          "validation_fraction + test_fraction must be < 1")
  if config.data.source == "files" and not config.data.train_files:
    _fail("data.train_files", config.data.train_files,
          "data.source='files' needs at least one TSV/JSONL file")
  if config.data.vocab_size < 300:
    _fail("data.vocab_size", config.data.vocab_size,
          "must be at least 300 (256 byte-fallback pieces + specials + words)")
  _positive_int(config, "mesh.dcn_data")
  _check_rules(config)
  validate_distributed(config)
  if num_devices is not None:
    validate_devices(config, num_devices, num_processes)


def _check_decoding(config) -> None:
  d = config.decoding
  _one_of(config, "decoding.method", DECODING_METHODS)
  _positive_int(config, "decoding.beam_size")
  if not d.alpha >= 0:
    _fail("decoding.alpha", d.alpha, "must be >= 0")
  if not d.temperature >= 0:
    _fail("decoding.temperature", d.temperature, "must be >= 0 (0: greedy)")
  if not isinstance(d.top_k, int) or d.top_k < 0:
    _fail("decoding.top_k", d.top_k, "must be an integer >= 0 (0: off)")
  if not 0 < d.top_p <= 1:
    _fail("decoding.top_p", d.top_p, "must be in (0, 1] (1: off)")


def _check_rules(config) -> None:
  from transformer_jax import sharding  # pylint: disable=import-outside-toplevel
  if config.logical_axis_rules not in sharding.RULE_PRESETS:
    _fail("logical_axis_rules", config.logical_axis_rules,
          f"must be one of {tuple(sharding.RULE_PRESETS)}")
  for entry in config.logical_axis_rule_overrides:
    ok = isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
    if not ok or any(a not in MESH_AXES for a in _as_axes(entry[1])):
      _fail("logical_axis_rule_overrides", entry,
            f"each entry must be (logical name, mesh axis or tuple of {MESH_AXES} or None)")


def _as_axes(rule_value) -> tuple:
  """A rule's mesh axes as a tuple: "tensor" -> ("tensor",), None -> ()."""
  return (rule_value,) if isinstance(rule_value, str) else tuple(rule_value or ())


def global_batch_size(config, num_devices: int) -> int:
  """config.global_batch_size, or per_device_batch_size * devices when it is 0."""
  return config.global_batch_size or config.per_device_batch_size * num_devices


def padded_vocab_size(vocab_size: int) -> int:
  """The model's vocabulary: the tokenizer's, rounded up so that it shards evenly."""
  return -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def validate_devices(config, num_devices: int, num_processes: int = 1) -> None:
  """Checks config.mesh and the sharded sizes against the devices.

  Runs once jax.distributed has started (the device count is known), and
  before anything is built or compiled.
  """
  shape = dict(zip(MESH_AXES, mesh_shape(config, num_devices)))
  if num_devices % num_processes:
    raise ConfigError(f"{num_devices} devices do not split over {num_processes} processes")
  from transformer_jax import sharding  # pylint: disable=import-outside-toplevel
  rules = dict(sharding.logical_axis_rules(config))
  m = config.model
  batch = global_batch_size(config, num_devices)
  sizes = {  # logical name -> (field, size)
      "embed": ("model.emb_dim", m.emb_dim),
      "mlp": ("model.mlp_dim", m.mlp_dim),
      "heads": ("model.num_heads", m.num_heads),
      "kv": ("model.qkv_dim / model.num_heads", m.qkv_dim // m.num_heads),
      "vocab": ("data.vocab_size (padded)", padded_vocab_size(config.data.vocab_size)),
      "batch": ("global_batch_size", batch),
  }
  if batch % num_processes:
    _fail("global_batch_size", batch, f"must divide over the {num_processes} processes")
  for name, (field, size) in sizes.items():
    axes = _as_axes(rules.get(name))
    shards = math.prod(shape[a] for a in axes)
    if size % shards:
      raise ConfigError(
          f"config.{field}={size} does not divide over the mesh axes {axes} "
          f"({shards} devices) that config.logical_axis_rules={config.logical_axis_rules!r} "
          f"maps '{name}' onto; config.mesh={shape}")


def validate_distributed(config) -> None:
  """Checks config.distributed; runs before jax.distributed is initialised."""
  d = config.distributed
  if d.coordinator_address:
    if ":" not in d.coordinator_address:
      _fail("distributed.coordinator_address", d.coordinator_address, "must be HOST:PORT")
    if not isinstance(d.num_processes, int) or d.num_processes < 1:
      _fail("distributed.num_processes", d.num_processes, "must be a positive integer")
    if not isinstance(d.process_id, int) or not 0 <= d.process_id < d.num_processes:
      _fail("distributed.process_id", d.process_id,
            f"must be in [0, distributed.num_processes={d.num_processes})")


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
      _fail(f"mesh.{axis}", size, "must be a positive integer or -1")
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


def model_config(config: ml_collections.ConfigDict, vocab_size: int,
                 num_classes: int = 0) -> TransformerConfig:
  """The frozen training-mode model config; derive eval/decode with .replace().

  `vocab_size` is the tokenizer's (0 for images); the model pads it to a
  multiple of VOCAB_MULTIPLE (the extra ids are never targets, and decoding
  drops them). `num_classes` (classifiers) is the data's, unless
  config.model.num_classes sets it.
  """
  m = config.model
  return TransformerConfig(
      vocab_size=padded_vocab_size(max(vocab_size, 1)),
      num_classes=m.num_classes or num_classes,
      positions=m.positions,
      max_length=max(config.max_target_length, config.max_predict_length) + 1,
      attention=m.attention,
      pooling=m.pooling,
      patch_size=m.patch_size,
      emb_dim=m.emb_dim,
      num_heads=m.num_heads,
      head_dim=m.qkv_dim // m.num_heads,
      mlp_dim=m.mlp_dim,
      num_encoder_layers=m.num_encoder_layers,
      num_decoder_layers=m.num_decoder_layers,
      dropout_rate=m.dropout_rate,
      attention_dropout_rate=m.attention_dropout_rate,
      norm_position=m.norm_position,
      activation=m.activation,
      logits_via_embedding=m.logits_via_embedding,
      dtype=DTYPES[m.dtype],
      remat=m.remat,
  )
