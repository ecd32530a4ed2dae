"""LoRA fine-tuning of all-MiniLM-L6-v2 on the Debian package sections (docs/adapters.md).

configs/classify_minilm.py with the encoder frozen: rank-8 adapters (alpha 16) on every
attention projection and MLP kernel, and the fresh classification head trained in full
(`lora.train_also`). Adapters learn at a higher rate than full fine-tuning (1e-3 against
3e-4, as is usual for LoRA); data, steps and batch are the same.

  python train.py --config=configs/classify_minilm_lora.py
  python train.py --config=configs/classify_minilm_lora.py --config.lora.base_bits=4  # QLoRA
"""

import importlib.util
import os


def _minilm():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classify_minilm.py")
  spec = importlib.util.spec_from_file_location("classify_minilm_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  config = _minilm().get_config()
  config.lora.rank = 8
  config.lora.alpha = 16.0
  config.lora.train_also = ("^head/",)
  config.learning_rate = 1e-3
  return config
