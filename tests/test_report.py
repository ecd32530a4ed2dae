"""A run you can see: model.md, the report's plots and report.md, attention maps, profiles."""

import glob
import json
import os
import re

import numpy as np
import pytest
from matplotlib.image import AxesImage

from transformer_jax.report import attention, plots, runs
from transformer_jax.tools import loaded_run as inference

from conftest import _metrics, _run, excerpt, train_tiny, write_parallel_tsv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def profiled_run(tmp_path_factory):
  """A second tiny run: another learning rate, fewer steps, steps 1-2 profiled."""
  tmp = tmp_path_factory.mktemp("profiled")
  tsv = write_parallel_tsv(tmp / "corpus.tsv", repeats=20)
  workdir = str(tmp / "profiled")
  proc = train_tiny(workdir, tsv, "--config.num_train_steps=6", "--config.learning_rate=0.003",
                    "--config.profile_steps=(1, 3)")
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert "Profile of steps 1-2 in" in proc.stdout
  return workdir


def test_the_profile_option_writes_a_trace_and_nothing_when_off(profiled_run, trained_run):
  traces = glob.glob(os.path.join(profiled_run, "plugins", "profile", "*", "*.xplane.pb"))
  perfetto = glob.glob(os.path.join(profiled_run, "plugins", "profile", "*",
                                  "perfetto_trace.json.gz"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
  assert len(perfetto) == 1
  assert not os.path.exists(os.path.join(trained_run, "plugins"))  # profile_steps=()


def test_model_md_lists_every_parameter_and_the_totals(trained_run):
  text = open(os.path.join(trained_run, "model.md"), encoding="utf-8").read()
  table = text.split("## Parameters", 1)[1]
  rows = [line.split(" | ") for line in table.splitlines() if re.match(r"^\| \w+/", line)]
  counts = [int(r[5].replace(",", "")) for r in rows]
  total = int(re.search(r"- parameters: ([\d,]+) in (\d+) arrays", text)[1].replace(",", ""))
  assert sum(counts) == total and len(rows) == int(re.search(r"in (\d+) arrays", text)[1])
  for r in rows:  # shape x shape = count; logical axes, one per dimension.
    shape = [int(d) for d in r[1].split("x")]
    assert np.prod(shape) == int(r[5].replace(",", ""))
    assert len(r[3].split(", ")) == len(shape)
  assert re.search(r"\| shared_embedding/embedding \| \d+x32 \| float32 \| vocab, embed \|", text)
  assert "tokens per step" in text and "training FLOPs" in text


def test_the_report_plots_what_metrics_jsonl_holds(trained_run, profiled_run, tmp_path):
  output = tmp_path / "report"
  proc = _run(["-m", "transformer_jax.report", f"--workdir={trained_run}",
               f"--workdir={profiled_run}", f"--output={output}"])
  assert proc.returncode == 0, excerpt(proc.stderr)
  pngs = sorted(os.listdir(output))
  assert pngs == ["grad_norm.png", "learning_rate.png", "loss.png", "quality.png",
                  "report.md", "throughput.png"]
  report = (output / "report.md").read_text(encoding="utf-8")
  assert "| learning_rate | 0.01 | 0.003 |" in report  # the config difference.
  assert "| num_train_steps | 8 | 6 |" in report
  assert "## Examples: run" in report and "prediction" in report  # the test translations.
  for png in pngs[:-2] + pngs[-1:]:
    assert f"]({png})" in report

  # The plotted series are metrics.jsonl's values, read back from the figures' lines.
  loaded = runs.read_all([trained_run, profiled_run])
  expected = {}
  for run in loaded:
    records = _metrics(run.workdir)
    for key in ("train/nll", "eval/loss", "train/learning_rate", "eval/bleu"):
      steps = [r["step"] for r in records if key in r]
      expected[(run.name, key)] = (steps, [r[key] for r in records if key in r])
  lines = {line.get_label(): line for line in plots.loss_figure(loaded).axes[0].get_lines()}
  for run in loaded:
    for key, label in (("train/nll", f"{run.name} train"), ("eval/loss", f"{run.name} validation")):
      steps, values = expected[(run.name, key)]
      assert list(lines[label].get_xdata()) == steps and steps
      np.testing.assert_allclose(lines[label].get_ydata(), values)
  lr = plots.single_figure(loaded, "train/learning_rate", "lr", "lr").axes[0]
  assert [t.get_text() for t in lr.get_legend().get_texts()] == ["run", "profiled"]
  for line, run in zip(lr.get_lines(), loaded):
    np.testing.assert_allclose(line.get_ydata(), expected[(run.name, "train/learning_rate")][1])
  quality = plots.quality_figure(loaded)
  bleu = next(ax for ax in quality.axes if ax.get_title() == "bleu")
  first = bleu.get_lines()[0]
  np.testing.assert_allclose(first.get_ydata(), expected[(loaded[0].name, "eval/bleu")][1])


def test_attention_maps_rows_are_distributions_over_real_tokens(trained_run, tmp_path):
  proc = _run(["-m", "transformer_jax.report", "attention", f"--workdir={trained_run}",
               "--text=File not found", f"--output={tmp_path}"])
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert sorted(os.listdir(tmp_path)) == ["attention_decoder_cross_attention.png",
                                          "attention_decoder_self_attention.png",
                                          "attention_encoder_self_attention.png"]
  run = inference.load_run(trained_run, tool=None, batch_size=1,
                           decoding={"method": "greedy"}, as_floats=True)
  maps, tokens = attention.attention_maps(run, "File not found")
  assert tokens["inputs"][-1] == "</s>" and len(tokens["inputs"]) > 2
  for m in maps:
    images = [im for ax in attention.figure(m).axes for im in ax.get_images()
              if isinstance(im, AxesImage)]
    assert len(images) == m.weights.shape[0] * m.weights.shape[1]  # layers x heads.
    for im in images:
      shown = np.asarray(im.get_array())
      assert shown.shape == (len(m.query_tokens), len(m.key_tokens))
      np.testing.assert_allclose(shown.sum(axis=1), 1.0, atol=1e-5)
      if m.title == "decoder self-attention":  # causal: nothing above the diagonal.
        assert np.all(np.triu(shown, k=1) == 0)


def test_report_and_attention_errors_are_one_line(tmp_path, trained_run):
  for args, message in (
      ([f"--workdir={tmp_path}/none"], "no such folder"),
      ([f"--workdir={tmp_path}"], "no metrics.jsonl"),
      (["attention", f"--workdir={trained_run}"], "--text is required"),
  ):
    proc = _run(["-m", "transformer_jax.report", *args])
    assert proc.returncode == 2 and message in proc.stderr, excerpt(proc.stderr)
    assert "Traceback" not in proc.stderr


def test_metrics_jsonl_holds_compile_times_and_examples(trained_run):
  records = _metrics(trained_run)
  last = [r for r in records if "time/total" in r][-1]
  assert last["compile/train_step"] > 0 and last["time/compile"] > 0
  examples = [r["examples"] for r in records if "examples" in r]
  assert examples and set(examples[-1][0]) == {"source", "reference", "prediction"}
  assert json.dumps(examples)  # plain JSON.
