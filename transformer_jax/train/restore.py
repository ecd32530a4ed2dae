"""Where a run's state comes from: a compressed checkpoint, a resume, or fresh.

1. The workdir's latest checkpoint is the compress tool's (parameters only): fine-tune
   from its parameters as floats, with fresh optimizer state, counting on from its step.
2. The workdir has a readable checkpoint: resume from it (state, data position, metadata).
3. Fresh parameters, optionally partly taken from another run (config.init_from) or
   from a Hugging Face folder (pretrained/).
"""

from __future__ import annotations

import jax

from transformer_jax import pretrained
from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax.train.run import Run


def restore_or_init(config, run: Run, ckpt, writer, hf_folder=None):
  """(state, its checkpoint's metadata): the latest readable checkpoint, or fresh
  (optionally config.init_from) parameters and no metadata."""
  latest = ckpt.latest_step()
  if latest is not None and _is_compressed(ckpt, latest):
    return _from_compressed(config, run, ckpt, latest), {}
  restored = ckpt.restore_latest(run.programs.abstract_state)
  if restored is not None:
    return _resume(run, ckpt, writer, *restored)
  return _fresh(config, run, hf_folder), {}


def _is_compressed(ckpt, step: int) -> bool:
  try:
    return "compression" in ckpt.metadata(step)
  except Exception:  # pylint: disable=broad-except
    return False  # unreadable: restore_latest names it and falls back.


def _from_compressed(config, run: Run, ckpt, step: int):
  """A compressed checkpoint is fine-tuned from: its parameters as floats, fresh
  optimizer state, the step counted on."""
  state = run.init_state()
  params, _ = checkpoint_params.load_params(ckpt.directory, step, state.params)
  run.train_iter = run.train_stream(config.seed + step)  # no data position saved.
  print(f"Fine-tuning from the compressed checkpoint at step {step} in {ckpt.directory} "
        "(parameters as floats, fresh optimizer state)", flush=True)
  return state.replace(params=params, step=jax.numpy.asarray(step, state.step.dtype))


def _resume(run: Run, ckpt, writer, step: int, state, data_state: dict, metadata: dict):
  run.restore_data(data_state, step)
  writer.truncate_after(step)  # steps logged after the checkpoint will be logged again.
  print(f"Resuming from checkpoint at step {step} in {ckpt.directory}", flush=True)
  return state, metadata


def _fresh(config, run: Run, hf_folder):
  """Fresh parameters; those of config.init_from.workdir's checkpoint, and of a Hugging
  Face folder, put in."""
  state = run.init_state()
  source = config.init_from.workdir
  if source:
    params, taken = checkpoint_params.load_params(source, config.init_from.step, state.params,
                                                  config.init_from.params)
    state = state.replace(params=params)
    total = len(jax.tree.leaves(state.params))
    print(f"Initialised {len(taken)} of {total} parameter arrays from {source}", flush=True)
  if hf_folder is not None:
    params, taken, fresh = pretrained.load_into(state.params, hf_folder,
                                                run.programs.model_config,
                                                config.data.tokenizer_path)
    state = state.replace(params=params)
    print(f"Initialised {len(taken)} of {len(taken) + len(fresh)} parameter arrays from "
          f"{hf_folder.path}"
          + (f"; fresh: {', '.join(fresh)}" if fresh else ""), flush=True)
  return state
