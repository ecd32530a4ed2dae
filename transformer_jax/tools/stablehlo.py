"""A run's inference function as StableHLO (jax.export), to run without this package:
`python -m transformer_jax.export_hf --workdir=W --format=stablehlo --output=DIR`.

DIR holds, per job of the run's kind, `<job>.stablehlo` (jax.export's serialisation: the
function with its batch size symbolic), `params.npz` (the parameters under their paths,
"encoder/layer_0/mlp/wi"), `tokenizer.model` (sentencepiece), `export.json` (the jobs,
input width, labels) and `load.py`: a loader that needs only jax, numpy and sentencepiece
and gives the tools' outputs (`python DIR/load.py < lines`).

  translate  encoder + cached decoding (the run's config.decoding)   ids [b, L] -> ids [b, T]
  generate   a decoder LM continuing prompts (the run's decoding)    ids [b, T] -> ids [b, T]
  embed      mean-pooled, L2-normalised encoder output (embed tool)  ids [b, L] -> [b, D]
  classify   class probabilities                                      ids [b, L] -> [b, C]

The decoders take the batch's index too (sampling folds it into the run's seed, as the
tools do). Runs with a Hugging Face tokenizer and speech runs are not exported (their ids
and features need this package's code).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from transformer_jax.errors import BadInput
from transformer_jax.models.classifier import sentence_embedding

LOADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stablehlo_loader.py")


def jobs_of(kind) -> tuple[str, ...]:
  """The jobs a kind's record exports."""
  jobs = tuple(j for j in ("translate", "generate") if kind.decode_tool == j)
  if kind.uses_vocab and kind.embeds:
    jobs += ("embed",)
  if kind.uses_vocab and kind.uses_classes:
    jobs += ("classify",)
  return jobs


def _functions(run, jobs, dtypes) -> dict:
  """{job: (function of (float32 params, ids[, batch index]), its input width)}."""
  programs, config = run.programs, run.config
  model = programs.kind.model(programs.model_config.replace(deterministic=True))
  class_vector = programs.model_config.class_vector

  def typed(params32):  # the parameters as the model computes with them.
    return jax.tree.map(lambda x, d: x.astype(d), params32, dtypes)

  def decode(params32, ids, batch_index):
    rng = jax.random.fold_in(jax.random.key(config.seed), batch_index)
    return programs.decode_fn(typed(params32), ids, rng)

  def embed(params32, ids_BL):
    hidden_BLD = model.apply({"params": typed(params32)}, ids_BL, return_hidden=True)
    return sentence_embedding(hidden_BLD, ids_BL, class_vector)

  def classify(params32, ids_BL):
    logits = model.apply({"params": typed(params32)},
                         **programs.kind.model_inputs({"inputs": ids_BL}))
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  widths = {"translate": config.max_target_length, "generate": config.max_predict_length,
            "embed": config.max_target_length, "classify": config.max_target_length}
  fns = {"translate": decode, "generate": decode, "embed": embed, "classify": classify}
  return {j: (fns[j], widths[j]) for j in jobs}


def export(run, workdir: str, output: str, labels) -> str:
  """Writes the export folder (see the module's doc); returns a one-line summary."""
  from transformer_jax.data.hf_tokenizer import HfTokenizer  # pylint: disable=import-outside-toplevel
  import flax  # pylint: disable=import-outside-toplevel
  kind = run.programs.kind
  jobs = jobs_of(kind)
  if not jobs:
    raise BadInput(f"--format=stablehlo: the run in {workdir!r} is a {kind.name!r} model; "
                   "text decoders, embedders and classifiers are exported")
  if isinstance(run.tokenizer, HfTokenizer):
    raise BadInput(f"--format=stablehlo: the run in {workdir!r} has a Hugging Face tokenizer, "
                   "whose ids the loader does not reproduce yet; sentencepiece runs export")
  params = jax.device_get(flax.linen.unbox(run.programs.merged(run.params)))
  dtypes = jax.tree.map(lambda x: np.dtype(x.dtype), params)
  params32 = jax.tree.map(lambda x: np.asarray(x, np.float32)
                          if jnp.issubdtype(x.dtype, jnp.floating) else np.asarray(x), params)
  os.makedirs(output, exist_ok=True)
  if os.listdir(output):
    raise BadInput(f"--output={output!r} is not empty")
  t0 = time.perf_counter()
  (b,) = jax.export.symbolic_shape("b")
  sizes = {}
  for job, (fn, width) in _functions(run, jobs, dtypes).items():
    args = [params32, jax.ShapeDtypeStruct((b, width), jnp.int32)]
    if job in ("translate", "generate"):
      args.append(jax.ShapeDtypeStruct((), jnp.int32))
    blob = jax.export.export(jax.jit(fn))(*args).serialize()
    with open(os.path.join(output, f"{job}.stablehlo"), "wb") as f:
      f.write(blob)
    sizes[job] = len(blob)
  flat = traverse_util.flatten_dict(params32, sep="/")
  np.savez(os.path.join(output, "params.npz"), **flat)
  shutil.copy(os.path.join(workdir, "tokenizer.model"), os.path.join(output, "tokenizer.model"))
  meta = {"format": "transformer_jax stablehlo", "kind": kind.name, "step": run.step,
          "jobs": list(jobs), "input_length": run.config.max_target_length,
          "output_length": run.config.max_predict_length, "pad_id": 0, "eos_id": 1,
          "batch_size": run.programs.global_batch_size,
          "vocab_size": run.tokenizer.vocab_size, "labels": labels,
          "decoding": dict(run.config.decoding), "jax": jax.__version__}
  with open(os.path.join(output, "export.json"), "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  shutil.copy(LOADER, os.path.join(output, "load.py"))
  total = sum(os.path.getsize(os.path.join(output, n)) for n in os.listdir(output))
  return (f"wrote {output}: {', '.join(f'{j}.stablehlo ({sizes[j] / 1024:.0f} KiB)' for j in jobs)}"
          f", params.npz ({len(flat)} arrays), {total / 2**20:.1f} MiB in all, from {workdir} "
          f"step {run.step} in {time.perf_counter() - t0:.1f}s")
