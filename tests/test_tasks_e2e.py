"""End to end: every model kind trains, evaluates, tests and resumes through `python train.py`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import EN_DE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = [
    "--config.model.emb_dim=32", "--config.model.num_heads=2", "--config.model.qkv_dim=32",
    "--config.model.mlp_dim=64", "--config.model.num_encoder_layers=1",
    "--config.model.num_decoder_layers=1", "--config.per_device_batch_size=2",
    "--config.log_every_steps=2", "--config.eval_every_steps=3",
    "--config.checkpoint_every_steps=3", "--config.warmup_steps=2", "--config.num_eval_steps=2",
]


def _train(config: str, args, timeout=600):
  return subprocess.run([sys.executable, os.path.join(REPO, "train.py"),
                         f"--config={os.path.join(REPO, 'configs', config)}", *COMMON, *args],
                        cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ))


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _lm_files(tmp_path):
  path = tmp_path / "text.txt"
  paragraphs = [f"{en}. {de}.\n{en} ({i}) -> {de} ({i})" for i in range(30) for en, de in EN_DE]
  path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
  return ["--config.data.source=files", f"--config.data.train_files=('{path}',)",
          "--config.data.vocab_size=400", "--config.max_target_length=32",
          "--config.max_predict_length=24"]


def _classify_files(tmp_path):
  path = tmp_path / "labelled.tsv"
  with open(path, "w", encoding="utf-8") as f:
    for i in range(40):
      for en, de in EN_DE:
        f.write(f"{en} number {i}\tenglish\n{de} Nummer {i}\tgerman\n")
        if i % 2:
          f.write(f"{en} {de} {i}\tmixed\n")
  return ["--config.data.source=files", f"--config.data.train_files=('{path}',)",
          "--config.data.vocab_size=400", "--config.max_target_length=24",
          "--config.data.min_class_examples=5"]


def _image_files(tmp_path):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 600)
  images = rng.integers(0, 60, (600, 8, 8)).astype(np.uint8)
  for k in range(3):  # each class brightens its own band of rows
    images[labels == k, 2 * k:2 * k + 3] += 150
  path = tmp_path / "images.npz"
  np.savez(path, images=images, labels=labels)
  return ["--config.data.source=files", f"--config.data.train_files=('{path}',)",
          "--config.data.image_size=8", "--config.model.patch_size=4"]


@pytest.mark.parametrize("config,data,eval_keys,test_keys", [
    ("lm.py", _lm_files, ["eval/perplexity", "eval/accuracy"],
     ["test/perplexity", "test/unigram_perplexity"]),
    ("classify.py", _classify_files, ["eval/accuracy", "eval/f1"],
     ["test/accuracy", "test/f1", "test/majority_accuracy"]),
    ("vit.py", _image_files, ["eval/accuracy", "eval/f1"],
     ["test/accuracy", "test/f1", "test/majority_accuracy"]),
])
def test_each_kind_trains_tests_and_resumes(tmp_path, config, data, eval_keys, test_keys):
  workdir = str(tmp_path / "run")
  args = [f"--workdir={workdir}", *data(tmp_path)]
  first = _train(config, args + ["--config.num_train_steps=6"])
  assert first.returncode == 0, first.stderr[-3000:]
  assert "Traceback" not in first.stderr
  records = _metrics(workdir)
  assert [r["step"] for r in records if "train/loss" in r] == [2, 4, 6]
  evals = [r for r in records if "eval/loss" in r]
  assert [r["step"] for r in evals] == [3, 6]
  for r in evals:
    assert all(np.isfinite(r[k]) for k in eval_keys), r
  test = [r for r in records if any(k.startswith("test/") for k in r)]
  assert len(test) == 1 and all(k in test[0] for k in test_keys), test

  second = _train(config, args + ["--config.num_train_steps=8"])
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resuming from checkpoint at step 6" in second.stdout
  assert [r["step"] for r in _metrics(workdir) if "train/loss" in r] == [2, 4, 6, 8]


def test_a_source_of_another_kind_is_rejected_before_anything_runs(tmp_path):
  proc = _train("vit.py", [f"--workdir={tmp_path / 'run'}", "--config.data.source=gettext"])
  assert proc.returncode == 2
  assert "config.data.source='gettext': must be one of ('mnist', 'files')" in proc.stderr
