"""A small GPT-style language model of Python code, trained on a CPU in under 10 minutes.

Decoder-only, 4 layers, width 256, 4 heads, MLP 1024, rotary positions, output
tied to the 8k sentencepiece embedding; sequences of 128 tokens packed from the
running Python's standard library sources (each file one document, split by a
hash of its path). Reports validation and test perplexity next to a unigram
model of the training split, and prints samples.

  python train.py --config=configs/lm.py
  python -m transformer_jax.generate --workdir=runs/lm --prompt="def read_config(path):"
"""

from transformer_jax.config import default_config


def get_config():
  config = default_config()
  config.num_train_steps = 500
  config.log_every_steps = 25
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  config.num_eval_steps = 40  # 40 x 16 x 128 tokens of validation text per evaluation.
  config.per_device_batch_size = 16
  config.max_target_length = 128
  config.max_predict_length = 64  # prompt + sample
  config.learning_rate = 2e-3
  config.warmup_steps = 50
  config.lr_schedule = "cosine"
  config.label_smoothing = 0.0
  config.weight_decay = 0.01
  m = config.model
  m.kind = "decoder_lm"
  m.positions = "rotary"
  m.emb_dim = 256
  m.num_heads = 4
  m.qkv_dim = 256
  m.mlp_dim = 1024
  m.num_decoder_layers = 4
  m.dropout_rate = 0.0
  m.attention_dropout_rate = 0.0
  m.activation = "gelu"
  config.data.source = "python_stdlib"
  config.data.vocab_size = 8000
  config.decoding.method = "sample"
  config.decoding.temperature = 0.8
  config.decoding.top_k = 40
  return config
