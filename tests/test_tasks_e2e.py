"""End to end: every model kind trains, evaluates, tests and resumes through `python train.py`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import EN_DE, excerpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = [
    "--config.model.emb_dim=32", "--config.model.num_heads=2", "--config.model.qkv_dim=32",
    "--config.model.mlp_dim=64", "--config.model.num_encoder_layers=1",
    "--config.model.num_decoder_layers=1", "--config.per_device_batch_size=2",
    "--config.log_every_steps=20", "--config.eval_every_steps=30",
    "--config.checkpoint_every_steps=30", "--config.warmup_steps=5", "--config.num_eval_steps=2",
]
STEPS = 60  # enough for each kind to beat its baseline clearly.


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


def _beats_unigram(test):
  return test["test/perplexity"] < 0.5 * test["test/unigram_perplexity"]


def _beats_majority(test):
  return test["test/accuracy"] > test["test/majority_accuracy"] + 0.2


@pytest.mark.parametrize("config,data,learning_rate,eval_keys,learned", [
    ("lm.py", _lm_files, 1e-2, ["eval/perplexity", "eval/accuracy"], _beats_unigram),
    ("classify.py", _classify_files, 5e-3, ["eval/accuracy", "eval/f1"], _beats_majority),
    ("vit.py", _image_files, 5e-3, ["eval/accuracy", "eval/f1"], _beats_majority),
])
def test_each_kind_learns_tests_and_resumes(tmp_path, config, data, learning_rate, eval_keys,
                                           learned):
  workdir = str(tmp_path / "run")
  args = [f"--workdir={workdir}", f"--config.learning_rate={learning_rate}", *data(tmp_path)]
  first = _train(config, args + [f"--config.num_train_steps={STEPS}"])
  assert first.returncode == 0, excerpt(first.stderr)
  assert "Traceback" not in first.stderr
  records = _metrics(workdir)
  assert [r["step"] for r in records if "train/loss" in r] == [20, 40, 60]
  evals = [r for r in records if "eval/loss" in r]
  assert [r["step"] for r in evals] == [30, 60]
  for r in evals:
    assert all(np.isfinite(r[k]) for k in eval_keys), r
  test = [r for r in records if any(k.startswith("test/") for k in r)]
  assert len(test) == 1 and learned(test[0]), test

  second = _train(config, args + [f"--config.num_train_steps={STEPS + 2}"])
  assert second.returncode == 0, excerpt(second.stderr)
  assert f"Resuming from checkpoint at step {STEPS}" in second.stdout
  assert [r["step"] for r in _metrics(workdir) if "train/loss" in r] == [20, 40, 60, 62]


def test_a_source_of_another_kind_is_rejected_before_anything_runs(tmp_path):
  proc = _train("vit.py", [f"--workdir={tmp_path / 'run'}", "--config.data.source=gettext"])
  assert proc.returncode == 2
  assert "config.data.source='gettext': must be one of ('mnist', 'files')" in proc.stderr


_PIXELS = np.random.default_rng(0).integers(0, 256, (40, 64), dtype=np.uint8)  # 40 distinct.


@pytest.mark.parametrize("images,message", [
    (_PIXELS.reshape(40, 8, 8) / 255.0, "'images' must be uint8 pixels 0-255, found float64 "
                                        "(floats in [0, 1]: save"),
    (_PIXELS[:, :48].reshape(40, 8, 6), "config.data.image_size=8"),
    (_PIXELS, "must be [N, H, W] or [N, H, W, C]"),
])
def test_image_files_of_the_wrong_dtype_or_shape_are_named(tmp_path, images, message):
  path = tmp_path / "images.npz"
  np.savez(path, images=images, labels=np.zeros(len(images), np.int64))
  proc = _train("vit.py", [f"--workdir={tmp_path / 'run'}", "--config.data.source=files",
                           f"--config.data.train_files=('{path}',)",
                           "--config.data.image_size=8", "--config.model.patch_size=4"])
  assert proc.returncode == 2, excerpt(proc.stderr)
  assert "Traceback" not in proc.stderr
  error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1 and message in error[0] and "images.npz" in error[0], error
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
