"""Today's decoders from Hugging Face folders: Llama, Qwen2 and Gemma 3 against transformers.

Random small models saved by transformers (the `hf-reference` extra) load into our
decoder_lm; on a padded batch our logits equal theirs; export and reload is identical.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from transformer_jax import pretrained
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.pretrained import export, llama

from test_pretrained import _reference

VOCAB = 300
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-6)
CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(
        COMMON, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16})),
    "llama_mqa_tied": ("LlamaConfig", "LlamaForCausalLM", dict(
        COMMON, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True,
        attention_bias=True, mlp_bias=True)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(COMMON, tie_word_embeddings=True)),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        COMMON, head_dim=32, sliding_window=4, layer_types=[
            "sliding_attention", "full_attention", "sliding_attention"],
        query_pre_attn_scalar=24)),
}


def _save_reference(name: str, path) -> str:
  torch, transformers = _reference()
  config_class, model_class, fields = CONFIGS[name]
  torch.manual_seed(0)
  model = getattr(transformers, model_class)(getattr(transformers, config_class)(**fields))
  with torch.no_grad():  # norms away from their init, so a wrong (1 + w) shows.
    for n, p in model.named_parameters():
      if "norm" in n or n.endswith("bias"):
        p.add_(0.1 * torch.randn_like(p))
  model.eval()
  folder = os.path.join(str(path), name)
  model.save_pretrained(folder)
  return folder


def _batch():
  """Two rows, the second right-padded: ids and their validity."""
  rng = np.random.default_rng(0)
  ids = rng.integers(3, VOCAB, (2, 11)).astype(np.int32)
  valid = np.ones_like(ids, bool)
  valid[1, 7:] = False
  ids[~valid] = 0
  return ids, valid


def _theirs(folder, ids, valid):
  torch, transformers = _reference()
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
  model.eval()
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(valid, dtype=torch.long))
  return out.logits.numpy()


def _ours(folder, ids, valid):
  model, params, cfg = pretrained.load_hf(folder)
  assert isinstance(model, DecoderLM)
  logits = model.apply({"params": params}, jnp.asarray(ids), None,
                       jnp.asarray(valid, jnp.int32), method=DecoderLM.logits)
  return np.asarray(logits)[..., :VOCAB], params, cfg


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_equal_transformers_on_a_padded_batch(name, tmp_path):
  folder = _save_reference(name, tmp_path)
  ids, valid = _batch()
  ours, _, cfg = _ours(folder, ids, valid)
  theirs = _theirs(folder, ids, valid)
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)
  if name == "gemma3":  # the options that make it Gemma, read from config.json.
    assert (cfg.qk_norm, cfg.post_norms, cfg.embed_scale, cfg.sliding_window,
            cfg.global_every, cfg.rotary_base_local) == (True, True, True, 4, 2, 1e4)
    assert [cfg.layer_window(i) for i in range(3)] == [4, 0, 4]
  if name == "llama":
    assert cfg.num_kv_heads == 2 and cfg.rotary_scaling[0] == "llama3"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_export_and_reload_is_identical(name, tmp_path):
  folder = _save_reference(name, tmp_path)
  _, params, cfg = pretrained.load_hf(folder)
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
  hf_config, tensors = export.hf_files("decoder_lm", cfg, flat, VOCAB, None)
  assert hf_config["model_type"] == json.load(open(os.path.join(folder, "config.json")))[
      "model_type"]
  out = str(tmp_path / "exported")
  export.write_folder(out, {"config.json": export.over_source_config(hf_config, folder)},
                      tensors, "model.safetensors")
  _, again, cfg_again = pretrained.load_hf(out)
  assert cfg_again == cfg
  for path, x in traverse_util.flatten_dict(again, sep="/").items():
    np.testing.assert_array_equal(np.asarray(x), flat[path], err_msg=path)
  # And transformers reads the export as it read the original.
  ids, valid = _batch()
  np.testing.assert_allclose(_theirs(out, ids, valid)[valid], _theirs(folder, ids, valid)[valid],
                             atol=1e-6)


def test_grouped_query_cache_holds_only_the_key_value_heads(tmp_path):
  folder = _save_reference("llama", tmp_path)
  model, params, cfg = pretrained.load_hf(folder)
  decode_model = DecoderLM(cfg.replace(decode=True))
  cache = jax.eval_shape(lambda: decode_model.init(jax.random.key(0),
                                                   jnp.ones((2, 16), jnp.int32))["cache"])
  key = cache["decoder"]["layer_0"]["self_attention"]["cached_key"]
  assert key.shape == (2, cfg.num_kv_heads, cfg.head_dim, 16)  # [B, N, K, S], N = 2 < 4 heads.


def _shifted(params, eos_id: int):
  """Our id layout (data/hf_tokenizer.py): the folder's id i is our i + 2, EOS is 1."""
  from transformer_jax.pretrained.tensors import nest, shift_vocab  # pylint: disable=import-outside-toplevel
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
  return jax.tree.map(jnp.asarray, nest(shift_vocab(flat, llama.VOCAB_TABLES, 2, eos_id)))


