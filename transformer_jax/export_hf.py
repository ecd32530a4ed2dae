"""Writes a trained run's parameters out, for tools outside this project.

  python -m transformer_jax.export_hf --workdir=runs/classify_minilm --output=DIR
      [--format=hf|safetensors|peft|gguf] [--gguf_type=f32|f16|q8_0] [--merge] [--step=N]

--format=hf (the default): a Hugging Face folder, config.json + model.safetensors
+ the run's tokenizer files, that `transformers` loads as it is:
BertForSequenceClassification for a BERT-style encoder_classifier (one fine-tuned
from a BERT folder: [CLS] pooling, post-LN, biases), GPT2LMHeadModel for a
GPT-2-style decoder_lm. --format=safetensors works for every kind (the
encoder-decoder and the ViT have no Hugging Face twin): model.safetensors
holds each parameter under its path ("encoder/layer_0/mlp/wi"), next to the
run's config.json (and labels.json, tokenizer), so any framework can read a
trained run without our checkpoint code.

An adapter run (config.lora.rank > 0) exports either merged, `--merge` with
--format=hf or safetensors (the base with W + (alpha/rank) A B in place: an
ordinary model), or as adapters, `--format=peft`: adapter_config.json +
adapter_model.safetensors, which `peft` loads onto the Hugging Face base folder
the run started from (config.init_from.hf; adapters/peft.py).

--format=stablehlo: the run's inference function (translation: encoder + cached decoding; a
language model's generation; an encoder's embeddings and class probabilities) serialised with
jax.export, its batch size symbolic, the parameters beside it in params.npz, the sentencepiece
model, and load.py, a loader that needs only jax, numpy and sentencepiece and gives the
tools' outputs (tools/stablehlo.py).

--format=gguf: a decoder_lm whose Hugging Face twin is Llama or Gemma 3 as one llama.cpp
GGUF file (--output=FILE.gguf), the weights in --gguf_type, the run's tokenizer.json as
GGUF's tokenizer metadata (pretrained/gguf_writer.py).

Exit code 2 on a bad workdir, step, output folder or a model that the format cannot
express.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "The train.py workdir of the run.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "The folder to write (must not exist, or be empty; "
                              "--format=gguf: the file, which must not exist).", required=True)
_FORMAT = flags.DEFINE_enum("format", "hf", ["hf", "safetensors", "peft", "gguf", "stablehlo"],
                            "hf: a Hugging Face folder; safetensors: our parameter paths; "
                            "peft: an adapter run's adapters as PEFT's LoRA folder; "
                            "gguf: a llama.cpp GGUF file (Llama, Gemma 3); stablehlo: the "
                            "inference function (jax.export) with a loader that needs only jax.")
_GGUF_TYPE = flags.DEFINE_enum("gguf_type", "f32", ["f32", "f16", "q8_0"],
                               "--format=gguf: the 2-D weights' type (norms stay f32).")
_MERGE = flags.DEFINE_bool("merge", False, "An adapter run: write the base with the adapters "
                           "merged in (--format=hf or safetensors).")
_STEP = flags.DEFINE_integer("step", -1, "Checkpoint step (-1: the latest).")


def export(workdir: str, output: str, fmt: str = "hf", step: int = -1,
           merge: bool = False, gguf_type: str = "f32") -> str:
  """Writes the run's parameters to `output`; returns a one-line summary."""
  import flax  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  from transformer_jax.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  from transformer_jax.kinds.task import read_labels  # pylint: disable=import-outside-toplevel
  from transformer_jax.models.transformer import unstack_layers  # pylint: disable=import-outside-toplevel
  from transformer_jax.pretrained import export as export_lib  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel

  run = inference.load_run(workdir, tool=None, step=step, as_floats=True)
  _check_adapter_flags(workdir, run, fmt, merge)
  if fmt == "stablehlo":
    from transformer_jax.tools import stablehlo  # pylint: disable=import-outside-toplevel
    return stablehlo.export(run, workdir, output, read_labels(workdir))
  params = unstack_layers(jax.device_get(flax.linen.unbox(run.programs.merged(run.params))))
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  cfg = run.programs.model_config
  kind = run.programs.kind.name
  if fmt == "gguf" and not {"llama", "gemma3_text"} & set(run.programs.kind.hf_architectures):
    raise export_lib.PretrainedError(
        f"--format=gguf: the run in {workdir!r} is a {kind!r} model; GGUF holds a language "
        "model whose Hugging Face twin is llama or gemma3_text")
  labels = read_labels(workdir)
  tok = run.tokenizer
  tok_folder = tok.folder if isinstance(tok, hf_tokenizer.HfTokenizer) else None
  if tok_folder is not None:
    tok_files = [os.path.join(tok_folder, n) for n in export_lib.TOKENIZER_FILES]
  else:
    tok_files = [os.path.join(workdir, "tokenizer.model")]
  tok_files = [p for p in tok_files if os.path.exists(p)]
  if fmt in ("hf", "peft", "gguf"):
    if tok_folder is not None:
      vocab_size, offset, eos_id = tok.own_vocab_size, tok.offset, tok.eos_id
    else:
      vocab_size, offset, eos_id = (tok.vocab_size if tok else cfg.vocab_size), 0, None
    hf_config, tensors = export_lib.hf_files(kind, cfg, flat, vocab_size, labels, offset, eos_id)
    if fmt == "gguf" and tok_folder is None:
      raise export_lib.PretrainedError(
          f"--workdir={workdir!r}: the run's tokenizer is "
          f"{'sentencepiece' if tok is not None else 'missing'}; GGUF's tokenizer metadata is "
          "written from a tokenizer.json (config.data.tokenizer_path=hf:FOLDER)")
    if tok is not None and tok_folder is None:
      raise export_lib.PretrainedError(
          f"--workdir={workdir!r}: the run's tokenizer is sentencepiece, which a Hugging Face "
          "folder cannot carry; use --format=safetensors")
    if fmt == "peft":
      return _export_peft(run, output, flat, (vocab_size, offset, eos_id), hf_config, tensors,
                          tok_files)
    hf_config = export_lib.over_source_config(hf_config, run.config.init_from.hf)
    if fmt == "gguf":
      return _export_gguf(run, workdir, output, hf_config, tensors, tok_folder, gguf_type)
    files = {"config.json": hf_config}
    if hf_config.get("model_type") == "whisper":  # its window, prompt and features.
      from transformer_jax.pretrained import whisper  # pylint: disable=import-outside-toplevel
      window = (run.config.data.max_frames if run.config.data.features == "whisper"
                else 2 * whisper.SOURCE_POSITIONS)
      files.update(whisper.tuned_window_files(hf_config, tensors, window,
                                              run.config.init_from.hf))
    export_lib.write_folder(output, files, tensors, "model.safetensors", copy=tok_files)
    what = hf_config["architectures"][0]
  else:
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      files = {"config.json": json.load(f)}
    if labels is not None:
      files["labels.json"] = labels
    tensors = {k: np.ascontiguousarray(v) for k, v in flat.items()}
    export_lib.write_folder(output, files, tensors, "model.safetensors", copy=tok_files,
                            metadata={"format": "transformer_jax", "kind": kind,
                                      "step": str(run.step)})
    what = f"{len(tensors)} parameter arrays under their paths"
  return f"wrote {output}: {what} from {workdir} step {run.step}"


