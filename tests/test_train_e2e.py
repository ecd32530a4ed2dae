"""End to end: `python train.py` as a user runs it, in a real subprocess."""

import json
import os
import subprocess
import sys
import time

from transformer_jax.kinds.translation import corpus as sources

from conftest import excerpt, write_parallel_tsv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    # float32 (as configs/base.py): these runs compare losses and scores across
    # device layouts, processes and tools.
    "--config.model.dtype=float32",
    "--config.model.emb_dim=32", "--config.model.num_heads=2", "--config.model.qkv_dim=32",
    "--config.model.mlp_dim=64", "--config.model.num_encoder_layers=1",
    "--config.model.num_decoder_layers=1", "--config.per_device_batch_size=2",
    "--config.max_target_length=32", "--config.max_predict_length=16",
    "--config.num_predict_examples=16", "--config.num_eval_steps=2",
    "--config.data.vocab_size=1000", "--config.data.num_packing_bins=4",
    "--config.log_every_steps=2", "--config.eval_every_steps=3",
    "--config.checkpoint_every_steps=3", "--config.warmup_steps=2",
]
HAS_CATALOGS = bool(sources.find_catalogs(["/usr/share/locale"], "de"))


def _train(args, cwd=REPO, timeout=600):
  proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"),
                         f"--config={os.path.join(REPO, 'configs', 'base.py')}", *args],
                        cwd=cwd, capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ))
  return proc


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _data_args(tmp_path):
  if HAS_CATALOGS:
    return []  # the default: gettext catalogs installed on this machine.
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=40)
  return ["--config.data.source=files", f"--config.data.train_files=('{tsv}',)"]


def test_train_then_resume(tmp_path):
  workdir = "run"  # relative to the working directory, as users write it.
  args = [f"--workdir={workdir}", *TINY, *_data_args(tmp_path)]
  first = _train(args + ["--config.num_train_steps=6"], cwd=str(tmp_path))
  assert first.returncode == 0, excerpt(first.stderr)
  assert f"workdir: {workdir}" in first.stdout
  assert "Resuming" not in first.stdout
  assert "BLEU" in first.stdout
  assert "Traceback" not in first.stderr, excerpt(first.stderr)
  workdir = str(tmp_path / workdir)
  for name in ("config.json", "tokenizer.model", "metrics.jsonl"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                if d.isdigit()) == [3, 6]
  records = _metrics(workdir)
  train_steps = [r["step"] for r in records if "train/loss" in r]
  assert train_steps == [2, 4, 6]
  for r in records:
    if "train/loss" in r:
      assert r["train/tokens_per_sec"] > 0 and r["train/learning_rate"] > 0
  # Model FLOP/s over this CPU's measured matmul rate, on the steps that were timed.
  mfu = [r["train/mfu"] for r in records if "train/mfu" in r]
  assert mfu and all(0 < m < 1.5 for m in mfu), mfu
  assert os.path.exists(os.path.join(os.environ["XDG_CACHE_HOME"], "transformer_jax",
                                     "cpu_matmul.json"))
  assert any("eval/loss" in r and "eval/accuracy" in r and "eval/perplexity" in r
             for r in records)
  final = [r for r in records if "test/bleu" in r]
  assert len(final) == 1 and final[0]["step"] == 6 and 0 <= final[0]["test/bleu"] <= 100
  assert "test/chrf" in final[0]
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["num_train_steps"] == 6

  second = _train(args + ["--config.num_train_steps=9"], cwd=str(tmp_path))
  assert second.returncode == 0, excerpt(second.stderr)
  assert "Resuming from checkpoint at step 6" in second.stdout
  records = _metrics(workdir)
  train_steps = [r["step"] for r in records if "train/loss" in r]
  assert train_steps == [2, 4, 6, 8, 9]  # continued at 6, not from 0.
  assert 9 in [r["step"] for r in records if "test/bleu" in r]

  # A changed model shape stops before training, naming the difference; nothing is lost.
  kept = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  bad = _train(args + ["--config.num_train_steps=12", "--config.model.mlp_dim=128"],
               cwd=str(tmp_path))
  assert bad.returncode == 2, excerpt(bad.stderr)
  assert "does not match the model" in bad.stderr
  assert "mlp/wi: saved (32, 64), model (32, 128)" in bad.stderr
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == kept

  # config.init_from: a new run starts from this run's parameters, at step 0.
  other = _train([f"--workdir={tmp_path / 'other'}", *TINY, *_data_args(tmp_path),
                  "--config.num_train_steps=2", f"--config.init_from.workdir={workdir}"])
  assert other.returncode == 0, excerpt(other.stderr)
  assert "Initialised 35 of 35 parameter arrays from" in other.stdout
  assert f"tokenizer: {os.path.join(workdir, 'tokenizer.model')}" in other.stdout  # the same ids.
  assert "Resuming" not in other.stdout


def test_bad_config_fails_fast_with_the_field_named(tmp_path):
  proc = _train(["--config.model.qkv_dim=33", *TINY[:2]], cwd=str(tmp_path), timeout=120)
  assert proc.returncode != 0
  assert "config.model.qkv_dim=33" in proc.stderr
  assert "workdir: runs/base" in proc.stdout  # the default workdir, printed at start.
  assert not os.path.exists(tmp_path / "runs" / "base" / "checkpoints")


def test_bad_mesh_fails_fast_naming_config_mesh(tmp_path):
  """3 x 3 does not fit 8 devices: a one-line error before any data or compilation."""
  start = time.monotonic()
  proc = _train([f"--workdir={tmp_path / 'w'}", "--config.mesh.data=3", "--config.mesh.fsdp=3"],
                timeout=60)
  elapsed = time.monotonic() - start
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "config.mesh={'data': 3, 'fsdp': 3" in proc.stderr
  assert "but there are 8 devices" in proc.stderr  # conftest's 8 simulated devices.
  assert elapsed < 30, elapsed
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_missing_corpus_file_is_a_clear_error(tmp_path):
  proc = _train([f"--workdir={tmp_path / 'w'}", "--config.data.source=files",
                 f"--config.data.train_files=('{tmp_path / 'nope.tsv'}',)"], timeout=120)
  assert proc.returncode != 0
  assert "nope.tsv" in proc.stderr and "not found" in proc.stderr
