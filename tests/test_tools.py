"""The translate and generate tools, run as users run them, on real workdirs."""

import json
import os

import pytest

from transformer_jax import config as config_lib
from transformer_jax.kinds.translation import corpus as sources
from transformer_jax.metrics import scores as evaluation

from conftest import EN_DE, REPO, TINY, _metrics, _run


def test_trainer_logs_validation_and_test_bleu(trained_run):
  records = _metrics(trained_run)
  evals = [r for r in records if "eval/loss" in r]
  assert [r["step"] for r in evals] == [4, 8]
  for r in evals:
    assert 0 <= r["eval/bleu"] <= 100 and 0 <= r["eval/chrf"] <= 100
  test = [r for r in records if "test/bleu" in r]
  assert len(test) == 1 and test[0]["step"] == 8 and "test/chrf" in test[0]


def test_translate_tool_matches_the_trainers_test_bleu(trained_run, tmp_path):
  config = config_lib.from_json(os.path.join(trained_run, "config.json"))
  pairs = sources.load_corpus(config.data).test[:20]
  lines = [src for src, _ in pairs]
  lines.insert(3, "")  # an empty line gives an empty line, in place.
  src_file, out_file = tmp_path / "src.txt", tmp_path / "out.txt"
  src_file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  proc = _run(["-m", "transformer_jax.translate", f"--workdir={trained_run}",
               f"--input={src_file}", f"--output={out_file}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"translated {len(lines)} lines with step 8 (beam)" in proc.stderr
  out = out_file.read_text(encoding="utf-8").splitlines()
  assert len(out) == len(lines) > 10 and out[3] == ""
  hyps = out[:3] + out[4:]
  scores = evaluation.translation_scores(hyps, [ref for _, ref in pairs])
  test = [r for r in _metrics(trained_run) if "test/bleu" in r][0]
  assert scores["bleu"] == pytest.approx(test["test/bleu"], abs=1e-9)
  assert scores["chrf"] == pytest.approx(test["test/chrf"], abs=1e-9)

  # stdin -> stdout, greedy, an earlier step: one line out per line in.
  piped = _run(["-m", "transformer_jax.translate", f"--workdir={trained_run}", "--step=4",
                "--method=greedy"], stdin="Permission denied\n\nFile not found\n")
  assert piped.returncode == 0, piped.stderr[-3000:]
  assert piped.stdout.count("\n") == 3 and piped.stdout.splitlines()[1] == ""


@pytest.mark.parametrize("args,message", [
    (["--workdir=/nonexistent/run"], "--workdir='/nonexistent/run': no config.json"),
    (["--step=5"], "--step=5"),
    (["--beam_size=0", "--method=beam"], "config.decoding.beam_size=0"),
    (["--input=/nonexistent/file.txt"], "--input='/nonexistent/file.txt'"),
    (["--input={tmp}/latin1.txt"], "latin1.txt': line 2 is not UTF-8 text (byte 0xfc)"),
    (["--output={tmp}"], "is a folder; give a file name"),
    (["--output={tmp}/no/such/folder.txt"], "no/such/folder.txt': no folder"),
])
def test_translate_tool_rejects_bad_input(trained_run, tmp_path, args, message):
  (tmp_path / "latin1.txt").write_bytes("File not found\nF\u00fcr\n".encode("latin-1"))
  args = [a.replace("{tmp}", str(tmp_path)) for a in args]
  if not any(a.startswith("--workdir") for a in args):
    args = [f"--workdir={trained_run}", *args]
  proc = _run(["-m", "transformer_jax.translate", *args], stdin="")
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
  """A tiny decoder-only LM run trained by train.py (configs/lm.py on a small text file)."""
  tmp = tmp_path_factory.mktemp("lm")
  text = tmp / "text.txt"
  text.write_text("\n\n".join(f"{en}. {de}.\n{en} ({i})" for i in range(30) for en, de in EN_DE),
                  encoding="utf-8")
  workdir = str(tmp / "run")
  proc = _run(["train.py", f"--config={REPO}/configs/lm.py", f"--workdir={workdir}",
               *[a for a in TINY if "predict" not in a], "--config.max_predict_length=12",
               "--config.data.source=files", f"--config.data.train_files=('{text}',)",
               "--config.data.vocab_size=400", "--config.decoding.top_k=20"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "sample:" in proc.stdout
  return workdir


def test_generate_tool_samples_reproducibly_and_top_k_one_is_greedy(lm_run):
  base = ["-m", "transformer_jax.generate", f"--workdir={lm_run}", "--prompt=Open a",
          "--prompt=The file"]
  first = _run(base + ["--seed=1"])
  assert first.returncode == 0, first.stderr[-3000:]
  texts = first.stdout.rstrip("\n").split("\n")  # an untrained model's bytes may be odd.
  assert len(texts) == 2 and texts[0].startswith("Open a") and texts[1].startswith("The file")
  assert _run(base + ["--seed=1"]).stdout == first.stdout
  greedy = _run(base + ["--method=greedy"])
  top1 = _run(base + ["--top_k=1", "--seed=3"])
  assert greedy.returncode == 0 and top1.returncode == 0, greedy.stderr[-2000:]
  assert greedy.stdout == top1.stdout


def test_tools_refuse_the_other_model_kind(lm_run, trained_run):
  proc = _run(["-m", "transformer_jax.translate", f"--workdir={lm_run}"], stdin="hello\n")
  assert proc.returncode == 2 and "'decoder_lm' model" in proc.stderr
  proc = _run(["-m", "transformer_jax.generate", f"--workdir={trained_run}", "--prompt=x"])
  assert proc.returncode == 2 and "'encoder_decoder' model" in proc.stderr


def test_export_safetensors_writes_every_parameter_under_its_path(trained_run, tmp_path):
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  out = tmp_path / "export"
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={trained_run}",
               f"--output={out}", "--format=safetensors"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  tensors = load_file(str(out / "model.safetensors"))
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
  run = inference.load_run(trained_run, tool=None)
  want = traverse_util.flatten_dict(run.params, sep="/")
  assert tensors.keys() == want.keys()
  for k, v in want.items():
    np.testing.assert_array_equal(tensors[k], np.asarray(v), err_msg=k)
  assert json.loads((out / "config.json").read_text())["model"]["kind"] == "encoder_decoder"
  assert (out / "tokenizer.model").exists()
  # No Hugging Face twin: the hf format says so, and writes nothing.
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={trained_run}",
               f"--output={tmp_path / 'hf'}"])
  assert proc.returncode == 2 and "no Hugging Face twin" in proc.stderr
  assert "Traceback" not in proc.stderr and not (tmp_path / "hf").exists()


def test_the_run_reports_where_its_time_went(trained_run):
  from transformer_jax.observe import timing  # pylint: disable=import-outside-toplevel
  last = _metrics(trained_run)[-1]
  assert "test/bleu" in last  # the time split rides on the run's last record.
  phases = {k[len("time/"):]: v for k, v in last.items() if k.startswith("time/")}
  assert set(timing.PHASES) <= set(phases), phases
  assert all(v >= 0 for v in phases.values())
  parts = sum(phases[k] for k in timing.PHASES) + phases["other"]
  assert abs(parts - phases["total"]) < 1e-6 * max(phases["total"], 1) + 1e-6
  assert phases["train"] > 0 and phases["first_step"] > 0 and phases["eval"] > 0
  training = phases["compile"] + phases["first_step"] + phases["train"]
  assert abs(phases["train_fraction"] - training / phases["total"]) < 1e-9
