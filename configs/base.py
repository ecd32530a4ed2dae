"""The default job: English->German translation of program messages, on a CPU.

A ~7M-parameter encoder-decoder (3+3 layers, width 256) trained on the gettext
catalogs installed on the machine; about 15 minutes on two CPU cores,
including corpus harvesting and tokenizer training.

  python train.py --config=configs/base.py
"""

from transformer_jax.config import default_config


def get_config():
  config = default_config()
  config.num_train_steps = 1500
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.per_device_batch_size = 48
  config.learning_rate = 2e-3
  config.warmup_steps = 200
  config.lr_schedule = "rsqrt"
  return config
