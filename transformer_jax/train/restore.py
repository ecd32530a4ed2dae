"""Where a run's state comes from: a compressed checkpoint, a resume, or fresh.

1. The workdir's latest checkpoint is the compress tool's (parameters only): fine-tune
   from its parameters as floats, with fresh optimizer state, counting on from its step.
2. The workdir has a readable checkpoint: resume from it (state, data position, metadata).
3. Fresh parameters, optionally partly taken from another run (config.init_from) or
   from a Hugging Face folder (pretrained/).

An adapter run (config.lora.rank > 0) builds its frozen base first, always as a fresh
run's parameters are built (2.'s source, 3.'s steps), and records the base's
fingerprint in its checkpoints; a resume checks that the base it rebuilt is the same.
"""

from __future__ import annotations

import contextlib
import sys

import jax

from transformer_jax import pretrained
from transformer_jax.adapters import lora
from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax.errors import CheckpointError
from transformer_jax.train.run import Run


def restore_or_init(config, run: Run, ckpt, writer, hf_folder=None):
  """(state, its checkpoint's metadata): the latest readable checkpoint, or fresh
  (optionally config.init_from) parameters and no metadata."""
  latest = ckpt.latest_step()
  if latest is not None and _is_compressed(ckpt, latest):
    return _from_compressed(config, run, ckpt, latest), {}
  adapter_start = None
  if run.programs.lora is not None:
    adapter_start, run.adapter_base = adapter_base(config, run.programs, run.init_rng, hf_folder)
  restored = ckpt.restore_latest(run.programs.abstract_state.replace(frozen=None))
  if restored is not None:
    state, metadata = _resume(run, ckpt, writer, *restored)
    if adapter_start is not None:
      _check_base(metadata, run.adapter_base, ckpt.directory)
      state = state.replace(frozen=adapter_start.frozen)
    return state, metadata
  if adapter_start is not None:
    return adapter_start, {}
  return _fresh(config, run, hf_folder), {}


def adapter_base(config, programs, rng, hf_folder):
  """(an adapter run's fresh state, its base's record): the model's parameters built as a
  fresh run's are (config.init_from, the Hugging Face folder) and fingerprinted (the
  record, saved in the checkpoints' metadata), then frozen as config.lora says, with
  fresh adapters."""
  params = _load_into(config, programs, programs.init_params(rng), hf_folder)
  adapters = {}
  if config.init_from.adapter:
    adapters, whole = _read_adapter(config, programs, params, hf_folder)
    params = _put(params, whole)
  source = config.init_from.hf or config.init_from.workdir or f"fresh (seed {config.seed})"
  record = {"source": source, "fingerprint": lora.fingerprint(params)}
  state = programs.adapt(params, rng)
  if adapters:
    state = state.replace(params=_put(state.params, {
        f"lora/{path}/{k}": v for path, ab in adapters.items() for k, v in ab.items()}))
    print(f"Initialised the adapters of {len(adapters)} of "
          f"{len(lora.flat_adapters(state.params))} kernels from {config.init_from.adapter}",
          flush=True)
  return state, record


def _read_adapter(config, programs, params, hf_folder):
  """config.init_from.adapter's adapters and whole modules, on our paths."""
  # pylint: disable=import-outside-toplevel
  from transformer_jax.adapters import peft
  from transformer_jax.pretrained import export
  offset, eos_id = 0, None
  if config.data.tokenizer_path.startswith("hf:"):
    from transformer_jax.data import hf_tokenizer
    tok = hf_tokenizer.load(config.data.tokenizer_path)
    offset, eos_id = tok.offset, tok.eos_id
  to_hf = export.state_dict_fn(hf_folder.architecture, programs.model_config,
                               hf_folder.vocab_size, offset, eos_id)
  shapes = {k: tuple(v.shape) for k, v in lora.flat(params).items()}
  return peft.read_adapter(config.init_from.adapter, to_hf, shapes, programs.lora,
                           list(programs.lora_targets))


def _put(tree, values: dict):
  """`tree` with the arrays at `values`' "/"-paths replaced, each on its old sharding."""
  flat = lora.flat(tree)
  for path, value in values.items():
    flat[path] = jax.device_put(value.astype(flat[path].dtype), flat[path].sharding)
  return lora.nested(flat)


def adapted_params(config, programs, trainable, metadata: dict, directory: str):
  """A trained adapter run's parameters for the tools: its base rebuilt (and checked
  against the checkpoint's fingerprint) beside the checkpoint's adapters."""
  hf_folder = pretrained.apply_to_config(config)
  with contextlib.redirect_stdout(sys.stderr):  # a tool's stdout is its output alone.
    start, base = adapter_base(config, programs, jax.random.key(config.seed), hf_folder)
  _check_base(metadata, base, directory)
  return lora.Adapted(frozen=start.frozen, trainable=trainable)


def _check_base(metadata: dict, base: dict, directory: str) -> None:
  saved = metadata.get("adapters", {}).get("base", {})
  if saved.get("fingerprint") not in (None, base["fingerprint"]):
    raise CheckpointError(
        f"the adapters in {directory} were trained on a base with fingerprint "
        f"{saved['fingerprint']} (from {saved.get('source')}); the base built now from "
        f"{base['source']} has fingerprint {base['fingerprint']}: the base's weights "
        "changed. Point config.init_from at the base the adapters were trained on.")


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
  return state.replace(params=_load_into(config, run.programs, state.params, hf_folder))


def _load_into(config, programs, params, hf_folder):
  """`params` with config.init_from.workdir's checkpoint's, and a Hugging Face folder's,
  put in."""
  source = config.init_from.workdir
  if source:
    params, taken = checkpoint_params.load_params(source, config.init_from.step, params,
                                                  config.init_from.params)
    total = len(jax.tree.leaves(params))
    print(f"Initialised {len(taken)} of {total} parameter arrays from {source}", flush=True)
  if hf_folder is not None:
    params, taken, fresh = pretrained.load_into(params, hf_folder, programs.model_config,
                                                config.data.tokenizer_path)
    print(f"Initialised {len(taken)} of {len(taken) + len(fresh)} parameter arrays from "
          f"{hf_folder.path}"
          + (f"; fresh: {', '.join(fresh)}" if fresh else ""), flush=True)
  return params
