"""export_hf --format=stablehlo: the run's inference function through jax.export, run by the
folder's own load.py in a fresh process that cannot import transformer_jax, gives exactly
the tools' outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import EN_DE, REPO, excerpt
from test_tasks_e2e import _train

BLOCKED = ("import sys; sys.modules['transformer_jax'] = None; sys.path.insert(0, sys.argv[1]); "
           "sys.argv = ['load.py'] + sys.argv[2:]; import load; load.main()")


def _export(workdir, output):
  proc = subprocess.run([sys.executable, "-m", "transformer_jax.export_hf",
                         f"--workdir={workdir}", "--format=stablehlo", f"--output={output}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, excerpt(proc.stderr)
  return proc.stdout


def _load(folder, lines, *job):
  """load.py in a fresh process, from another folder, transformer_jax unimportable."""
  proc = subprocess.run([sys.executable, "-c", BLOCKED, str(folder), *job],
                        input="".join(l + "\n" for l in lines), capture_output=True, text=True,
                        timeout=300, cwd="/", env={**os.environ, "PYTHONPATH": ""})
  assert proc.returncode == 0, excerpt(proc.stderr)
  return proc.stdout.splitlines()


def test_translations_of_the_export_equal_the_tool(trained_run, tmp_path):
  out = tmp_path / "shlo"
  summary = _export(trained_run, out)
  assert "translate.stablehlo" in summary and "params.npz" in summary
  meta = json.loads((out / "export.json").read_text())
  assert meta["jobs"] == ["translate"] and meta["kind"] == "encoder_decoder"
  lines = [en for en, _ in EN_DE] + ["", "Save the file %s now"]
  from transformer_jax.tools import loaded_run  # pylint: disable=import-outside-toplevel
  run = loaded_run.load_run(trained_run, tool="translate")
  assert _load(out, lines) == loaded_run.translate_lines(run, lines)


def test_a_full_output_folder_is_refused_and_kept(trained_run, tmp_path):
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("keep")
  proc = subprocess.run([sys.executable, "-m", "transformer_jax.export_hf",
                         f"--workdir={trained_run}", "--format=stablehlo",
                         f"--output={tmp_path / 'full'}"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2 and "is not empty" in proc.stderr, proc.stderr[-2000:]
  assert (tmp_path / "full" / "x").read_text() == "keep"


@pytest.mark.long
def test_a_language_model_and_a_classifier_export(tmp_path):
  text = tmp_path / "text.txt"
  text.write_text("\n\n".join(f"{en} ({i}). {de} ({i})." for i in range(20) for en, de in EN_DE),
                  encoding="utf-8")
  lm = tmp_path / "lm"
  proc = _train("lm.py", [f"--workdir={lm}", "--config.data.source=files",
                          f"--config.data.train_files=('{text}',)", "--config.num_train_steps=4",
                          "--config.data.vocab_size=400", "--config.max_predict_length=16",
                          "--config.decoding.method=sample", "--config.decoding.top_k=5"])
  assert proc.returncode == 0, excerpt(proc.stderr)
  _export(lm, tmp_path / "lm_shlo")
  from transformer_jax.tools import loaded_run  # pylint: disable=import-outside-toplevel
  prompts = ["File not", "Open a", "The"]
  run = loaded_run.load_run(str(lm), tool="generate")
  want = [t.replace("\n", "\\n") for t in loaded_run.generate_texts(run, prompts)]
  assert _load(tmp_path / "lm_shlo", prompts) == want  # sampled: the batch index kept.

  labelled = tmp_path / "labelled.tsv"
  labelled.write_text("".join(f"{en} {i}\tenglish\n{de} {i}\tgerman\n" for i in range(6)
                              for en, de in EN_DE),
                      encoding="utf-8")
  clf = tmp_path / "clf"
  proc = _train("classify.py", [f"--workdir={clf}", "--config.data.source=files",
                                f"--config.data.train_files=('{labelled}',)",
                                "--config.num_train_steps=4", "--config.data.vocab_size=400",
                                "--config.data.min_class_examples=2",
                                "--config.max_target_length=16"])
  assert proc.returncode == 0, excerpt(proc.stderr)
  _export(clf, tmp_path / "clf_shlo")
  texts = [en for en, _ in EN_DE[:4]]
  got = [json.loads(line.split("\t")[1]) for line in _load(tmp_path / "clf_shlo", texts, "classify")]
  assert all(sorted(p) == ["english", "german"] and abs(sum(p.values()) - 1) < 1e-5 for p in got)
  embedded = np.asarray([json.loads(l) for l in _load(tmp_path / "clf_shlo", texts, "embed")])
  from transformer_jax import embed  # pylint: disable=import-outside-toplevel
  model, params, tok, _ = embed.load_encoder(str(clf))
  np.testing.assert_allclose(embedded, embed.embed(model, params, tok, texts, 16), atol=1e-5)
