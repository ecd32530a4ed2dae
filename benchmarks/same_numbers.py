"""Do two checkouts train to the same numbers? Short fixed-step runs of each config, compared.

  python benchmarks/same_numbers.py --old=/path/to/old/checkout --new=. --out=/tmp/same

For each config, both checkouts run `train.py` for --steps steps (no budget, logging every
2 steps, one evaluation and save at the end, a few test examples) in their own workdir under
--out, importing their own code (PYTHONPATH). Then every line of the two metrics.jsonl
files is compared, timing keys aside (time/*, compile/*, throughput, MFU): the training
losses at every logged step, the evaluation and the test figures must be equal, not close.
Prints one line per config; exits 1 when any differs. The data caches are shared
($XDG_CACHE_HOME): run the old checkout first, so both read the same cached data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

TIMING = ("time/", "compile/", "train/steps_per_sec", "train/mfu")
SHORT = ["--config.train_budget_seconds=0", "--config.log_every_steps=2",
         "--config.num_eval_steps=2", "--config.num_predict_examples=4",
         "--config.num_eval_bleu_examples=0", "--config.checkpoint_every_seconds=0"]
# Kept small: the speech job synthesises its own utterances.
EXTRA = {"speech": ["--config.data.max_utterances=300", "--config.data.max_eval_utterances=16",
                    "--config.data.real_speech=off"]}


def train(checkout: str, config: str, workdir: str, steps: int) -> None:
  args = [sys.executable, "train.py", f"--config=configs/{config}.py", f"--workdir={workdir}",
          f"--config.num_train_steps={steps}", f"--config.eval_every_steps={steps}",
          f"--config.checkpoint_every_steps={steps}", *SHORT, *EXTRA.get(config, [])]
  env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
  with open(workdir + ".log", "w", encoding="utf-8") as log:
    proc = subprocess.run(args, cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT,
                          check=False)
  if proc.returncode:
    raise SystemExit(f"{checkout}: train.py --config=configs/{config}.py exited "
                     f"{proc.returncode}; see {workdir}.log")


def lines(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if not k.startswith(TIMING) and not k.endswith("_per_sec")}
          for r in rows]


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--old", required=True, help="the checkout to compare with")
  parser.add_argument("--new", default=".", help="the checkout under test")
  parser.add_argument("--out", required=True, help="a folder for the runs (made fresh)")
  parser.add_argument("--steps", type=int, default=12)
  parser.add_argument("--configs", default="base,lm,classify,vit,speech")
  a = parser.parse_args()
  same = True
  for config in a.configs.split(","):
    runs = {}
    for side in ("old", "new"):
      workdir = os.path.abspath(os.path.join(a.out, side, config))
      if os.path.exists(workdir):
        raise SystemExit(f"--out={a.out}: {workdir} exists; give a fresh folder")
      os.makedirs(os.path.dirname(workdir), exist_ok=True)
      train(getattr(a, side), config, workdir, a.steps)
      runs[side] = lines(workdir)
    old, new = runs["old"], runs["new"]
    differ = sum(x != y for x, y in zip(old, new)) + abs(len(old) - len(new))
    losses = [r["train/loss"] for r in new if "train/loss" in r]
    print(f"{config}: {len(new)} metrics lines, {len(losses)} logged train/loss, last "
          f"{losses[-1]:.6f}; lines that differ (timing aside): {differ}", flush=True)
    same &= differ == 0
  return 0 if same else 1


if __name__ == "__main__":
  sys.exit(main())
