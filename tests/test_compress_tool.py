"""`python -m transformer_jax.compress`, run as users run it, on a real trained workdir."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax.compress import quant, sparsity
from transformer_jax.tools import loaded_run as inference

from conftest import REPO, TINY, _run, excerpt, write_parallel_tsv

pytestmark = pytest.mark.slow


def _train(workdir, tsv, *extra):
  return _run(["train.py", f"--config={REPO}/configs/base.py", f"--workdir={workdir}", *TINY,
               "--config.data.source=files", f"--config.data.train_files=('{tsv}',)",
               "--config.decoding.method=greedy", *extra])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("compress")
  tsv = write_parallel_tsv(tmp / "corpus.tsv", repeats=40)
  workdir = str(tmp / "run")
  proc = _train(workdir, tsv)
  assert proc.returncode == 0, excerpt(proc.stderr)
  return workdir, tsv


def _compress(*args):
  return _run(["-m", "transformer_jax.compress", *args])


def _translate(run, lines):
  return inference.translate_lines(run, lines)


def test_int8_run_is_a_quarter_of_the_bytes_decodes_as_rounded_and_fine_tunes(source, tmp_path):
  workdir, tsv = source
  out = str(tmp_path / "int8")
  proc = _compress("quantize", f"--workdir={workdir}", f"--output={out}", "--bits=8")
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert "| compressed |" in proc.stdout
  report = json.load(open(os.path.join(out, "compression.json"), encoding="utf-8"))
  after = report["compressed"]
  assert after["params_bytes_in_checkpoint"] <= 0.30 * after["float32_bytes"]
  assert after["params_bytes_in_memory"] <= 0.30 * after["float32_bytes"]
  assert 0 <= after["test/bleu"] <= 100 and "test/bleu" in report["source"]
  assert os.path.isfile(os.path.join(out, "compression.md"))
  # Stored as integers: every kernel int8 with its scales, nothing else float but 1-D.
  spec = checkpoint_params.compression_spec(out, 8)["params"]
  assert {h["encoding"] for h in spec.values() if len(h["shape"]) >= 2} == {"int8"}
  assert {h["encoding"] for h in spec.values() if len(h["shape"]) < 2} == {"dense"}
  # Loaded for decoding, the weights stay int8 in memory, and decode exactly as the
  # source's float weights rounded to int8.
  run_q = inference.load_run(out, tool="translate")
  leaves = jax.tree.leaves(run_q.params, is_leaf=lambda x: isinstance(x, quant.QTensor))
  assert any(isinstance(x, quant.QTensor) and x.qvalue.dtype == np.int8 for x in leaves)
  run_f = inference.load_run(workdir, tool="translate")
  run_f.params = quant.fake_quant_tree(run_f.params, run_q.programs.param_names, 8)
  lines = ["Save the document (3)", "Open a new window (7)", "Out of memory (1)"]
  assert _translate(run_q, lines) == _translate(run_f, lines)
  # train.py fine-tunes it (quantization-aware) from its weights and saves on.
  proc = _train(out, tsv, "--config.quantization.bits=8", "--config.num_train_steps=10",
                "--config.num_predict_examples=2")
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert "Fine-tuning from the compressed checkpoint at step 8" in proc.stdout
  assert sorted(int(d) for d in os.listdir(os.path.join(out, "checkpoints"))) == [8, 10]


def test_pruned_run_is_half_zeros_stored_compactly_after_a_fine_tune(source, tmp_path):
  workdir, _ = source
  out = str(tmp_path / "pruned")
  proc = _compress("prune", f"--workdir={workdir}", f"--output={out}", "--sparsity=0.5",
                   "--finetune_steps=2", "--report=False")
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert not os.path.exists(os.path.join(out, "finetune"))  # its float checkpoints are gone.
  assert os.path.isfile(os.path.join(out, "finetune_metrics.jsonl"))
  spec = checkpoint_params.compression_spec(out, 10)["params"]  # 8 steps + 2 of fine-tuning.
  sparse = [p for p, h in spec.items() if h["sparse"]]
  assert sparse and all("embedding" not in p for p in sparse)
  run = inference.load_run(out, tool="translate")
  names = run.programs.logical_names()
  for x, n in zip(jax.tree.leaves(run.params), jax.tree.leaves(
      names, is_leaf=lambda v: v is None or isinstance(v, jax.sharding.PartitionSpec))):
    if sparsity.prunable(tuple(n), x.shape):
      assert np.mean(np.asarray(x) == 0) == pytest.approx(0.5, abs=1 / x.size)
  assert len(_translate(run, ["Save the document (3)"])) == 1


@pytest.mark.parametrize("args,words", [
    (["quantize", "--bits=3"], "--bits=3"),
    (["prune", "--sparsity=1.5"], "--sparsity=1.5"),
    (["prune"], "--sparsity is required"),
    (["quantize", "--workdir={empty}"], "no checkpoint"),
    (["quantize", "--output={source}"], "is the source workdir"),
])
def test_bad_options_fail_at_once_with_one_line(source, tmp_path, args, words):
  workdir, _ = source
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copyfile(os.path.join(workdir, "config.json"), empty / "config.json")
  out = tmp_path / "out"
  given = [a.format(empty=empty, source=workdir) for a in args]
  flags = [f"--workdir={workdir}", f"--output={out}"]
  flags = [f for f in flags if f.split("=")[0] not in {a.split("=")[0] for a in given}]
  proc = _compress(*given, *flags)
  assert proc.returncode == 2, excerpt(proc.stderr)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and words in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  assert not out.exists()  # nothing written.
