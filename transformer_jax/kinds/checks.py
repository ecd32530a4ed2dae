"""The whole check of a run's config, before anything is read, built or compiled.

The generic fields (config/checks.py), then what the model kind's record says of its
data sources, decoders and own fields, then the mesh against the devices
(parallel/sharding.py). Each names the first bad field (ConfigError).
"""

from __future__ import annotations

import ml_collections

from transformer_jax.config.checks import OPTIONAL_DECODING, check_fields
from transformer_jax.errors import fail
from transformer_jax.kinds.base import ModelKind, get
from transformer_jax.parallel import sharding


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None,
             num_processes: int = 1) -> None:
  """Checks the config; raises ConfigError naming the first bad field.

  With `num_devices`, the mesh and the sharded sizes are checked against the devices too.
  """
  check_fields(config)
  kind = get(config.model.kind)  # an unknown kind: an error listing the registered ones.
  check_kind_fields(config, kind)
  kind.check_config(config)
  sharding.check_rules(config)
  if num_devices is not None:
    sharding.validate_devices(config, num_devices, num_processes)


def check_kind_fields(config: ml_collections.ConfigDict, kind: ModelKind) -> None:
  """The fields whose allowed values the kind's record gives."""
  if config.data.source not in kind.data_sources:
    fail("data.source", config.data.source, f"must be one of {tuple(kind.data_sources)}")
  if config.data.source == "files" and not config.data.train_files:
    fail("data.train_files", config.data.train_files,
         f"data.source='files' needs at least one file ({kind.file_format})")
  _check_position_table(config, kind)
  _check_best_metric(config, kind)
  if config.decoding.method not in kind.decode_methods:
    fail("decoding.method", config.decoding.method,
         f"is not offered for {kind.name} models (one of {kind.decode_methods})")
  for field, (off, what) in OPTIONAL_DECODING.items():
    value = config.decoding[field]
    if value != off and field not in kind.decoding_fields:
      fail(f"decoding.{field}", value,
           f"{kind.name} models do not read it (it {what}); leave it at {off!r}")


def _check_position_table(config, kind: ModelKind) -> None:
  """A learned position table holds the positions a batch row uses: max_target_length
  (plus a learned class vector), and max_predict_length for kinds that decode."""
  need = config.max_target_length + int(config.model.class_vector and not kind.decode)
  if kind.decode is not None:
    need = max(need, config.max_predict_length)
  if config.model.positions == "learned" and 0 < config.model.max_length < need:
    fail("model.max_length", config.model.max_length,
         f"the learned position table needs {need} rows for max_target_length="
         f"{config.max_target_length}"
         + (f" / max_predict_length={config.max_predict_length}" if kind.decode else ""))


def _check_best_metric(config, kind: ModelKind) -> None:
  """keep_best_checkpoints ranks by a metric the run logs at every evaluation."""
  logged = tuple(f"eval/{name}" for name in kind.eval_metrics(config))
  if config.best_checkpoint_metric not in logged:
    fail("best_checkpoint_metric", config.best_checkpoint_metric,
         f"a {kind.name!r} run logs {logged} at each evaluation (keep_best_checkpoints ranks "
         "checkpoints by one of them)")