def _check_adapter_flags(workdir: str, run, fmt: str, merge: bool) -> None:
  from transformer_jax.errors import BadInput  # pylint: disable=import-outside-toplevel
  rank = run.config.lora.rank
  if rank and fmt != "peft" and not merge:
    raise BadInput(f"--workdir={workdir!r} is an adapter run (config.lora.rank={rank}): "
                   "--merge writes the base with the adapters merged in; --format=peft "
                   "writes the adapters alone")
  if not rank and (merge or fmt == "peft"):
    raise BadInput(f"--workdir={workdir!r} is not an adapter run (config.lora.rank=0): "
                   f"{'--merge' if merge else '--format=peft'} needs one")
  if merge and fmt == "peft":
    raise BadInput("--merge and --format=peft: choose one (merged weights, or the adapters)")
  if fmt == "peft" and not run.config.init_from.hf:
    raise BadInput(f"--format=peft: the run in {workdir!r} did not start from a Hugging Face "
                   "folder (config.init_from.hf), so there is no base for peft to load the "
                   "adapters onto; use --merge")


def _export_peft(run, output: str, flat: dict, vocab: tuple, hf_config: dict, hf_tensors: dict,
                 tok_files: list[str]) -> str:
  """The adapters as PEFT's LoRA folder (adapters/peft.py), the tokenizer beside them."""
  # pylint: disable=import-outside-toplevel
  import flax
  import jax

  from transformer_jax import pretrained
  from transformer_jax.adapters import lora, peft
  from transformer_jax.models.transformer import unstack_layers
  from transformer_jax.pretrained import export as export_lib

  cfg, base = run.programs.model_config, run.config.init_from.hf
  folder = pretrained.read_folder(base)
  trainable = unstack_layers(jax.device_get(flax.linen.unbox(run.params.trainable)))
  from_base = pretrained.params_of(folder, cfg)
  whole = sorted(set(lora.flat(trainable.get("full", {}))) | (set(flat) - set(from_base)))
  to_hf = export_lib.state_dict_fn(folder.architecture, cfg, *vocab)
  config, tensors = peft.peft_files(to_hf, flat, lora.flat_adapters(trainable),
                                    run.programs.lora, whole, hf_tensors,
                                    hf_config["architectures"][0], base)
  export_lib.write_folder(output, {"adapter_config.json": config}, tensors,
                          "adapter_model.safetensors", copy=tok_files)
  return (f"wrote {output}: LoRA adapters (rank {config['r']}) on "
          f"{len(config['target_modules'])} modules of {hf_config['architectures'][0]}"
          + (f", {', '.join(config['modules_to_save'])} whole" if config["modules_to_save"]
             else "") + f", from {run.config.init_from.hf} + step {run.step}")


