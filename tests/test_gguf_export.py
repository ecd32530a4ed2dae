"""Runs written as llama.cpp GGUF files (pretrained/gguf_writer.py, gguf_vocab.py, export_hf).

The writer is the inverse of gguf_file.read_gguf: a Llama folder (byte-level BPE, ChatML
template) and a Gemma 3 one (SentencePiece-style BPE), each through our load_hf and
hf_files, come back from the written file with the same tensors, config fields, token ids
and chat template; transformers' own GGUF loader gives the original model's logits; Q8_0
stays within its quantization step; export_hf writes a fine-tuned run as the file that
--format=hf's folder describes. llama.cpp itself is not run here (llama-cpp-python compiles
for many minutes): the files are checked against transformers' reader and ours.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from flax.linen import unbox
from safetensors.numpy import load_file
from tokenizers import Tokenizer

import hf_folders
from conftest import excerpt
from test_gguf import SNIPPETS, _reference, _sentencepiece_tokens  # skips without gguf
from transformer_jax import pretrained
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.models.transformer import TransformerConfig
from transformer_jax.pretrained import export, gguf_vocab, gguf_writer
from transformer_jax.pretrained.gguf_file import read_gguf
from transformer_jax.pretrained.gguf_tokenizer import build_tokenizer
from transformer_jax.pretrained.tensors import PretrainedError

import gguf  # noqa: E402  (installed: test_gguf skips the module otherwise)
from gguf.quants import dequantize, quantize  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [s for s in SNIPPETS if s] * 3
CONFIG_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings",
                 "vocab_size", "tie_word_embeddings", "rope_theta")
GEMMA_FIELDS = ("sliding_window", "rope_local_base_freq", "query_pre_attn_scalar",
                "layer_types", "hidden_activation")
GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
                  "{{ m['content'] }}<end_of_turn>\n{% endfor %}")


def _gemma_folder(path) -> str:
  """A Gemma 3 folder (Gemma3ForCausalLM, made here without torch): 7 layers (the 6th global,
  as llama.cpp's gemma3 fixes it), head_dim 256 = query_pre_attn_scalar (transformers' GGUF
  defaults), norms away from zero, a SentencePiece-style tokenizer.json and a chat template."""
  tokens, types, scores = _sentencepiece_tokens()
  meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": types, "tokenizer.ggml.scores": scores,
          "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1,
          "tokenizer.ggml.unknown_token_id": 3, "tokenizer.ggml.padding_token_id": 0,
          "tokenizer.ggml.add_bos_token": True}
  tok, _ = build_tokenizer(meta, "gemma3", "test")
  cfg = TransformerConfig(
      vocab_size=len(tokens), emb_dim=32, num_heads=2, num_kv_heads=1, head_dim=256, mlp_dim=48,
      num_decoder_layers=7, norm="rmsnorm", mlp_gated=True, mlp_bias=False, activation="gelu",
      attention_bias=False,
      positions="rotary", rotary_base=1e6, rotary_base_local=1e4, sliding_window=4,
      global_every=6, qk_norm=True, post_norms=True, embed_scale=True,
      attention_scale=256 ** -0.5, logits_via_embedding=True, scale_tied_logits=False,
      max_length=128, deterministic=True)
  variables = DecoderLM(cfg).init(jax.random.key(1), jnp.ones((1, 8), jnp.int32))
  flat = {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(unbox(variables["params"]), sep="/").items()}
  rng = np.random.default_rng(1)
  flat = {k: (v + rng.normal(0, 0.1, v.shape).astype(np.float32) if k.endswith("scale") else v)
          for k, v in flat.items()}
  config, tensors = export.hf_files("decoder_lm", cfg, flat, len(tokens), None)
  assert config["model_type"] == "gemma3_text"
  config.update(bos_token_id=2, eos_token_id=1, pad_token_id=0)
  export.write_folder(str(path), {"config.json": config, "tokenizer_config.json": {
      "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
      "add_bos_token": True, "add_eos_token": False, "chat_template": GEMMA_TEMPLATE,
      "tokenizer_class": "PreTrainedTokenizerFast"}}, tensors, "model.safetensors")
  tok.save(os.path.join(str(path), "tokenizer.json"))
  return str(path)


def _write(folder, output, qtype="f32", **kw) -> tuple[dict, dict, str]:
  """The folder through our load_hf and hf_files (export_hf's path) into a GGUF file:
  (config.json, state dict, the writer's summary)."""
  _, params, cfg = pretrained.load_hf(folder)
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
  tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
  hf_config, tensors = export.hf_files("decoder_lm", cfg, flat, tok.get_vocab_size(), None)
  hf_config = export.over_source_config(hf_config, folder)
  with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
    tok_config = json.load(f)
  what = gguf_writer.write_gguf(hf_config, tensors, os.path.join(folder, "tokenizer.json"),
                                tok_config, str(output), qtype, **kw)
  return hf_config, tensors, what


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("llama")
  folder = hf_folders.llama_folder(tmp / "folder", TEXTS)
  files = {q: tmp / f"llama.{q}.gguf" for q in ("f32", "q8_0")}
  written = {q: _write(folder, path, q) for q, path in files.items()}
  return folder, files, written


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("gemma")
  folder = _gemma_folder(tmp / "folder")
  files = {q: tmp / f"gemma.{q}.gguf" for q in ("f32", "q8_0")}
  written = {q: _write(folder, path, q) for q, path in files.items()}
  return folder, files, written


def _tensor_types(path) -> dict[str, str]:
  return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


# ------------------------------------------------------------------ 1. the round trip


def test_llama_round_trip_is_exact(llama):
  folder, files, written = llama
  hf_config, _, what = written["f32"]
  assert "llama as llama.cpp's 'llama' (21 tensors: 21 F32" in what and "gpt2/gpt-2" in what
  got = read_gguf(str(files["f32"]))
  want = load_file(os.path.join(folder, "model.safetensors"))
  assert sorted(got.arrays) == sorted(want)
  for name, array in want.items():
    np.testing.assert_array_equal(got.arrays[name], array, err_msg=name)
  for field in CONFIG_FIELDS + ("hidden_act", "attention_bias", "mlp_bias", "eos_token_id"):
    assert got.hf_config[field] == hf_config[field], field
  assert got.hf_config["rope_scaling"] is None
  # The tokenizer: the same ids (turn tokens whole), and text back; its special tokens.
  tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
  lines = TEXTS + ["<|im_start|>user\nHallo, wie geht's?<|im_end|>\n<|im_start|>assistant\n"]
  for text in lines:
    ids = got.tokenizer.encode(text).ids
    assert ids == tok.encode(text).ids, text
    assert got.tokenizer.decode(ids, skip_special_tokens=False) == text
  assert got.chat_template == hf_folders.CHATML
  s = got.special_tokens
  assert (s["bos_token"], s["eos_token"], s["add_bos_token"], s["add_eos_token"]) == (
      "<|im_start|>", "<|im_end|>", False, False)
  meta = gguf.GGUFReader(str(files["f32"])).fields
  assert meta["tokenizer.ggml.pre"].contents() == "gpt-2"
  types = meta["tokenizer.ggml.token_type"].contents()
  assert [i for i, t in enumerate(types) if t == 3] == [tok.token_to_id(t) for t in (
      "<|endoftext|>", "<|im_start|>", "<|im_end|>")]
  assert meta["general.file_type"].contents() == 0 and meta["llama.rope.dimension_count"].contents() == 8


def test_gemma3_round_trip_is_exact_up_to_the_norms_plus_one(gemma):
  folder, files, written = gemma
  hf_config, _, what = written["f32"]
  assert "gemma3_text as llama.cpp's 'gemma3'" in what and "llama/default" in what
  got = read_gguf(str(files["f32"]))
  want = load_file(os.path.join(folder, "model.safetensors"))
  assert sorted(got.arrays) == sorted(want) and "lm_head.weight" not in want  # tied
  for name, array in want.items():
    if "norm" in name:  # stored as 1 + w, read back as (1 + w) - 1: within a rounding of 1.
      np.testing.assert_allclose(got.arrays[name], array, rtol=0, atol=1e-7, err_msg=name)
      assert np.abs(array).max() > 0.05, name
    else:
      np.testing.assert_array_equal(got.arrays[name], array, err_msg=name)
  for field in CONFIG_FIELDS + GEMMA_FIELDS + ("bos_token_id", "eos_token_id", "pad_token_id"):
    assert got.hf_config[field] == hf_config[field], field
  assert got.hf_config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention",
                                                                       "sliding_attention"]
  tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
  for text in TEXTS + ["<start_of_turn>user\nHallo  there<end_of_turn>\n"]:
    ids = got.tokenizer.encode(text).ids
    assert ids == tok.encode(text).ids, text
    assert got.tokenizer.decode(ids, skip_special_tokens=False) == tok.decode(
        tok.encode(text).ids, skip_special_tokens=False)
  assert got.chat_template == GEMMA_TEMPLATE
  s = got.special_tokens
  assert (s["bos_token"], s["eos_token"], s["pad_token"], s["unk_token"], s["add_bos_token"]) == (
      "<bos>", "<eos>", "<pad>", "<unk>", True)
  meta = gguf.GGUFReader(str(files["f32"])).fields
  assert meta["tokenizer.ggml.add_space_prefix"].contents() is False
  assert meta["gemma3.rope.freq_base_swa"].contents() == 10000.0
  assert meta["gemma3.attention.sliding_window"].contents() == 4
  types = meta["tokenizer.ggml.token_type"].contents()
  assert types[:6] == [3, 3, 3, 2, 3, 3] and set(types[6:262]) == {6}


# ------------------------------------------------------------------ 2. transformers' loader


def _logits(model, torch, ids):
  with torch.no_grad():
    return model(torch.tensor([ids])).logits.numpy()


@pytest.mark.parametrize("which", ["llama", "gemma"])
def test_transformers_gguf_loader_gives_the_original_logits(which, llama, gemma):
  torch, transformers = _reference()
  folder, files, _ = {"llama": llama, "gemma": gemma}[which]
  path = files["f32"]
  load = transformers.AutoModelForCausalLM.from_pretrained
  original = load(folder, dtype=torch.float32).eval()
  theirs = load(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
  ids = [2, 9, 200, 17, 280, 33, 5, 45, 250, 11, 270, 5, 7, 8]  # longer than Gemma's window
  np.testing.assert_allclose(_logits(theirs, torch, ids), _logits(original, torch, ids),
                             rtol=0, atol=1e-5)
  if which == "llama":  # and its tokenizer: the folder's ids.
    tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert tok(TEXTS)["input_ids"] == [t.ids for t in Tokenizer.from_file(
        os.path.join(folder, "tokenizer.json")).encode_batch(TEXTS)]


# ------------------------------------------------------------------ 3. Q8_0


@pytest.mark.parametrize("which", ["llama", "gemma"])
def test_q8_0_is_within_the_quantization_step(which, llama, gemma):
  folder, files, _ = {"llama": llama, "gemma": gemma}[which]
  got = read_gguf(str(files["q8_0"])).arrays
  types = _tensor_types(files["q8_0"])
  want = load_file(os.path.join(folder, "model.safetensors"))
  q8 = gguf.GGMLQuantizationType.Q8_0
  for name, w in want.items():
    if w.ndim == 1:  # norms: F32, exact (Gemma's up to the +1).
      np.testing.assert_allclose(got[name], w, rtol=0, atol=1e-7, err_msg=name)
      continue
    if w.shape[1] % 32:  # rows Q8_0's 32-blocks do not divide: F16, as llama.cpp's converter.
      np.testing.assert_array_equal(got[name], w.astype(np.float16).astype(np.float32), name)
      continue
    # Q8_0 blocks run along rows, which the q/k permutation only reorders: exactly the
    # original's own Q8_0 round trip, within half a step (and the f16 scale's rounding).
    np.testing.assert_array_equal(got[name], dequantize(quantize(w, q8), q8), name)
    step = np.abs(w.reshape(w.shape[0], -1, 32)).max(-1, keepdims=True) / 127
    assert (np.abs(got[name] - w).reshape(step.shape[0], -1, 32) <= step * 0.57).all(), name
    assert not np.array_equal(got[name], w), name
  counts = {t: sorted(types.values()).count(t) for t in set(types.values())}
  assert counts == ({"F32": 5, "F16": 2, "Q8_0": 14} if which == "llama"
                    else {"F32": 43, "F16": 7, "Q8_0": 43}), counts
  assert all(types[n] == "F32" for n in types if n.endswith("norm.weight"))


def test_f16_weights_are_rounded_norms_stay_f32(llama, tmp_path):
  folder, _, _ = llama
  _write(folder, tmp_path / "f16.gguf", "f16")
  types = _tensor_types(tmp_path / "f16.gguf")
  assert {t for n, t in types.items() if n.endswith("norm.weight")} == {"F32"}
  assert {t for n, t in types.items() if not n.endswith("norm.weight")} == {"F16"}
  got = read_gguf(str(tmp_path / "f16.gguf")).arrays
  for name, w in load_file(os.path.join(folder, "model.safetensors")).items():
    np.testing.assert_array_equal(got[name], w.astype(np.float16).astype(np.float32), name)


# ------------------------------------------------------------------ what GGUF cannot hold


def test_what_llama_cpp_cannot_hold_is_one_error_naming_it(llama, tmp_path):
  folder, _, written = llama
  hf_config, tensors, _ = written["f32"]
  tok = os.path.join(folder, "tokenizer.json")
  out = str(tmp_path / "x.gguf")

  def error(config=hf_config, state=tensors, tokenizer=tok, tok_config=None, qtype="f32"):
    with pytest.raises(PretrainedError) as e:
      gguf_writer.write_gguf(config, state, tokenizer, tok_config or {}, out, qtype)
    assert not os.path.exists(out) and not os.listdir(tmp_path)
    return str(e.value)

  assert "a 'gpt2' model (GPT2LMHeadModel) has no GGUF form" in error(
      {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
  assert "hidden_act='gelu_new'" in error({**hf_config, "hidden_act": "gelu_new"})
  assert "GGUF type 'q4_k'" in error(qtype="q4_k")
  wordpiece = hf_folders.wordpiece_tokenizer(["hello", "there"])
  assert "a WordPiece tokenizer.json has no GGUF form" in error(tokenizer=wordpiece)
  odd = Tokenizer.from_file(tok)
  from tokenizers import pre_tokenizers  # pylint: disable=import-outside-toplevel
  odd.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.ByteLevel(use_regex=False)])
  assert "is none that llama.cpp names" in error(tokenizer=odd)
  small = {**tensors, "model.embed_tokens.weight": tensors["model.embed_tokens.weight"][:100]}
  assert "the tokenizer has id 322, the embedding only 100 rows" in error(state=small)
  # An existing output is left alone.
  (tmp_path / "x.gguf").write_text("keep")
  with pytest.raises(PretrainedError, match="exists"):
    gguf_writer.write_gguf(hf_config, tensors, tok, {}, out)
  assert (tmp_path / "x.gguf").read_text() == "keep"


def test_gemma3_layouts_llama_cpp_fixes_are_refused(gemma, tmp_path):
  folder, _, written = gemma
  hf_config, tensors, _ = written["f32"]
  tok = os.path.join(folder, "tokenizer.json")
  every_2nd = ["sliding_attention", "full_attention"] * 3 + ["sliding_attention"]
  with pytest.raises(PretrainedError) as e:
    gguf_writer.write_gguf({**hf_config, "layer_types": every_2nd, "query_pre_attn_scalar": 24,
                            "rope_local_base_freq": 5e4}, tensors, tok, {},
                           str(tmp_path / "x.gguf"))
  message = str(e.value)
  assert "cannot be written as llama.cpp's 'gemma3'" in message and "\n" not in message
  for part in ("global layers [1, 3, 5]", "query_pre_attn_scalar=24", "RoPE base 50000"):
    assert part in message, message


def test_the_source_files_pre_tokenizer_name_is_kept(llama, tmp_path):
  """A run fine-tuned from a GGUF file keeps its `tokenizer.ggml.pre` where the tokenizer
  still splits as that name does ("default" and "gpt-2" both split as GPT-2 in our reader)."""
  folder, files, written = llama
  hf_config, tensors, _ = written["f32"]
  assert gguf_vocab.source_pre(str(files["f32"])) == "gpt-2"
  assert gguf_vocab.source_pre(str(tmp_path / "missing.gguf")) is None
  tok = os.path.join(folder, "tokenizer.json")
  for source, want in (("default", "default"), ("llama-bpe", "gpt-2"), (None, "gpt-2")):
    out = tmp_path / f"{source}.gguf"
    gguf_writer.write_gguf(hf_config, tensors, tok, {}, str(out), source_pre_name=source)
    assert gguf.GGUFReader(str(out)).fields["tokenizer.ggml.pre"].contents() == want


@pytest.mark.parametrize("pre", ["llama-bpe", "qwen2", "smollm", "gpt-2"])
def test_byte_level_splits_llama_cpp_names_come_back(llama, pre):
  """A byte-level tokenizer that splits as one of llama.cpp's named pre-tokenizers (as our
  reader builds it) is written under that name and read back with the same ids."""
  folder, _, _ = llama
  base = gguf_vocab.tokenizer_metadata(os.path.join(folder, "tokenizer.json"), {}, {},
                                        "llama", 323)
  tok, _ = build_tokenizer({**base, "tokenizer.ggml.pre": pre}, "llama", "test")
  meta = gguf_vocab.tokenizer_metadata(tok, {}, {}, "llama", 323)
  assert meta["tokenizer.ggml.pre"] == pre and meta["tokenizer.ggml.model"] == "gpt2"
  again, _ = build_tokenizer(meta, "llama", "test")
  lines = SNIPPETS + ["x 1234567 y", "it's 2024!\n\n  ok"]
  assert [e.ids for e in again.encode_batch(lines)] == [e.ids for e in tok.encode_batch(lines)]


def test_llama_2_style_sentencepiece_comes_back_with_its_space_prefix():
  tokens, types, scores = _sentencepiece_tokens()
  meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": types, "tokenizer.ggml.scores": scores,
          "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.unknown_token_id": 3,
          "tokenizer.ggml.add_space_prefix": True}
  tok, _ = build_tokenizer(meta, "llama", "test")  # Metaspace, "▁" before the text; adds BOS.
  written = gguf_vocab.tokenizer_metadata(tok, {}, {}, "llama", len(tokens))
  assert written["tokenizer.ggml.add_space_prefix"] is True
  assert written["tokenizer.ggml.add_bos_token"] is True  # from its TemplateProcessing.
  assert written["tokenizer.ggml.unknown_token_id"] == 3
  again, _ = build_tokenizer(written, "llama", "test")
  lines = [s for s in SNIPPETS if s.isascii()]
  assert [e.ids for e in again.encode_batch(lines)] == [e.ids for e in tok.encode_batch(lines)]
  with pytest.raises(PretrainedError, match="puts a space before the text"):
    gguf_vocab.tokenizer_metadata(tok, {}, {}, "gemma3", len(tokens))


def test_llama3_rope_scaling_is_the_converters_rope_freqs(tmp_path):
  """Llama 3's RoPE scaling as llama.cpp reads it: `rope_freqs.weight`, the divisors that
  turn base**(-2i/d) into transformers' llama3 inverse frequencies."""
  torch, transformers = _reference()
  from test_llama_family import _save_reference  # pylint: disable=import-outside-toplevel
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # pylint: disable=import-outside-toplevel
  folder = _save_reference("llama", tmp_path)
  hf_folders.byte_bpe_tokenizer(TEXTS, vocab_size=299).save(os.path.join(folder, "tokenizer.json"))
  _, params, cfg = pretrained.load_hf(folder)
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
  hf_config, tensors = export.hf_files("decoder_lm", cfg, flat, 300, None)
  out = tmp_path / "llama3.gguf"
  gguf_writer.write_gguf(hf_config, tensors, os.path.join(folder, "tokenizer.json"), {}, str(out))
  factors = next(t for t in gguf.GGUFReader(str(out)).tensors if t.name == "rope_freqs.weight")
  config = transformers.AutoConfig.from_pretrained(folder)
  inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
  base = 1.0 / (5e5 ** (np.arange(0, 16, 2) / 16))
  np.testing.assert_allclose(base / np.asarray(factors.data), inv_freq.numpy(), rtol=1e-6)
  f = np.asarray(factors.data).tolist()
  assert 8.0 in f and any(1 < v < 8 for v in f), f  # scaled frequencies and a smoothed one.
  with pytest.raises(PretrainedError, match="rope_freqs"):  # our reader does not take it.
    read_gguf(str(out))


# ------------------------------------------------------------------ 4. export_hf


def _run(*args):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                        env=dict(os.environ), timeout=600, check=False)


