"""Transformer-big for translation ("Attention Is All You Need", Table 3), sized for a TPU pod.

d_model 1024, 16 heads, d_ff 4096, 6 + 6 layers, dropout 0.3, a shared 32k
vocabulary and post-LN as in the paper; 209.8M parameters (the paper counts
213M), 33.6M of them the shared embedding. bfloat16 compute (parameters,
optimizer state and the loss stay float32), sequences packed to 256 tokens,
AdamW with the paper's betas and rsqrt decay after 4,000 warmup steps.

Layout: FSDP over all chips (ZeRO-3: parameters and optimizer state split along
the model width) with the tensor axis left at 1. 32 rows per chip; on a v5p-128
(64 chips) that is a global batch of 2,048 x 256 = 524k token slots per side,
about 20x the paper's 25k-token batches (hence the learning rate of 1e-3, as
large-batch translation recipes use). Check a layout before paying for it:

  python -m transformer_jax.aot --config=configs/transformer_big.py --topology=v5p-128

Training it needs a real WMT-sized corpus (config.data.source = "files").
"""

from transformer_jax.config import default_config


def get_config():
  config = default_config()
  config.num_train_steps = 100_000
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.per_device_batch_size = 32
  config.max_target_length = 256
  config.max_predict_length = 256
  config.learning_rate = 1e-3
  config.warmup_steps = 4_000
  config.lr_schedule = "rsqrt"
  config.label_smoothing = 0.1
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
  config.logical_axis_rules = "fsdp"
  m = config.model
  m.emb_dim = 1024
  m.num_heads = 16
  m.qkv_dim = 1024
  m.mlp_dim = 4096
  m.num_encoder_layers = 6
  m.num_decoder_layers = 6
  m.dropout_rate = 0.3
  m.attention_dropout_rate = 0.0
  m.norm_position = "post"
  m.dtype = "bfloat16"
  config.data.vocab_size = 32_768
  return config