def _export_gguf(run, workdir: str, output: str, hf_config: dict, tensors: dict,
                 tok_folder: str, gguf_type: str) -> str:
  """The Hugging Face config and state dict of --format=hf, and the run's tokenizer folder,
  as a GGUF file; a run fine-tuned from a GGUF file keeps its `tokenizer.ggml.pre`."""
  from transformer_jax.pretrained import gguf_vocab, gguf_writer  # pylint: disable=import-outside-toplevel
  tok_config = {}
  path = os.path.join(tok_folder, "tokenizer_config.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      tok_config = json.load(f)
  jinja = os.path.join(tok_folder, "chat_template.jinja")
  if "chat_template" not in tok_config and os.path.exists(jinja):
    with open(jinja, encoding="utf-8") as f:
      tok_config["chat_template"] = f.read()
  source = run.config.init_from.gguf
  pre = (gguf_vocab.source_pre(source)
         if source and os.path.abspath(tok_folder) == os.path.abspath(run.config.init_from.hf)
         else None)
  what = gguf_writer.write_gguf(hf_config, tensors, os.path.join(tok_folder, "tokenizer.json"),
                                tok_config, output, gguf_type, source_pre_name=pre,
                                name=os.path.basename(os.path.normpath(workdir)))
  return f"wrote {output}: {what} from {workdir} step {run.step}"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with tool_flags.tool_main():
    if _GGUF_TYPE.present and _FORMAT.value != "gguf":
      raise tool_flags.BadInput(f"--gguf_type={_GGUF_TYPE.value} is for --format=gguf")
    print(export(_WORKDIR.value, _OUTPUT.value, _FORMAT.value, _STEP.value, _MERGE.value,
                 _GGUF_TYPE.value), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
