"""A trained run loaded for decoding: config, tokenizer, parameters and the decode program.

The `translate`, `generate` and `transcribe` tools use it. The run's own config.json (written
by train.py) rebuilds the model; the tools' options replace `config.decoding`.
The run's mesh is kept when it fits the devices here; otherwise decoding runs
data-parallel over all of them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from transformer_jax import config as config_lib, kinds
from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax.compress import quant
from transformer_jax.data.hf_tokenizer import open_tokenizer
from transformer_jax.data.tokenizer import Tokenizer
from transformer_jax.decode import lexicon, placeholders, prompted
from transformer_jax.kinds.language_model import pairs as lm_pairs
from transformer_jax.kinds.task import prompt_batch, read_labels, tokenizer_path
from transformer_jax.kinds.translation import pipeline
from transformer_jax.parallel import sharding
from transformer_jax.train import programs as programs_lib, restore


@dataclasses.dataclass
class LoadedRun:
  config: ml_collections.ConfigDict
  tokenizer: Tokenizer
  programs: programs_lib.Programs
  params: object
  step: int
  prompt_template: str = ""  # a language model's of prompted pairs (kinds: prompt_template).

  def decode(self, ids_BL: np.ndarray, batch_index: int) -> np.ndarray:
    """The decode program on one global batch of ids; the rng folds in `batch_index`."""
    rng = jax.random.fold_in(jax.random.key(self.config.seed), batch_index)
    return self.programs.decode_ids(self.params, ids_BL, rng)


def load_run(workdir: str, *, tool: str, step: int = -1,
             decoding: dict | None = None, batch_size: int = 0,
             max_length: int = 0, seed: int | None = None,
             as_floats: bool = False) -> LoadedRun:
  """Loads WORKDIR's config, tokenizer and checkpoint (`step` -1: the latest).

  `tool` ("translate" | "generate" | "transcribe") must be the one that the run's model kind
  names as its decoder (kinds: `decode_tool`); None loads a run of any kind
  (embed, export_hf). `decoding` replaces fields of
  config.decoding; `batch_size` (0: the run's global batch) is rounded up to fill
  the mesh's batch axes; `max_length` (0: config.max_predict_length) caps the
  decoded length. Errors name the field. Integer weights of a compressed run stay
  integers in memory (the programs turn them into floats in each call), unless
  `as_floats`.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise config_lib.ConfigError(f"--workdir={workdir!r}: no config.json (not a train.py workdir)")
  config = config_lib.from_json(path)
  kind = kinds.get(config.model.kind)
  template = kind.prompt_template(config)  # a language model of prompted translation pairs.
  if tool is not None and kind.decode_tool != tool and not (tool == "translate" and template):
    decoders = [k for k in kinds.names() if kinds.get(k).decode_tool == tool]
    kinds_of_pairs = [k for k in kinds.names() if kinds.get(k).prompt_template is not
                kinds.ModelKind.prompt_template]
    also = (f", and {kinds_of_pairs} runs trained on prompted translation pairs "
            "(config.data.prompt_template)" if tool == "translate" and kinds_of_pairs else "")
    raise config_lib.ConfigError(
        f"--workdir={workdir!r} holds a {kind.name!r} model, which the {tool} tool does not "
        f"decode (it decodes {decoders}{also}"
        + (f"; use python -m transformer_jax.{kind.decode_tool})" if kind.decode_tool else ")"))
  for key, value in (decoding or {}).items():
    config.decoding[key] = value
  if max_length:
    config.max_predict_length = max_length
  if seed is not None:
    config.seed = seed
  config.distributed.coordinator_address = ""
  n = jax.device_count()
  try:
    sharding.validate_devices(config, n)
  except config_lib.ConfigError as e:
    print(f"note: the run's mesh does not fit {n} device(s) ({e}); decoding data-parallel",
          file=sys.stderr)
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, "dcn_data": 1})
  batch = batch_size or sharding.global_batch_size(config, n)
  data, fsdp, _ = sharding.mesh_shape(config, n)
  config.global_batch_size = -(-batch // (data * fsdp)) * (data * fsdp)
  kinds.validate(config, n)
  # The run's tokenizer: its config's, else its init_from run's (as training chose).
  tokenizer = (open_tokenizer(tokenizer_path(config, workdir)) if kind.uses_vocab else None)
  num_classes = 0
  if kind.uses_classes and not config.model.num_classes:
    labels = read_labels(workdir)
    if labels is None:
      raise config_lib.ConfigError(f"--workdir={workdir!r}: no labels.json, so the number of "
                                   "classes is unknown (set config.model.num_classes)")
    num_classes = len(labels)
  # What the kind's decoder takes beside the ids, where its config asks for it.
  try:
    decode_kwargs = {**lexicon.decode_kwargs(config, tokenizer, lambda: lexicon.read_words(workdir)),
                     **placeholders.decode_kwargs(config, tokenizer),
                     **prompted.decode_kwargs(config)}
  except FileNotFoundError as e:
    raise config_lib.ConfigError(str(e)) from e
  if tool == "translate" and template:  # translations end at EOS or a newline.
    decode_kwargs.update(lm_pairs.decode_kwargs(tokenizer))
  progs = programs_lib.build(config, sharding.make_mesh(config),
                             tokenizer.vocab_size if tokenizer else 0, num_classes, decode_kwargs)
  params, step = checkpoint_params.restore_params(workdir, step, progs.abstract_state.params)
  if progs.lora is not None:  # an adapter run: its base rebuilt beside its adapters.
    params = restore.adapted_params(config, progs, params,
                                    checkpoint_params.run_metadata(workdir, step), workdir)
  if as_floats:
    params = quant.materialize(params)
  return LoadedRun(config, tokenizer, progs.for_params(params), params, step, template)


def translate_lines(run: LoadedRun, lines: Sequence[str]) -> list[str]:
  """One translation per line, in order; empty (or all-blank) lines give empty lines.

  Sources are tokenized and cut to config.max_target_length as in training. A language
  model of prompted pairs continues each line's prompt (the run's template; the source cut
  where the prompt would take more than half of config.max_predict_length) up to EOS or a
  newline.
  """
  todo = [i for i, line in enumerate(lines) if line.strip()]
  out = [""] * len(lines)
  if run.prompt_template:
    translations = lm_pairs.translate(
        [lines[i] for i in todo], lm_pairs.PromptedPairs(run.tokenizer, run.prompt_template),
        run.tokenizer, batch_size=run.programs.global_batch_size,
        max_length=run.config.max_predict_length, decode_batch=run.decode)
  else:
    translations = pipeline.decode_in_batches(
        [lines[i] for i in todo], run.tokenizer, batch_size=run.programs.global_batch_size,
        max_length=run.config.max_target_length, decode_batch=run.decode)
  for i, text in zip(todo, translations):
    out[i] = text
  return out


def generate_texts(run: LoadedRun, prompts: Sequence[str]) -> list[str]:
  """Each prompt followed by its continuation (up to EOS or the maximum length)."""
  return [run.tokenizer.decode(out) for _, out in generate_ids(run, prompts)]


def generate_ids(run: LoadedRun, prompts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
  """(prompt ids, output ids: the prompt, then its continuation) of each prompt."""
  length = run.config.max_predict_length
  batch = run.programs.global_batch_size
  out = []
  for n, start in enumerate(range(0, len(prompts), batch)):
    chunk = [run.tokenizer.encode(p, add_eos=False) for p in prompts[start:start + batch]]
    for row, tokens in enumerate(chunk):
      if len(tokens) >= length:
        raise config_lib.ConfigError(f"prompt {start + row} has {len(tokens)} tokens; "
                                     f"--max_length={length} leaves no room to generate")
    result = run.decode(prompt_batch(chunk, batch, length), n)
    out.extend((tokens, result[row]) for row, tokens in enumerate(chunk))
  return out


def transcribe_audio(run: LoadedRun, samples: Sequence[np.ndarray]) -> list[str]:
  """One transcript per utterance (int16 samples at 16 kHz), in order."""
  from transformer_jax.kinds.speech import pipeline as speech_pipeline, splits as speech_splits  # pylint: disable=import-outside-toplevel
  utts = speech_splits.Utterances(list(samples), [""] * len(samples))
  return speech_pipeline.decode_in_batches(
      utts, batch_size=run.programs.global_batch_size, decode_batch=run.decode,
      tokenizer=run.tokenizer, segment_frames=run.config.decoding.segment_frames,
      form=speech_pipeline.Form.from_config(run.config.data))
