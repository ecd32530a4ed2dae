"""The compress tool's two operations: quantize a run, prune (and fine-tune) a run.

Each writes a new workdir OUTPUT that the translate/generate tools and train.py
load like any run: its config.json (the source's, with `quantization` /
`pruning` set to what was done), the source's tokenizer (and labels), and one
compressed checkpoint (integers and scales, non-zeros and bitmasks; see
`compress/stored.py`). Every option and the source run are checked before any work.
"""

from __future__ import annotations

import os
import shutil

import jax
import ml_collections
import numpy as np

from transformer_jax import config as config_lib, kinds
from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax.compress import quant, sparsity
from transformer_jax.kinds.task import read_labels
from transformer_jax.parallel import sharding
from transformer_jax.train import loop as trainer, programs as programs_lib, workdir as workdir_lib

SIDE_FILES = ("tokenizer.model", "tokenizer.json", "labels.json")  # copied along when present.
FINETUNE_DIR = "finetune"  # OUTPUT/finetune: the fine-tune's own run, removed when it ends.


def check_source(workdir: str) -> ml_collections.ConfigDict:
  """The source run's config; errors name the workdir when it holds no run or checkpoint."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise config_lib.ConfigError(f"--workdir={workdir!r}: no config.json (not a train.py workdir)")
  ckpts = os.path.join(workdir, "checkpoints")
  steps = [d for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
  if not steps:
    raise config_lib.ConfigError(f"--workdir={workdir!r}: no checkpoint in {ckpts}")
  config = config_lib.from_json(path)
  if config.lora.rank:
    raise config_lib.ConfigError(
        f"--workdir={workdir!r} is an adapter run (config.lora.rank={config.lora.rank}): "
        "the compress tool takes fully trained runs; export its merged weights "
        "(python -m transformer_jax.export_hf --merge), or train with config.lora.base_bits "
        "for an integer base")
  config.distributed.coordinator_address = ""
  return config


def check_output_folder(output: str, workdir: str) -> None:
  """OUTPUT must be new (or an interrupted fine-tune of the same command)."""
  if os.path.abspath(output) == os.path.abspath(workdir):
    raise config_lib.ConfigError(f"--output={output!r} is the source workdir; give a new folder")
  if os.path.exists(output) and not os.path.isdir(output):
    raise config_lib.ConfigError(f"--output={output!r} is a file")
  if os.path.isdir(os.path.join(output, "checkpoints")):
    raise config_lib.ConfigError(f"--output={output!r} already holds a run (checkpoints/); "
                                 "give a new folder")


def _write_output(workdir: str, output: str, config, step: int, params, names,
                  what: dict) -> dict:
  os.makedirs(output, exist_ok=True)
  for name in SIDE_FILES:
    if os.path.isfile(os.path.join(workdir, name)):
      shutil.copyfile(os.path.join(workdir, name), os.path.join(output, name))
  config.num_train_steps = max(config.num_train_steps, step)
  workdir_lib.write_config(config, output)
  spec = checkpoint_params.save_compressed(os.path.join(output, "checkpoints"), step, params, names,
                                    {"compressed_from": os.path.abspath(workdir), **what})
  return spec


def _load(workdir: str, config, step: int = -1):
  """(params as floats, step, logical names, programs) of a run, without its data."""
  progs = programs_lib.build(config, sharding.make_mesh(config),
                             _vocab_size(workdir, config), config.model.num_classes)
  with progs.context():
    params, step = checkpoint_params.restore_params(workdir, step, progs.abstract_state.params)
  return quant.materialize(params), step, progs.logical_names(), progs


def _vocab_size(workdir: str, config) -> int:
  from transformer_jax import kinds  # pylint: disable=import-outside-toplevel
  if not kinds.get(config.model.kind).uses_vocab:
    return 0
  from transformer_jax.data.hf_tokenizer import open_tokenizer  # pylint: disable=import-outside-toplevel
  return open_tokenizer(config.data.tokenizer_path or
                        os.path.join(workdir, "tokenizer.model")).vocab_size


def _num_classes(workdir: str, config) -> None:
  labels = read_labels(workdir) if config.model.num_classes == 0 else None
  if labels is not None:
    config.model.num_classes = len(labels)


def quantize(workdir: str, output: str, bits: int, activation_bits: int = 0,
             step: int = -1) -> dict:
  """OUTPUT: the run's weights as `bits`-bit integers, one scale per output channel."""
  config = check_source(workdir)
  config.quantization.bits, config.quantization.activation_bits = bits, activation_bits
  kinds.validate(config)
  check_output_folder(output, workdir)
  _num_classes(workdir, config)
  params, step, names, _ = _load(workdir, config, step)
  qparams = jax.jit(lambda p: quant.quantize_tree(p, names, bits))(params)
  return _write_output(workdir, output, config, step, qparams, names,
                       {"quantized_bits": bits})


