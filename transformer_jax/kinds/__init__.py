"""The model kinds, one record each, found by name: `kinds.get(config.model.kind)`.

  encoder_decoder      translation (translation/)
  decoder_lm           GPT-style language model (language_model/)
  encoder_classifier   BERT-style text classifier (classification/text_record.py)
  vit                  Vision Transformer image classifier (classification/image_record.py)
  speech_to_text       speech recognition from log-mel features (speech/)

Each family's folder holds its record, its task (task.py: data, tokenizer,
evaluation) and its data code. See base.py for the record and how to add a kind;
`validate` (checks.py) checks a run's whole config against its kind and mesh.
"""

from transformer_jax.kinds.base import ModelKind, get, names, register
from transformer_jax.kinds.checks import validate
# The built-in kinds register themselves on import.
from transformer_jax.kinds.classification import image_record, text_record  # noqa: E402,F401
from transformer_jax.kinds.language_model import record as _language_model  # noqa: E402,F401
from transformer_jax.kinds.speech import record as _speech  # noqa: E402,F401
from transformer_jax.kinds.translation import record as _translation  # noqa: E402,F401

__all__ = ["ModelKind", "get", "names", "register", "validate"]
