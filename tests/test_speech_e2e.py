"""End to end: a tiny speech_to_text run through train.py (learns, tests, resumes) and the
transcribe tool, on real WAV files of tone "words"; bad audio and a missing synthesiser."""

import os
import subprocess
import sys

import numpy as np
import pytest
from test_tasks_e2e import COMMON, REPO, _metrics, _train

from transformer_jax.kinds.speech import audio

from conftest import excerpt

WORDS = {"alpha": 300.0, "bravo": 700.0, "charlie": 1300.0, "delta": 2200.0}
STEPS = 60


def _word_wav(path, word, seconds, rate):
  """A spoken "word": its own tone, rising a little, at `rate` Hz (16-bit PCM)."""
  t = np.arange(int(seconds * rate)) / rate
  hz = WORDS[word] * (1 + 0.1 * t / seconds)
  audio.write_wav(str(path), 0.4 * np.sin(2 * np.pi * hz * t).astype(np.float32), rate)


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory):
  folder = tmp_path_factory.mktemp("speech")
  rng = np.random.default_rng(0)
  lists = {name: open(folder / f"{name}.tsv", "w", encoding="utf-8")  # pylint: disable=consider-using-with
           for name in ("train", "validation", "test")}
  for i in range(240):  # every 10th utterance validates, the next one tests.
    word = list(WORDS)[i % 4]
    name = f"u{i:03d}.wav"
    _word_wav(folder / name, word, rng.uniform(0.25, 0.5), 8000 if i % 3 == 0 else 16000)
    split = {0: "validation", 1: "test"}.get(i % 10, "train")
    lists[split].write(f"{name}\t{word.capitalize()}.\n")
  for f in lists.values():
    f.close()
  return folder


def _args(folder, workdir, steps):
  return [f"--workdir={workdir}", "--config.data.source=files",
          f"--config.data.train_files=('{folder / 'train.tsv'}',)",
          f"--config.data.validation_files=('{folder / 'validation.tsv'}',)",
          f"--config.data.test_files=('{folder / 'test.tsv'}',)",
          "--config.data.real_speech=off", "--config.data.vocab_size=300",
          "--config.data.max_frames=64", "--config.max_target_length=12",
          "--config.max_predict_length=12", "--config.num_eval_bleu_examples=8",
          "--config.learning_rate=5e-3", "--config.lr_schedule=constant",
          f"--config.num_train_steps={steps}", "--config.train_budget_seconds=0",
          "--config.model.num_encoder_layers=2"]


def _transcribe(workdir, *paths):
  return subprocess.run([sys.executable, "-m", "transformer_jax.transcribe",
                         f"--workdir={workdir}", *map(str, paths)],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_tiny_speech_run_learns_tests_resumes_and_transcribes(tmp_path, speech_files):
  workdir = tmp_path / "run"
  first = _train("speech.py", _args(speech_files, workdir, STEPS))
  assert first.returncode == 0, excerpt(first.stderr)
  assert "Traceback" not in first.stderr
  records = _metrics(workdir)
  assert [r["step"] for r in records if "train/loss" in r] == [20, 40, 60]
  assert all("train/frames_per_sec" in r for r in records if "train/loss" in r)
  evals = [r for r in records if "eval/loss" in r]
  assert [r["step"] for r in evals] == [30, 60]
  assert all(0 <= r["eval/wer"] and 0 <= r["eval/cer"] for r in evals), evals
  (test,) = [r for r in records if "test/wer" in r]
  assert test["test/wer"] < test["test/constant_wer"] - 25, test  # it listened.
  assert "test/real_wer" not in test
  assert "Test set, synthetic speech" in first.stdout and "transcript:" in first.stdout

  second = _train("speech.py", _args(speech_files, workdir, STEPS + 2))
  assert second.returncode == 0, excerpt(second.stderr)
  assert f"Resuming from checkpoint at step {STEPS}" in second.stdout
  assert [r["step"] for r in _metrics(workdir) if "train/loss" in r] == [20, 40, 60, 62]

  files = [speech_files / f"u{i:03d}.wav" for i in (0, 1, 2, 3, 5, 6, 7, 8)]
  tool = _transcribe(workdir, *files)
  assert tool.returncode == 0, excerpt(tool.stderr)
  lines = tool.stdout.splitlines()
  assert len(lines) == len(files)
  expected = [list(WORDS)[i % 4] for i in (0, 1, 2, 3, 5, 6, 7, 8)]
  assert sum(line.strip(" .").lower() == word for line, word in zip(lines, expected)) >= 5, \
      (lines, expected)
  assert "transcribed 8 files" in tool.stderr
  ctc = _transcribe(workdir, "--method=ctc", *files)  # the CTC head alone.
  assert ctc.returncode == 0 and "(ctc)" in ctc.stderr, excerpt(ctc.stderr)
  assert len(ctc.stdout.splitlines()) == len(files)
  # The training transcripts' words (lexicon.txt): with a prohibitive penalty the beam
  # writes listed words only.
  assert (workdir / "lexicon.txt").read_text().split() == sorted(WORDS)
  listed = _transcribe(workdir, "--method=beam", "--oov_penalty=1000", *files)
  assert listed.returncode == 0, excerpt(listed.stderr)
  assert all(w in WORDS for line in listed.stdout.splitlines() for w in line.split()), \
      listed.stdout
  maps = subprocess.run([sys.executable, "-m", "transformer_jax.report", "attention",
                         f"--workdir={workdir}", "--text=alpha", f"--output={tmp_path}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert maps.returncode == 2 and "reads 81-channel frames" in maps.stderr, excerpt(maps.stderr)


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk"), "not a readable PCM WAV file"),
    (lambda p: p.write_text("hello", encoding="utf-8"), "not a readable PCM WAV file"),
    (lambda p: None, "no such file"),
])
def test_the_transcribe_tool_names_a_bad_audio_file_before_loading(tmp_path, make, message):
  bad = tmp_path / "bad.wav"
  make(bad)
  proc = _transcribe(tmp_path / "no_run", bad)
  assert proc.returncode == 2, excerpt(proc.stderr)
  assert "Traceback" not in proc.stderr
  error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1 and message in error[0] and "bad.wav" in error[0], error


def test_the_tts_source_without_espeak_names_the_install_line(tmp_path):
  env = dict(os.environ, PATH=os.path.dirname(sys.executable))
  proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"),
                         f"--config={os.path.join(REPO, 'configs', 'speech.py')}", *COMMON,
                         f"--workdir={tmp_path / 'run'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 2, excerpt(proc.stderr)
  error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1 and "apt-get install espeak-ng flite" in error[0], error
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.long
def test_a_speech_adapter_run_trains_and_transcribes(tmp_path, speech_files):
  """LoRA on the speech model (its base fresh from the seed, rebuilt by the tool)."""
  workdir = tmp_path / "run"
  proc = _train("speech.py", _args(speech_files, workdir, 6) + [
      "--config.lora.rank=4", "--config.checkpoint_every_steps=6",
      "--config.eval_every_steps=6"])
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert "trainable parameters (LoRA rank 4)" in proc.stdout
  out = _transcribe(workdir, speech_files / "u001.wav", speech_files / "u002.wav")
  assert out.returncode == 0, excerpt(out.stderr)
  assert len(out.stdout.splitlines()) == 2