def prune(workdir: str, output: str, target: float, finetune_steps: int = 0,
          scope: str = "layer", structure: str = "none", bits: int = 0,
          learning_rate: float = 0.0, step: int = -1) -> dict:
  """OUTPUT: the run pruned to `target` sparsity by magnitude (one shot), then fine-tuned
  `finetune_steps` steps with the masks held (train.py in OUTPUT/finetune, which a
  re-run of the same command resumes), optionally quantized to `bits` after."""
  config = check_source(workdir)
  p = config.pruning
  p.sparsity, p.scope, p.structure, p.start_step, p.end_step = target, scope, structure, 0, 0
  if finetune_steps < 0:
    raise config_lib.ConfigError(f"--finetune_steps={finetune_steps}: must be >= 0")
  if learning_rate < 0:
    raise config_lib.ConfigError(f"--learning_rate={learning_rate}: must be >= 0 (0: a "
                                 "quarter of the run's)")
  config.quantization.bits = bits
  kinds.validate(config)
  check_output_folder(output, workdir)
  _num_classes(workdir, config)
  params, step, names, _ = _load(workdir, config, step)
  if finetune_steps:
    params = _finetune(workdir, output, config, step, finetune_steps, learning_rate)
    step += finetune_steps
  masks = jax.jit(lambda q: sparsity.magnitude_masks(q, names, target, scope, structure))(params)
  params = jax.tree.map(lambda x, m: np.where(np.asarray(m), np.asarray(x), 0).astype(x.dtype),
                        params, masks)
  if bits:
    params = jax.jit(lambda q: quant.quantize_tree(q, names, bits))(params)
  spec = _write_output(workdir, output, config, step, params, names,
                       {"sparsity": target, "finetune_steps": finetune_steps})
  shutil.rmtree(os.path.join(output, FINETUNE_DIR), ignore_errors=True)
  return spec


def _finetune(workdir: str, output: str, config, step: int, steps: int,
              learning_rate: float):
  """Trains the pruned weights `steps` steps in OUTPUT/finetune; returns its last params."""
  ft = config_lib.from_json(os.path.join(workdir, "config.json"))
  ft.update_from_flattened_dict({
      "pruning.sparsity": config.pruning.sparsity, "pruning.scope": config.pruning.scope,
      "pruning.structure": config.pruning.structure, "pruning.start_step": 0,
      "pruning.end_step": 0, "quantization.bits": config.quantization.bits,
      "init_from.workdir": os.path.abspath(workdir), "init_from.step": step,
      "num_train_steps": steps, "warmup_steps": max(steps // 10, 1),
      "lr_schedule": "cosine", "learning_rate": learning_rate or config.learning_rate / 4,
      "eval_every_steps": steps, "checkpoint_every_steps": steps, "log_every_steps":
      min(config.log_every_steps, steps), "keep_best_checkpoints": 0,
      "model.num_classes": config.model.num_classes})
  own_tokenizer = os.path.join(os.path.abspath(workdir), "tokenizer.model")
  if not ft.data.tokenizer_path and os.path.isfile(own_tokenizer):
    ft.data.tokenizer_path = own_tokenizer
  ft.distributed.coordinator_address = ""
  where = os.path.join(output, FINETUNE_DIR)
  os.makedirs(where, exist_ok=True)
  trainer.train_and_evaluate(ft, where)
  progs = programs_lib.build(ft, sharding.make_mesh(ft), _vocab_size(workdir, ft),
                             ft.model.num_classes)
  with progs.context():
    params, _ = checkpoint_params.restore_params(where, -1, progs.abstract_state.params)
  if os.path.isfile(os.path.join(where, "metrics.jsonl")):
    shutil.copyfile(os.path.join(where, "metrics.jsonl"),
                    os.path.join(output, "finetune_metrics.jsonl"))
  return quant.materialize(params)
