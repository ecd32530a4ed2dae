"""Small Hugging Face folders for tests, made here without torch: a WordPiece
tokenizer.json (tokenizers) and random BERT weights written by our exporter."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import traverse_util
from flax.linen import unbox

from transformer_jax.models.classifier import EncoderClassifier
from transformer_jax.models.decoder_lm import DecoderLM
from transformer_jax.models.transformer import TransformerConfig
from transformer_jax.pretrained import export

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def wordpiece_tokenizer(words) -> tokenizers.Tokenizer:
  """A lowercasing BERT-style tokenizer: [PAD]=0, [CLS] text [SEP], one id per word."""
  vocab = {w: i for i, w in enumerate(SPECIALS + sorted({w.lower() for w in words}))}
  tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token="[UNK]"))
  tok.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  tok.add_special_tokens(SPECIALS)
  tok.enable_padding(pad_id=0, pad_token="[PAD]", length=64)  # as all-MiniLM's file does.
  tok.enable_truncation(64)
  return tok


def bert_config(vocab_size: int, num_classes: int = 0, max_length: int = 40) -> TransformerConfig:
  return TransformerConfig(
      vocab_size=vocab_size, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
      num_encoder_layers=2, norm_position="post", activation="gelu_exact",
      layer_norm_epsilon=1e-12, attention_bias=True, positions="learned",
      max_length=max_length, class_vector=False, embedding_norm=True, pooling="cls",
      num_classes=num_classes, deterministic=True)


def bert_folder(path, words, *, labels=None, seed=0, tokenizer=True) -> str:
  """A BERT folder (BertModel, or BertForSequenceClassification with `labels`) with random
  weights and, with `tokenizer`, a tokenizer.json over `words`."""
  tok = wordpiece_tokenizer(words)
  vocab = tok.get_vocab_size()
  cfg = bert_config(vocab, len(labels) if labels else 1)
  variables = EncoderClassifier(cfg).init(jax.random.key(seed), jnp.ones((1, 8), jnp.int32))
  flat = {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(unbox(variables["params"]), sep="/").items()}
  rng = np.random.default_rng(seed)  # LayerNorms and biases away from 1 and 0.
  flat = {k: (v + rng.normal(0, 0.05, v.shape).astype(np.float32)
              if k.endswith(("scale", "bias", "_bias")) else v) for k, v in flat.items()}
  if not labels:
    flat = {k: v for k, v in flat.items() if not k.startswith("head/")}
  config, tensors = export.hf_files("encoder_classifier", cfg, flat, vocab, labels)
  export.write_folder(str(path), {"config.json": config}, tensors, "model.safetensors")
  if tokenizer:
    tok.save(os.path.join(str(path), "tokenizer.json"))
  return str(path)


def byte_bpe_tokenizer(texts, vocab_size: int = 320) -> tokenizers.Tokenizer:
  """A GPT-2-style byte-level BPE: id 0 is an ordinary byte, <|endoftext|> the last id."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=vocab_size, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False)
  tok.train_from_iterator(texts, trainer)
  tok.add_special_tokens(["<|endoftext|>"])
  return tok


def gpt2_folder(path, texts, *, seed=0, max_length=64) -> str:
  """A GPT-2 folder (GPT2LMHeadModel) with random weights and a byte-level BPE tokenizer."""
  tok = byte_bpe_tokenizer(texts)
  vocab = tok.get_vocab_size()
  cfg = TransformerConfig(
      vocab_size=vocab, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
      num_decoder_layers=2, norm_position="pre", activation="gelu", layer_norm_epsilon=1e-5,
      attention_bias=True, positions="learned", max_length=max_length,
      scale_tied_logits=False, deterministic=True)
  variables = DecoderLM(cfg).init(jax.random.key(seed), jnp.ones((1, 8), jnp.int32))
  flat = {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(unbox(variables["params"]), sep="/").items()}
  flat["shared_embedding/embedding"] = flat["shared_embedding/embedding"] * 0.05  # GPT-2-like.
  config, tensors = export.hf_files("decoder_lm", cfg, flat, vocab, None)
  config.update(bos_token_id=vocab - 1, eos_token_id=vocab - 1)
  export.write_folder(str(path), {"config.json": config}, tensors, "model.safetensors")
  tok.save(os.path.join(str(path), "tokenizer.json"))
  return str(path)


def edit_config(path, **fields):
  file = os.path.join(path, "config.json")
  with open(file, encoding="utf-8") as f:
    config = json.load(f)
  config.update(fields)
  with open(file, "w", encoding="utf-8") as f:
    json.dump(config, f)


def break_folder(path, drop_tensor: str = "", **config_fields) -> None:
  """Removes the tensor `drop_tensor` from model.safetensors, or sets config.json fields."""
  if drop_tensor:
    from safetensors.numpy import load_file, save_file  # pylint: disable=import-outside-toplevel
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    del tensors[drop_tensor]
    save_file(tensors, file)
  if config_fields:
    edit_config(path, **config_fields)


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def llama_folder(path, texts, *, seed=0) -> str:
  """A Llama folder (LlamaForCausalLM: grouped-query attention, SwiGLU, RMSNorm, RoPE) with
  random weights, a byte-level BPE tokenizer with ChatML's turn tokens and a chat template."""
  tok = byte_bpe_tokenizer(texts)
  tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
  vocab = tok.get_vocab_size()
  cfg = TransformerConfig(
      vocab_size=vocab, emb_dim=32, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48,
      num_decoder_layers=2, norm="rmsnorm", mlp_gated=True, mlp_bias=False, activation="silu",
      positions="rotary", rotary_base=1e4, logits_via_embedding=False, scale_tied_logits=False,
      max_length=256, deterministic=True)
  variables = DecoderLM(cfg).init(jax.random.key(seed), jnp.ones((1, 8), jnp.int32))
  flat = {k: np.asarray(v) for k, v in
          traverse_util.flatten_dict(unbox(variables["params"]), sep="/").items()}
  config, tensors = export.hf_files("decoder_lm", cfg, flat, vocab, None)
  end = tok.token_to_id("<|endoftext|>")
  config.update(bos_token_id=end, eos_token_id=tok.token_to_id("<|im_end|>"))
  export.write_folder(str(path), {"config.json": config, "tokenizer_config.json": {
      "chat_template": CHATML, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
      "tokenizer_class": "PreTrainedTokenizerFast"}}, tensors, "model.safetensors")
  tok.save(os.path.join(str(path), "tokenizer.json"))
  return str(path)
