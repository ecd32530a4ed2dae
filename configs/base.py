"""The default job: English->German translation of program messages, on a CPU.

A 7.6M-parameter encoder-decoder (3+3 layers, width 256, 4 heads, MLP 1024,
joint 8k sentencepiece vocabulary) trained on the gettext catalogs installed
on the machine. Sized for two CPU cores: 10-15 minutes in all, including
corpus harvesting, tokenizer training and decoding the test split.

  python train.py --config=configs/base.py
"""

from transformer_jax.config import default_config


def get_config():
  config = default_config()
  config.num_train_steps = 480
  config.log_every_steps = 20
  config.eval_every_steps = 160
  config.checkpoint_every_steps = 160
  config.per_device_batch_size = 32
  config.max_target_length = 64
  config.learning_rate = 2e-3
  config.warmup_steps = 100
  config.lr_schedule = "cosine"
  # BLEU as the Flax WMT example reports it: beam search, 4 beams, alpha 0.6;
  # eval/bleu on 256 validation sentences at every evaluation.
  config.decoding.method = "beam"
  config.decoding.beam_size = 4
  config.decoding.alpha = 0.6
  config.num_eval_bleu_examples = 256
  # About one pass over the data in 15 minutes: dropout would only slow the
  # learning (and costs ~16% of the step time on this CPU).
  config.model.dropout_rate = 0.0
  config.model.attention_dropout_rate = 0.0
  return config
