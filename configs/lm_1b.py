"""A ~1.3B-parameter decoder-only language model laid out for FSDP + tensor parallelism.

Width 2048, 16 heads of 128, MLP 8192, 24 layers, 32k vocabulary tied to the
output projection, sequences packed to 1,024 tokens, bfloat16 compute, rematerialisation. The mesh
splits the heads, the MLP and the vocabulary 4 ways over `tensor` and
everything else over `fsdp`:

  python -m transformer_jax.aot --config=configs/lm_1b.py --topology=v5e-256
  python -m transformer_jax.aot --config=configs/lm_1b.py --topology=v5e-256 --num_slices=2

For pods: this machine's `python train.py --config=configs/lm.py` is the small
LM that trains here.
"""

from transformer_jax.config import default_config


def get_config():
  config = default_config()
  config.num_train_steps = 100_000
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.per_device_batch_size = 8
  config.max_target_length = 1024
  config.learning_rate = 3e-4
  config.warmup_steps = 2_000
  config.lr_schedule = "cosine"
  config.adam_b2 = 0.95
  config.adam_eps = 1e-8
  config.weight_decay = 0.1
  config.label_smoothing = 0.0
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 4
  config.logical_axis_rules = "fsdp_tensor"
  m = config.model
  m.kind = "decoder_lm"
  m.positions = "rotary"
  m.emb_dim = 2048
  m.num_heads = 16
  m.qkv_dim = 2048
  m.mlp_dim = 8192
  m.num_decoder_layers = 24
  m.num_encoder_layers = 1  # unused by decoder_lm.
  m.dropout_rate = 0.0
  m.attention_dropout_rate = 0.0
  m.activation = "gelu"
  m.dtype = "bfloat16"
  # Keep the weight matmuls' outputs, recompute the rest in the backward pass:
  # without it the activations need ~22 GiB per v5e chip; "full" needs less
  # memory still, for ~19% more FLOPs.
  m.remat = "dots"
  config.data.source = "python_stdlib"
  config.data.vocab_size = 32_768
  return config
