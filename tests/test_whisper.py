"""Whisper in the speech kind: Hugging Face folders against transformers, and the features.

A random small WhisperForConditionalGeneration saved by transformers (the `hf-reference`
extra) loads into our speech_to_text model: the logits on a batch equal theirs, greedy
transcription after the forced prompt equals their generate, and export writes the same
tensors back. The log-mel features equal transformers' WhisperFeatureExtractor on real
recordings.
"""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import pretrained
from transformer_jax.decode import prompted, search
from transformer_jax.kinds.speech import audio
from transformer_jax.models.speech import SpeechToText
from transformer_jax.pretrained import whisper

from test_pretrained import _reference

VOCAB = 300
FRAMES = 2 * whisper.SOURCE_POSITIONS
START, NO_TIMESTAMPS, EOT = 297, 299, 296


def _save_reference(path) -> str:
  torch, transformers = _reference()
  config = transformers.WhisperConfig(
      vocab_size=VOCAB, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2,
      encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
      decoder_ffn_dim=48, max_source_positions=whisper.SOURCE_POSITIONS,
      max_target_positions=24, decoder_start_token_id=START, eos_token_id=EOT,
      pad_token_id=EOT, bos_token_id=EOT, suppress_tokens=[5, 6],
      begin_suppress_tokens=[7, EOT])
  torch.manual_seed(0)
  model = transformers.WhisperForConditionalGeneration(config)
  with torch.no_grad():  # biases and norms away from their init, so a misplaced one shows.
    for n, p in model.named_parameters():
      if ("norm" in n or n.endswith("bias")) and "embed_positions" not in n:
        p.add_(0.1 * torch.randn_like(p))
  model.eval()
  folder = os.path.join(str(path), "whisper")
  model.save_pretrained(folder)
  return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return _save_reference(tmp_path_factory.mktemp("whisper"))


def _features(b: int = 2) -> np.ndarray:
  return np.random.default_rng(0).normal(size=(b, FRAMES, 80)).astype(np.float32)


def _ours_input(features_BTF: np.ndarray) -> jnp.ndarray:
  """Every frame of the 30 s window counts (segment 1): Whisper does not mask padding."""
  return jnp.concatenate([features_BTF, np.ones(features_BTF.shape[:2] + (1,), np.float32)], -1)


def test_whisper_logits_equal_transformers(folder):
  torch, transformers = _reference()
  features = _features()
  ids = np.array([[START, NO_TIMESTAMPS, 11, 12, 13, 14], [START, NO_TIMESTAMPS, 40, 41, 42,
                                                           43]], np.int32)
  theirs_model = transformers.WhisperForConditionalGeneration.from_pretrained(folder)
  theirs_model.eval()
  with torch.no_grad():
    theirs = theirs_model(input_features=torch.tensor(features.transpose(0, 2, 1)),
                          decoder_input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
  model, params, cfg = pretrained.load_hf(folder)
  assert isinstance(model, SpeechToText)
  inputs = _ours_input(features)
  encoded = model.apply({"params": params}, inputs, method=SpeechToText.encode)
  ours = model.apply({"params": params}, encoded, SpeechToText.source_valid(inputs, cfg),
                     jnp.asarray(ids), method=SpeechToText.decode)
  np.testing.assert_allclose(np.asarray(ours)[..., :VOCAB], theirs, atol=1e-4, rtol=1e-4)


def test_whisper_greedy_after_the_prompt_equals_transformers_generate(folder):
  torch, transformers = _reference()
  features = _features()
  theirs_model = transformers.WhisperForConditionalGeneration.from_pretrained(folder)
  theirs_model.eval()
  with torch.no_grad():
    theirs = theirs_model.generate(
        input_features=torch.tensor(features.transpose(0, 2, 1)),
        decoder_input_ids=torch.tensor([[START, NO_TIMESTAMPS]] * 2, dtype=torch.long),
        max_new_tokens=12, do_sample=False, num_beams=1, suppress_tokens=[5, 6],
        begin_suppress_tokens=[7, EOT]).numpy()[:, 2:]
  _, params, cfg = pretrained.load_hf(folder)
  prompt = prompted.Prompt(START, (NO_TIMESTAMPS,), EOT, (5, 6), (7, EOT))
  ours = np.asarray(jax.jit(lambda p, x: prompted.transcribe(
      p, x, None, config=cfg, options=search.DecodeOptions(method="greedy"), prompt=prompt,
      max_length=12, vocab_limit=VOCAB))(params, _ours_input(features)))
  for row_ours, row_theirs in zip(ours, theirs):
    row_theirs = list(row_theirs)
    end = row_theirs.index(EOT) + 1 if EOT in row_theirs else len(row_theirs)
    assert list(row_ours[:end]) == row_theirs[:end]


def test_whisper_exports_the_tensors_it_imported(folder):
  folder_ = pretrained.read_folder(folder)
  cfg = pretrained.model_config_of(folder_)
  ours = pretrained.params_of(folder_, cfg)
  back = whisper.to_hf(ours, cfg, VOCAB)
  for name, array in back.items():
    theirs = folder_.tensors.arrays[name[len("model."):]]
    if name == "model.encoder.embed_positions.weight":  # computed again, in float32.
      np.testing.assert_allclose(array, theirs, atol=1e-4)
    else:
      np.testing.assert_array_equal(array, theirs, name)
  # Every tensor but the tied output (a copy of the embedding) and nothing more.
  assert set(back) == {"model." + n for n in folder_.tensors.arrays if n != "proj_out.weight"}
  assert not whisper.check_exportable(cfg)


def _asterisk(n: int) -> list[str]:
  files = sorted(glob.glob("/usr/share/asterisk/sounds/en*/**/*.wav", recursive=True))
  if not files:
    pytest.skip("the Asterisk prompts are not installed (apt-get install "
                "asterisk-core-sounds-en-wav)")
  return files[:: max(len(files) // n, 1)][:n]


def test_whisper_features_equal_transformers_feature_extractor():
  _, transformers = _reference()
  extractor = transformers.WhisperFeatureExtractor()
  for path in _asterisk(3):
    samples, rate = audio.read_wav(path)
    x = audio.resample(samples, rate)
    theirs = extractor(x, sampling_rate=audio.SAMPLE_RATE, return_tensors="np")
    ours = audio.whisper_log_mel(samples, rate)
    assert ours.shape == (FRAMES, 80)
    np.testing.assert_allclose(ours, theirs["input_features"][0].T, atol=1e-4, err_msg=path)


def test_whisper_folder_of_another_shape_is_refused(folder, tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  bad = tmp_path / "bad"
  shutil.copytree(folder, bad)
  config = json.loads((bad / "config.json").read_text())
  config["num_mel_bins"] = 128
  (bad / "config.json").write_text(json.dumps(config))
  with pytest.raises(pretrained.PretrainedError, match="num_mel_bins=128"):
    pretrained.read_folder(str(bad))
