"""The adapter table: finished train.py runs side by side (docs/adapters.md, BUILD_NOTES).

  python train.py --config=configs/classify_minilm.py --workdir=runs/m_full
  python train.py --config=configs/classify_minilm_lora.py --workdir=runs/m_lora
  python train.py --config=configs/classify_minilm_lora.py --config.lora.base_bits=4 \\
      --workdir=runs/m_qlora4
  python benchmarks/adapter_table.py runs/m_full runs/m_lora runs/m_qlora4

The same on a decoder LM tuned to translate (test BLEU / chrF in place of accuracy / F1):

  python train.py --config=configs/translate_gemma3.py --config.lora.rank=0 \\
      --config.learning_rate=1e-4 --workdir=runs/g_full
  python train.py --config=configs/translate_gemma3.py --workdir=runs/g_lora
  python train.py --config=configs/translate_gemma3.py --config.lora.base_bits=4 \\
      --workdir=runs/g_qlora4
  python benchmarks/adapter_table.py runs/g_full runs/g_lora runs/g_qlora4

For each workdir: the test figures (metrics.jsonl's last line), the steps taken, the trainable and frozen
parameters and the optimizer state per device (model.md's totals), the bytes of the last
checkpoint on disk, and the median train step time (1 / train/steps_per_sec over the logged
steps after the first two logs).
"""

import json
import os
import re
import statistics
import sys


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _model_md(workdir):
  text = open(os.path.join(workdir, "model.md"), encoding="utf-8").read()
  params = re.search(r"- (?:trainable )?parameters: ([\d,]+)", text).group(1)
  opt = re.search(r"optimizer state ([\d.,]+ \w+)", text).group(1)
  frozen = re.search(r"frozen base \(config.lora\): ([\d,]+) parameters, ([\d.,]+ \w+)", text)
  return params, opt, (f"{frozen.group(1)} ({frozen.group(2)})" if frozen else "-")


def _checkpoint_bytes(workdir):
  root = os.path.join(workdir, "checkpoints")
  last = max(int(d) for d in os.listdir(root) if d.isdigit())
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in
             os.walk(os.path.join(root, str(last))) for f in files)


# The test figures of a row: classifiers' accuracy and macro F1, translators' BLEU and chrF.
SCORES = {"classify": (("test accuracy", "test/accuracy", "{:.2%}"),
                       ("macro F1", "test/f1", "{:.4f}")),
          "translate": (("test BLEU", "test/bleu", "{:.2f}"), ("chrF", "test/chrf", "{:.2f}"))}


def _scores(test):
  return SCORES["translate" if "test/bleu" in test else "classify"]


def row(workdir):
  records = _records(workdir)
  test = records[-1]
  scores = " | ".join(fmt.format(test[key]) for _, key, fmt in _scores(test))
  rates = [r["train/steps_per_sec"] for r in records if "train/steps_per_sec" in r][2:]
  step_ms = 1000 * statistics.median(1 / r for r in rates)
  params, opt, frozen = _model_md(workdir)
  return (f"| {os.path.basename(os.path.normpath(workdir))} | {scores} | {test['step']:,} | "
          f"{params} | {frozen} | {opt} | "
          f"{_checkpoint_bytes(workdir) / 2**20:.1f} MiB | {step_ms:.0f} ms | "
          f"{test['time/total']:.0f} s |")


def main(workdirs):
  names = [name for name, _, _ in _scores(_records(workdirs[0])[-1])]
  print(f"| run | {' | '.join(names)} | steps | trainable parameters | frozen base | "
        "optimizer state | checkpoint | step (median) | wall |")
  print("| --- |" + " ---: |" * (len(names) + 7))
  for w in workdirs:
    print(row(w))


if __name__ == "__main__":
  main(sys.argv[1:])
