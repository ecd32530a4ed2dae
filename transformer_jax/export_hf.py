"""Writes a trained run's parameters out, for tools outside this project.

  python -m transformer_jax.export_hf --workdir=runs/classify_minilm --output=DIR
      [--format=hf|safetensors] [--step=N]

--format=hf (the default): a Hugging Face folder, config.json + model.safetensors
+ the run's tokenizer files, that `transformers` loads as it is:
BertForSequenceClassification for a BERT-style encoder_classifier (one fine-tuned
from a BERT folder: [CLS] pooling, post-LN, biases), GPT2LMHeadModel for a
GPT-2-style decoder_lm. --format=safetensors works for every kind (the
encoder-decoder and the ViT have no Hugging Face twin): model.safetensors
holds each parameter under its path ("encoder/layer_0/mlp/wi"), next to the
run's config.json (and labels.json, tokenizer), so any framework can read a
trained run without our checkpoint code. Exit code 2 on a bad workdir, step,
output folder or a model that the format cannot express.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "The train.py workdir of the run.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "The folder to write (must not exist, or be empty).",
                              required=True)
_FORMAT = flags.DEFINE_enum("format", "hf", ["hf", "safetensors"],
                            "hf: a Hugging Face folder; safetensors: our parameter paths.")
_STEP = flags.DEFINE_integer("step", -1, "Checkpoint step (-1: the latest).")


def export(workdir: str, output: str, fmt: str = "hf", step: int = -1) -> str:
  """Writes the run's parameters to `output`; returns a one-line summary."""
  import flax  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  from transformer_jax.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  from transformer_jax.kinds.task import read_labels  # pylint: disable=import-outside-toplevel
  from transformer_jax.models.transformer import unstack_layers  # pylint: disable=import-outside-toplevel
  from transformer_jax.pretrained import export as export_lib  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel

  run = inference.load_run(workdir, tool=None, step=step, as_floats=True)
  params = unstack_layers(jax.device_get(flax.linen.unbox(run.params)))
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  cfg = run.programs.model_config
  kind = run.programs.kind.name
  labels = read_labels(workdir)
  tok = run.tokenizer
  tok_folder = tok.folder if isinstance(tok, hf_tokenizer.HfTokenizer) else None
  if tok_folder is not None:
    tok_files = [os.path.join(tok_folder, n) for n in export_lib.TOKENIZER_FILES]
  else:
    tok_files = [os.path.join(workdir, "tokenizer.model")]
  tok_files = [p for p in tok_files if os.path.exists(p)]
  if fmt == "hf":
    if tok_folder is not None:
      vocab_size, offset, eos_id = tok.own_vocab_size, tok.offset, tok.eos_id
    else:
      vocab_size, offset, eos_id = (tok.vocab_size if tok else cfg.vocab_size), 0, None
    hf_config, tensors = export_lib.hf_files(kind, cfg, flat, vocab_size, labels, offset, eos_id)
    if tok is not None and tok_folder is None:
      raise export_lib.PretrainedError(
          f"--workdir={workdir!r}: the run's tokenizer is sentencepiece, which a Hugging Face "
          "folder cannot carry; use --format=safetensors")
    hf_config = export_lib.over_source_config(hf_config, run.config.init_from.hf)
    export_lib.write_folder(output, {"config.json": hf_config}, tensors, "model.safetensors",
                            copy=tok_files)
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with tool_flags.tool_main():
    print(export(_WORKDIR.value, _OUTPUT.value, _FORMAT.value, _STEP.value), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
