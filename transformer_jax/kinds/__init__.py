"""The model kinds, one record each, found by name: `kinds.get(config.model.kind)`.

  encoder_decoder      translation (encoder_decoder.py)
  decoder_lm           GPT-style language model (decoder_lm.py)
  encoder_classifier   BERT-style text classifier (encoder_classifier.py)
  vit                  Vision Transformer image classifier (vit.py)
  speech_to_text       speech recognition from log-mel features (speech_to_text.py)

See base.py for the record and how to add a kind.
"""

from transformer_jax.kinds.base import ModelKind, get, names, register

# The built-in kinds register themselves on import.
from transformer_jax.kinds import decoder_lm, encoder_classifier, encoder_decoder, speech_to_text, vit  # noqa: E402,F401  pylint: disable=wrong-import-position

__all__ = ["ModelKind", "get", "names", "register"]