@pytest.mark.parametrize("name", ["gemma3", "qwen2"])
def test_greedy_generation_equals_transformers_generate(name, tmp_path):
  torch, transformers = _reference()
  from transformer_jax.decode import lm, search  # pylint: disable=import-outside-toplevel
  folder = _save_reference(name, tmp_path)
  _, params, cfg = pretrained.load_hf(folder)
  eos = 7  # an ordinary token of the random model plays end-of-text.
  prompts = [[5, 9, 33, 120, 7 + 1, 250], [17, 18], [40, 41, 42, 43]]
  new_tokens = 9
  width = max(map(len, prompts)) + new_tokens
  batch = np.zeros((len(prompts), width), np.int32)
  for row, p in enumerate(prompts):
    batch[row, :len(p)] = np.asarray(p) + 2
  ours = np.asarray(lm.generate(
      _shifted(params, eos), jnp.asarray(batch[:, :6]), None, config=cfg.replace(deterministic=True),
      options=search.DecodeOptions(method="greedy"), max_length=width, vocab_limit=VOCAB + 2,
      start_from_prompt=True))
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
  for row, p in enumerate(prompts):
    theirs = model.generate(torch.tensor([p]), max_new_tokens=new_tokens, do_sample=False,
                            eos_token_id=eos, pad_token_id=eos)[0].tolist()
    got = [t - 2 if t > 1 else eos for t in ours[row] if t != 0][:len(theirs)]
    assert got == theirs, (row, got, theirs)


def test_prefill_gives_the_tokens_of_one_step_at_a_time():
  """A grouped-query, sliding-window model: prompts of different lengths prefilled in one
  pass continue exactly as when fed token by token, cached or not."""
  from transformer_jax.decode import lm, search  # pylint: disable=import-outside-toplevel
  from transformer_jax.models.config import TransformerConfig  # pylint: disable=import-outside-toplevel
  cfg = TransformerConfig(vocab_size=128, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
                          mlp_dim=48, num_decoder_layers=3, positions="rotary", norm="rmsnorm",
                          mlp_gated=True, activation="silu", sliding_window=3, global_every=3,
                          rotary_base_local=100.0, qk_norm=True, dropout_rate=0.0,
                          attention_dropout_rate=0.0, deterministic=True,
                          logits_via_embedding=False)
  params = DecoderLM(cfg).init(jax.random.key(1), jnp.ones((1, 8), jnp.int32))["params"]
  params = jax.tree.map(lambda x: x * 3.0, params)  # sharper logits: ties are rarer.
  prompt = np.zeros((3, 7), np.int32)
  for row, n in enumerate((7, 2, 4)):
    prompt[row, :n] = np.arange(2, 2 + n) * (row + 3) % 120 + 2
  run = lambda **kw: np.asarray(lm.generate(
      params, jnp.asarray(prompt), None, config=cfg, options=search.DecodeOptions(),
      max_length=16, stop_ids=(), **kw))
  prefilled = run()
  np.testing.assert_array_equal(prefilled, run(prefill=False))
  np.testing.assert_array_equal(prefilled, run(cached=False))
  np.testing.assert_array_equal(prefilled[:, :2], prompt[:, :2])
  np.testing.assert_array_equal(run(start_from_prompt=True), run(start_from_prompt=True,
                                                                 cached=False))


def test_generate_tool_chats_with_a_llama_folder(tmp_path):
  """The generate tool on a Llama folder: the chat template's turn, greedy continuations
  that stop at the end-of-turn token, the same as the library's; bad flags exit 2."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import hf_folders  # pylint: disable=import-outside-toplevel
  from transformer_jax.decode import search  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import pretrained_lm  # pylint: disable=import-outside-toplevel
  folder = hf_folders.llama_folder(tmp_path / "llama", ["hello there, how are you?"] * 20)
  lm = pretrained_lm.load_folder(folder)
  assert pretrained_lm.chat_prompt(lm, "hi", system="be brief") == (
      "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
      "<|im_start|>assistant\n")
  end_of_turn = lm.tokenizer.encode("<|im_end|>", add_eos=False)
  assert len(end_of_turn) == 1 and end_of_turn[0] in lm.stop_ids
  ids = pretrained_lm.generate(lm, ["hello", "how are you"], options=search.DecodeOptions(),
                               max_new_tokens=6, batch_size=2, chat=True, ids_only=True)
  assert all(1 <= len(row) <= 6 and not set(row) & set(lm.stop_ids) for row in ids)
  texts = pretrained_lm.generate(lm, ["hello", "how are you"], options=search.DecodeOptions(),
                                 max_new_tokens=6, chat=True)
  assert texts == [lm.tokenizer.decode(row) for row in ids]  # batch 1 == batch 2.
  tool = [sys.executable, "-m", "transformer_jax.generate", f"--hf={folder}"]
  proc = subprocess.run(tool + ["--chat", "--prompt=hello", "--prompt=how are you",
                                "--max_new_tokens=6"], capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split("\n")[:-1] == [t.replace("\n", "\\n") for t in texts]
  bad = subprocess.run(tool + [f"--workdir={tmp_path}", "--prompt=x"], capture_output=True,
                       text=True, timeout=120, check=False)
  assert bad.returncode == 2 and "give one of --workdir, --hf or --gguf" in bad.stderr