def _train(folder, text_file, workdir):
  from test_finetune_hf import lm_args  # pylint: disable=import-outside-toplevel
  proc = _run(*lm_args(folder, text_file, 3, 1, 3, f"--workdir={workdir}"))
  assert proc.returncode == 0, excerpt(proc.stderr)


def test_export_hf_writes_the_run_as_the_hf_export_describes(tmp_path):
  texts = [f"{s} ({i})" for i in range(8) for s in SNIPPETS if s]  # distinct: split by hash.
  (tmp_path / "text.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
  folder = hf_folders.llama_folder(tmp_path / "llama", texts)
  workdir = tmp_path / "run"
  _train(folder, tmp_path / "text.txt", workdir)
  out = tmp_path / "run.gguf"
  export_hf = ("-m", "transformer_jax.export_hf", f"--workdir={workdir}")
  proc = _run(*export_hf, f"--output={out}", "--format=gguf")
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert proc.stdout.startswith(f"wrote {out}: llama as llama.cpp's 'llama' (21 tensors")
  proc = _run(*export_hf, f"--output={tmp_path / 'hf'}")
  assert proc.returncode == 0, excerpt(proc.stderr)
  got = read_gguf(str(out))
  want = load_file(str(tmp_path / "hf" / "model.safetensors"))
  assert sorted(got.arrays) == sorted(want)
  for name, array in want.items():
    np.testing.assert_array_equal(got.arrays[name], array, err_msg=name)
  # The run moved the embedding's rows (its ids are the tokenizer's + 2); both exports
  # move them back, so that they differ from the folder's only by training.
  before = load_file(os.path.join(folder, "model.safetensors"))["model.embed_tokens.weight"]
  assert np.abs(got.arrays["model.embed_tokens.weight"] - before).max() < 0.1
  config = json.loads((tmp_path / "hf" / "config.json").read_text())
  for field in CONFIG_FIELDS + ("eos_token_id",):
    assert got.hf_config[field] == config[field], field
  tok = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
  # BOS: tokenizer_config.json's token wins over config.json's id, as in gguf's SpecialVocab.
  assert got.hf_config["bos_token_id"] == tok.token_to_id("<|im_start|>") != config["bos_token_id"]
  for text in texts[:10]:
    assert got.tokenizer.encode(text).ids == tok.encode(text).ids
  assert got.chat_template == hf_folders.CHATML
  proc = _run(*export_hf, f"--output={out}", "--format=gguf", "--gguf_type=q8_0")
  assert proc.returncode == 2 and "exists (nothing was written)" in proc.stderr
  proc = _run(*export_hf, f"--output={tmp_path / 'x'}", "--gguf_type=q8_0")
  assert proc.returncode == 2 and "--gguf_type=q8_0 is for --format=gguf" in proc.stderr


@pytest.mark.long
def test_export_hf_refuses_a_gpt2_run_in_one_line(tmp_path):
  texts = [f"{s} ({i})" for i in range(8) for s in SNIPPETS if s]  # distinct: split by hash.
  (tmp_path / "text.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
  folder = hf_folders.gpt2_folder(tmp_path / "gpt2", texts)
  workdir = tmp_path / "run"
  _train(folder, tmp_path / "text.txt", workdir)
  out = tmp_path / "run.gguf"
  proc = _run("-m", "transformer_jax.export_hf", f"--workdir={workdir}", f"--output={out}",
              "--format=gguf")
  assert proc.returncode == 2, excerpt(proc.stderr)
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "'gpt2' model" in lines[0], lines
  assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".export")]


