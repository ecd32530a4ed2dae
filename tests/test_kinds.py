"""The kind registry: a kind is one record, and one file adds one.

The throwaway kind of tests/toy_kind.py (its model, task, record and config in
that file alone) trains, tests and resumes through `python train.py`.
"""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from transformer_jax import config as config_lib, kinds

from conftest import excerpt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "transformer_jax")


def _train(config_path, *args):
  return subprocess.run([sys.executable, os.path.join(REPO, "train.py"),
                         f"--config={config_path}", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=600, env=dict(os.environ))


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_a_kind_registered_in_one_test_file_trains_and_resumes_through_train_py(tmp_path):
  workdir = str(tmp_path / "run")
  toy = os.path.join(REPO, "tests", "toy_kind.py")
  first = _train(toy, f"--workdir={workdir}", "--config.num_train_steps=40")
  assert first.returncode == 0, excerpt(first.stderr)
  assert "Model (toy_first_token)" in first.stdout
  assert "examples/s" in first.stdout  # the record's throughput unit.
  records = _metrics(workdir)
  assert [r["step"] for r in records if "eval/accuracy" in r] == [30, 40]
  assert all("train/examples_per_sec" in r for r in records if "train/loss" in r
             and r["step"] > 20)
  test = [r for r in records if "test/accuracy" in r][0]
  assert test["test/accuracy"] > test["test/majority_accuracy"] + 0.3, test
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["model"]["kind"] == "toy_first_token"

  second = _train(toy, f"--workdir={workdir}", "--config.num_train_steps=50")
  assert second.returncode == 0, excerpt(second.stderr)
  assert "Resuming from checkpoint at step 40" in second.stdout
  assert "toy_first_token" not in kinds.names()  # this process never loaded the file.


def test_an_unknown_kind_fails_before_anything_is_built_and_lists_the_kinds(tmp_path):
  proc = _train(os.path.join(REPO, "configs", "base.py"), f"--workdir={tmp_path / 'run'}",
                "--config.model.kind=decoder_only")
  assert proc.returncode == 2
  assert "config.model.kind='decoder_only': not a registered model kind" in proc.stderr
  for name in ("encoder_decoder", "decoder_lm", "encoder_classifier", "vit"):
    assert name in proc.stderr
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_name_taken_by_another_file_is_refused():
  vit = kinds.get("vit")
  with pytest.raises(ValueError, match="'vit' is already registered"):
    kinds.register(dataclasses.replace(vit, task=lambda c, w, i: None))
  assert kinds.get("vit") is vit
  assert kinds.register(vit) is vit  # the same record again is fine.


@pytest.mark.parametrize("name", ["encoder_decoder", "decoder_lm", "encoder_classifier", "vit",
                                  "speech_to_text"])
def test_every_built_in_record_is_complete(name):
  kind = kinds.get(name)
  c = config_lib.default_config()
  c.model.kind, c.data.source = name, kind.data_sources[0]
  if name == "vit":
    c.model.positions = "learned"
  kinds.validate(c)
  shapes = kind.batch_shapes(c, 4)
  assert all(s.shape[0] == 4 for s in shapes.values())
  assert "loss" in kind.eval_metrics(c)
  assert "files" in kind.data_sources and kind.file_format
  assert (kind.decode is None) == (kind.decode_tool == "")
  empty = kind.empty_batch(shapes, 2)
  assert set(empty) == set(shapes)
  if "label" in empty:
    assert (empty["label"] == -1).all()


# That no module outside kinds/ names a kind is checked in test_layers.py.


def test_each_kind_extra_is_a_pip_extra_of_the_project():
  tomllib = pytest.importorskip("tomllib")  # Python 3.11+.
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
  named = {kinds.get(n).extra for n in kinds.names()} - {""}
  assert named == {"vision"}
  assert named <= set(extras)
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  assert all(f'pip install -e ".[{extra}]"' in readme for extra in named)
