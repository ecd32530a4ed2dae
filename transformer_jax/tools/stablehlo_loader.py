"""Runs a transformer_jax StableHLO export with jax, numpy and sentencepiece alone.

  python load.py [translate|generate|embed|classify] < lines.txt > out.txt
  from load import Model; Model("DIR").translate(["File not found"])

One line in, one line out: a translation, a prompt with its continuation, an embedding
(JSON list), or a label and its probabilities (JSON). The export's first job is the default.
This file imports nothing of transformer_jax: it is copied beside the export as load.py.
"""

import json
import os
import sys

import numpy as np
import sentencepiece
from jax import export

HERE = os.path.dirname(os.path.abspath(__file__))


class Model:
  def __init__(self, folder=HERE):
    with open(os.path.join(folder, "export.json"), encoding="utf-8") as f:
      self.meta = json.load(f)
    self.params = {}
    with np.load(os.path.join(folder, "params.npz")) as flat:
      for key in flat.files:
        node = self.params
        *parents, leaf = key.split("/")
        for p in parents:
          node = node.setdefault(p, {})
        node[leaf] = flat[key]
    self.programs = {}
    for job in self.meta["jobs"]:
      with open(os.path.join(folder, f"{job}.stablehlo"), "rb") as f:
        self.programs[job] = export.deserialize(bytearray(f.read()))
    self.sp = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(folder, "tokenizer.model"))

  def _encode(self, text, eos=True):
    ids = self.sp.encode(text) + ([self.meta["eos_id"]] if eos else [])
    return ids[:self.meta["input_length"]]

  def _text(self, ids):
    out = []
    for i in np.asarray(ids).tolist():
      if i == self.meta["eos_id"]:
        break
      if i != self.meta["pad_id"] and i < self.meta["vocab_size"]:
        out.append(i)
    return self.sp.decode(out)

  def _batch(self, rows, width):
    out = np.zeros((self.meta["batch_size"], width), np.int32)
    for r, ids in enumerate(rows):
      out[r, :len(ids)] = ids
    return out

  def translate(self, lines):
    """One translation per line; sources decoded shortest first in batches, as the
    translate tool does; empty lines give empty lines."""
    todo = [i for i, line in enumerate(lines) if line.strip()]
    ids = {i: self._encode(lines[i]) for i in todo}
    order = sorted(todo, key=lambda i: (len(self.sp.encode(lines[i])) + 1, i))
    out = [""] * len(lines)
    size = self.meta["batch_size"]
    for n, start in enumerate(range(0, len(order), size)):
      chunk = order[start:start + size]
      result = np.asarray(self.programs["translate"].call(
          self.params, self._batch([ids[i] for i in chunk], self.meta["input_length"]),
          np.int32(n)))
      for row, i in enumerate(chunk):
        out[i] = self._text(result[row])
    return out

  def generate(self, prompts):
    """Each prompt followed by its continuation, as the generate tool prints it."""
    out, size, width = [], self.meta["batch_size"], self.meta["output_length"]
    for n, start in enumerate(range(0, len(prompts), size)):
      chunk = [self.sp.encode(p) for p in prompts[start:start + size]]
      result = np.asarray(self.programs["generate"].call(
          self.params, self._batch(chunk, width), np.int32(n)))
      out.extend(self._text(result[row]) for row in range(len(chunk)))
    return out

  def _forward(self, job, texts):
    size, out = self.meta["batch_size"], []
    for start in range(0, len(texts), size):
      rows = [self._encode(t) for t in texts[start:start + size]]
      out.append(np.asarray(self.programs[job].call(
          self.params, self._batch(rows, self.meta["input_length"])[:len(rows)])))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

  def embed(self, texts):
    """[texts, width] float32: mean-pooled, L2-normalised (the embed tool's)."""
    return self._forward("embed", texts)

  def classify(self, texts):
    """{label: probability} of each text."""
    probs = self._forward("classify", texts)
    labels = self.meta["labels"] or [str(i) for i in range(probs.shape[1])]
    return [dict(zip(labels, map(float, p))) for p in probs[:, :len(labels)]]


def main():
  model = Model()
  job = sys.argv[1] if len(sys.argv) > 1 else model.meta["jobs"][0]
  lines = sys.stdin.read().splitlines()
  if job == "translate":
    out = model.translate(lines)
  elif job == "generate":
    out = [t.replace("\r", "\\r").replace("\n", "\\n") for t in model.generate(lines)]
  elif job == "embed":
    out = [json.dumps(v.tolist()) for v in model.embed(lines)]
  else:
    out = [f"{max(p, key=p.get)}\t{json.dumps(p)}" for p in model.classify(lines)]
  sys.stdout.write("".join(line + "\n" for line in out))


if __name__ == "__main__":
  main()
