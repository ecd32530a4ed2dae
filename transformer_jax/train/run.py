"""One run's parts, built once: mesh, the kind's task, the compiled programs.

`Run` is also the `kinds.task.Evaluator` that a task's evaluation sees. The loop
that uses it is in loop.py.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from transformer_jax import kinds
from transformer_jax.metrics import summaries
from transformer_jax.observe import flops, timing
from transformer_jax.parallel import memory, sharding
from transformer_jax.train import programs as programs_lib


def sum_metrics(metrics_list):
  return jax.tree.map(lambda *xs: sum(xs), *metrics_list)


class Run:
  """Everything built once per run: mesh, the kind's task, compiled programs.

  It is the `kinds.task.Evaluator` that the task sees: eval sums, decoding,
  batch sizes and whether this process prints.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               phases: timing.Phases | None = None):
    self.config, self.workdir = config, workdir
    self.kind = kinds.get(config.model.kind)
    self.primary = jax.process_index() == 0
    self.mesh = sharding.make_mesh(config)
    phases = phases or timing.Phases()
    with phases.time("data"):
      self.task = self.kind.task(config, workdir, self.primary)
    with phases.time("build"):
      self.programs = self._build_programs()
    p = self.programs
    self.global_batch_size = p.global_batch_size
    self.local_batch_size = len(p.rows)
    with phases.time("data"):
      self.train_iter = self.train_stream(config.seed)
      self.eval_batches = self.task.eval_batches(
          batch_size=self.local_batch_size, process_index=jax.process_index(),
          process_count=jax.process_count())
    if config.num_eval_steps > 0:
      self.eval_batches = self.eval_batches[:config.num_eval_steps]
    self.init_rng = jax.random.key(config.seed)
    # train/mfu: model FLOPs per second over the chips' peak (on a CPU, its measured
    # f32 matmul rate); None where either is unknown.
    with phases.time("build"):
      peak = flops.peak_flops() if self.programs.train_flops else None
    self.peak_flops = peak[0] if peak else None
    self.peak_name = peak[1] if peak else None
    # The compiled train step and XLA's account of its memory (compile_train_step).
    self.train_step, self.footprint = self.programs.train_step, None
    # An adapter run's base: {"source", "fingerprint"} (train/restore.py), else None.
    self.adapter_base = None

  def _build_programs(self) -> programs_lib.Programs:
    return programs_lib.build(self.config, self.mesh, self.task.vocab_size,
                              self.task.num_classes,
                              getattr(self.task, "decode_kwargs", dict)())

  def compile_train_step(self) -> None:
    """Compiles the train step before any state exists and checks that it fits in a
    device's memory (memory.py); the loop then runs this compiled program."""
    p, config = self.programs, self.config
    try:
      compiled = p.train_step.lower(p.abstract_state, p.batch_specs()).compile()
    except Exception as e:  # pylint: disable=broad-except
      if memory.is_out_of_memory(e):  # a compiler that refuses it (TPU, GPU).
        raise memory.from_xla(e, config) from None
      raise
    self.footprint = memory.Footprint.of(compiled)
    memory.check_fits(self.footprint, memory.per_device_bytes(p.abstract_state),
                      memory.device_limit(config.memory_limit_mib), config,
                      frozen_bytes=memory.per_device_bytes(p.abstract_state.frozen))
    self.train_step = compiled

  def train_stream(self, seed: int):
    return self.task.train_stream(global_batch_size=self.global_batch_size,
                                  rows=self.programs.rows, seed=seed)

  def even_out(self, batches: list) -> list:
    """Every process must run the same number of eval steps (collectives): the ones
    with fewer batches add all-padding batches, which weigh nothing."""
    n = len(batches)
    if jax.process_count() > 1:
      n = int(multihost_utils.process_allgather(np.array(n)).max())
    return batches + [self.programs.empty_batch()] * (n - len(batches))

  def restore_data(self, data_state: dict, step: int) -> None:
    """Continues the saved streams; with another global batch size, starts fresh ones."""
    try:
      self.train_iter.set_state(data_state)
    except ValueError as e:
      print(f"warning: {e}: the data streams restart in a new order (seed {self.config.seed} "
            f"+ step {step}); examples of the interrupted epoch may repeat or be skipped",
            flush=True)
      self.train_iter = self.train_stream(self.config.seed + step)

  def global_batch(self, local_batch):
    return self.programs.global_batch(local_batch)

  def init_state(self):
    return self.programs.init_state(self.init_rng)

  def metadata(self) -> dict:
    out = {"model": {"kind": self.kind.name,
                     **{k: str(v) for k, v in vars(self.programs.model_config).items()}},
           "mesh": dict(self.mesh.shape), "process_count": jax.process_count(),
           "global_batch_size": self.global_batch_size}
    if self.adapter_base is not None:  # an adapter run: where its frozen base came from.
      out["adapters"] = {"base": self.adapter_base}
    return out

  # ------------------------------------------------------------- kinds.task.Evaluator

  def eval_sums(self, params, local_batches) -> dict:
    """Summed eval-step metrics over local batches (evened out across processes)."""
    sums = None
    for batch in self.even_out(list(local_batches)):
      m = self.programs.eval_step(params, self.global_batch(batch))
      sums = m if sums is None else sum_metrics([sums, m])
    return jax.device_get(sums) if sums is not None else {}

  def decode(self, params, ids_BL: np.ndarray, rng: jax.Array) -> np.ndarray:
    return self.programs.decode_ids(params, ids_BL, rng)

  # -------------------------------------------------------------

  def evaluate(self, params) -> dict[str, float]:
    """The eval/* metrics that the kind's record lists, over the validation batches."""
    sums = self.eval_sums(params, self.eval_batches)
    if not sums:
      return {}
    names = self.kind.eval_metrics(self.config)
    summary = summaries.summarize(sums)
    out = {k: summary[k] for k in names if k in summary}
    out.update(self.task.extra_eval(self, params))
    # The record's list is a promise (config validation checks best_checkpoint_metric
    # against it): what is logged must be exactly what it lists.
    if set(out) != set(names):
      raise RuntimeError(
          f"the {self.kind.name!r} run logs eval metrics {sorted(out)}, but its record's "
          f"eval_metrics lists {sorted(names)}")
    return out

  def describe(self, num_params: int, num_frozen: int = 0) -> str:
    """One line: kind, size (an adapter run's trainable and frozen parameters), batch
    and mesh."""
    sizes = (f"{self.task.num_classes} classes" if self.kind.uses_classes else
             f"vocabulary {self.task.vocab_size}")
    shapes: dict[str, list[str]] = {}  # a row's shape -> the features of that shape.
    for k, s in self.programs.batch_shapes.items():
      if s.shape[1:] and not k.endswith(("_segment_ids", "_positions")):
        shapes.setdefault("x".join(map(str, s.shape[1:])), []).append(k)
    rows = "; ".join(f"{shape} ({', '.join(keys)})" for shape, keys in shapes.items())
    size = f"{num_params:,} parameters"
    if self.programs.lora is not None:
      size = (f"{num_params:,} trainable parameters (LoRA rank {self.programs.lora.rank}) "
              f"+ {num_frozen:,} frozen")
    line = (f"Model ({self.kind.name}): {size}; {sizes}; global batch "
            f"{self.global_batch_size} x {rows}; mesh {dict(self.mesh.shape)}")
    if self.peak_flops:
      line += f"\ntrain/mfu against {self.peak_flops / 1e9:,.0f} GFLOP/s, {self.peak_name}"
    return line