@pytest.mark.long
def test_a_run_fine_tuned_from_a_gguf_file_keeps_its_pre_tokenizer_name(llama, tmp_path):
  """config.init_from.gguf: the source file's `tokenizer.ggml.pre` ("default" here, which our
  reader splits as GPT-2 does) is written again, not the name the tokenizer.json implies."""
  folder, _, _ = llama
  source = tmp_path / "source.gguf"
  _write(folder, source, "q8_0", source_pre_name="default")
  texts = [f"{s} ({i})" for i in range(8) for s in SNIPPETS if s]
  (tmp_path / "text.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
  from test_finetune_hf import lm_args  # pylint: disable=import-outside-toplevel
  args = [a.replace("init_from.hf=", "init_from.gguf=") for a in
          lm_args(source, tmp_path / "text.txt", 3, 1, 3, f"--workdir={tmp_path / 'run'}")]
  proc = _run(*args)
  assert proc.returncode == 0, excerpt(proc.stderr)
  out = tmp_path / "run.gguf"
  proc = _run("-m", "transformer_jax.export_hf", f"--workdir={tmp_path / 'run'}",
              f"--output={out}", "--format=gguf", "--gguf_type=q8_0")
  assert proc.returncode == 0, excerpt(proc.stderr)
  assert "gpt2/default" in proc.stdout
  assert gguf.GGUFReader(str(out)).fields["tokenizer.ggml.pre"].contents() == "default"
  assert read_gguf(str(out)).tokenizer.encode(texts[3]).ids == Tokenizer.from_file(
      os.path.join(folder, "tokenizer.json")).encode(texts[3]).ids
