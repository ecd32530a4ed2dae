"""Sentence embeddings from a BERT-family encoder: one L2-normalised vector per input line.

  python -m transformer_jax.embed --hf=/path/to/folder < sentences.txt > vectors.npy
  python -m transformer_jax.embed --hf=runs/classify_minilm < sentences.txt > vectors.npy

--hf is a Hugging Face folder (config.json, model.safetensors, tokenizer.json)
or a train.py workdir of an encoder_classifier. Each line is tokenized (with
[CLS] and [SEP]), cut to --max_length tokens (default: the folder's
sentence_bert_config.json max_seq_length, else the position table), run
through the encoder, mean-pooled over its real tokens and L2-normalised, as
sentence-transformers does for all-MiniLM-L6-v2. The output is a float32 .npy
array [lines, width] on stdout (or --output). Exit code 2 on a bad folder,
workdir or input.
"""

from __future__ import annotations

import io
import json
import os
import sys

from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_HF = flags.DEFINE_string("hf", None, "A Hugging Face folder or a train.py workdir.",
                          required=True)
_INPUT = flags.DEFINE_string("input", None, "Sentences, one per line (default: stdin).")
_OUTPUT = flags.DEFINE_string("output", None, "The .npy file (default: stdout).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Sentences encoded together.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 0, "Tokens per sentence (0: the model's).")


def _max_seq_length(folder: str) -> int | None:
  path = os.path.join(folder, "sentence_bert_config.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f).get("max_seq_length")
  return None


def load_encoder(path: str):
  """(model, params, tokenizer, default max length) from a folder or a workdir."""
  from transformer_jax import pretrained  # pylint: disable=import-outside-toplevel
  from transformer_jax.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
  if os.path.isdir(os.path.join(path, "checkpoints")):  # a train.py workdir.
    run = inference.load_run(path, tool=None, as_floats=True)
    if not run.programs.kind.embeds:
      from transformer_jax import kinds  # pylint: disable=import-outside-toplevel
      embedders = [n for n in kinds.names() if kinds.get(n).embeds]
      raise pretrained.PretrainedError(f"--hf={path!r} holds a {run.programs.kind.name!r} "
                                       f"run; embeddings come from a run of {embedders}")
    cfg = run.programs.model_config.replace(deterministic=True)
    return (run.programs.kind.model(cfg), run.programs.merged(run.params), run.tokenizer,
            cfg.max_length)
  from transformer_jax.models.classifier import EncoderClassifier  # pylint: disable=import-outside-toplevel
  model, params, cfg = pretrained.load_hf(path)
  if not isinstance(model, EncoderClassifier):
    raise pretrained.PretrainedError(f"--hf={path!r}: not a BERT-family encoder")
  tok = hf_tokenizer.load(hf_tokenizer.PREFIX + path)
  return model, params, tok, _max_seq_length(path) or cfg.max_length


def embed(model, params, tokenizer, sentences: list[str], max_length: int,
          batch_size: int = 32):
  """[len(sentences), D] float32: mean over real tokens, L2-normalised."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  cfg = model.config

  from transformer_jax.models.classifier import sentence_embedding  # pylint: disable=import-outside-toplevel

  @jax.jit
  def pooled(params, ids_BL):
    hidden_BLD = model.apply({"params": params}, ids_BL, return_hidden=True)
    return sentence_embedding(hidden_BLD, ids_BL, cfg.class_vector)

  out = []
  for start in range(0, len(sentences), batch_size):
    chunk = [tokenizer.encode(s, max_length=max_length) for s in sentences[start:start + batch_size]]
    width = -(-max(len(c) for c in chunk) // 16) * 16  # a few shapes, a few compiles.
    ids = np.zeros((batch_size, min(width, max_length)), np.int32)
    for i, c in enumerate(chunk):
      ids[i, :len(c)] = c
    out.append(np.asarray(pooled(params, jnp.asarray(ids)))[:len(chunk)])
  width = model.config.emb_dim
  return np.concatenate(out) if out else np.zeros((0, width), np.float32)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with tool_flags.tool_main():
    import numpy as np  # pylint: disable=import-outside-toplevel
    sentences = tool_flags.read_lines(_INPUT.value)
    tool_flags.check_output_file(_OUTPUT.value)
    model, params, tok, default_length = load_encoder(_HF.value)
    vectors = embed(model, params, tok, sentences, _MAX_LENGTH.value or default_length,
                    _BATCH.value)
    buf = io.BytesIO()
    np.save(buf, vectors.astype(np.float32))
    if _OUTPUT.value:
      with open(_OUTPUT.value, "wb") as f:
        f.write(buf.getvalue())
    else:
      sys.stdout.buffer.write(buf.getvalue())
      sys.stdout.flush()


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
