"""The compression report: the source run beside the compressed one."""

from __future__ import annotations

import json
import os

from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax.compress.measure import measure

# The figures worth a column, in this order, where the run's task reports them.
QUALITY = ("test/bleu", "test/chrf", "test/placeholders", "test/perplexity", "test/accuracy",
           "test/f1")


def _mib(n: float) -> str:
  return f"{n / 2**20:.2f} MiB"


def table(rows: list[tuple[str, dict]]) -> str:
  """A markdown table of measured runs ([(name, measure() record)])."""
  quality = [k for k in QUALITY if any(k in r for _, r in rows)]
  head = ["run", "parameters in memory", "of float32", "checkpoint on disk",
          "decode tokens/s", "test time"] + quality
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for name, r in rows:
    cells = [name, _mib(r["params_bytes_in_memory"]),
             f"{r['params_bytes_in_memory'] / r['float32_bytes']:.1%}",
             _mib(r["checkpoint_folder_bytes"]),
             f"{r['tokens_per_sec']:,.0f}" if "tokens_per_sec" in r else "-",
             f"{r['seconds']:.1f} s"]
    cells += [("-" if k not in r else f"{r[k]:.4f}" if abs(r[k]) <= 1 else f"{r[k]:.2f}")
              for k in quality]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def compare(source: str, output: str, step: int, command: str) -> dict:
  """Measures both runs; prints the table and writes OUTPUT/compression.{md,json}."""
  before = measure(source, step)
  after = measure(output)
  spec = checkpoint_params.compression_spec(output, after["step"])["params"]
  stored = sum(h.get("stored_bytes", 0) for h in spec.values())
  after["params_bytes_in_checkpoint"] = stored
  before["params_bytes_in_checkpoint"] = before["float32_bytes"]
  text = (f"# Compression of {os.path.basename(os.path.abspath(source))}\n\n"
          f"`python -m transformer_jax.compress {command}`\n\n"
          + table([("source (float32)", before), ("compressed", after)]) + "\n\n"
          f"Parameters as stored in the checkpoint: {_mib(stored)}, "
          f"{stored / before['float32_bytes']:.1%} of their float32 bytes "
          f"({_mib(before['float32_bytes'])}); the source's checkpoint folder also holds "
          "the optimizer state.\n")
  print(text, flush=True)
  with open(os.path.join(output, "compression.md"), "w", encoding="utf-8") as f:
    f.write(text)
  record = {"command": command, "source": before, "compressed": after}
  with open(os.path.join(output, "compression.json"), "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2, sort_keys=True)
  return record
