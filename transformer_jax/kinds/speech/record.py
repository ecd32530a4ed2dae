"""speech_to_text: a Transformer that listens (Speech-Transformer / Whisper layout).

Log-mel frames with their segments ([B, T, 80 + 1], models/speech.py; training
rows pack several utterances) in,
transcript token ids out; the next-token loss on the transcript; greedy, beam
or sampled decoding over the key/value cache as for translation; WER and CER
on decoded validation (eval/wer, eval/real_wer) and test (test/wer, test/real_wer)
utterances.
Its built-in data (`tts`) speaks catalog sentences with espeak-ng and flite:
apt-get install espeak-ng flite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from transformer_jax.decode import prompted, search as decoding
from transformer_jax.errors import fail
from transformer_jax.kinds.base import ModelKind, lazy_task, register
from transformer_jax.kinds.speech import audio, corpus as speech
from transformer_jax.metrics import objectives
from transformer_jax.models.speech import SUBSAMPLING, SpeechToText
from transformer_jax.observe import flops

TARGETS = ("targets", "targets_segment_ids", "targets_positions")


def _batch_shapes(config, global_batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  ids = jax.ShapeDtypeStruct((global_batch_size, config.max_target_length), jnp.int32)
  return {"inputs": jax.ShapeDtypeStruct(
              (global_batch_size, config.data.max_frames, audio.N_MELS + 1), jnp.float32),
          **{k: ids for k in TARGETS}}


def _model_inputs(batch):
  return {"inputs_BTF": batch["inputs"], "targets_BL": batch["targets"],
          "targets_segment_ids_BL": batch["targets_segment_ids"],
          "targets_positions_BL": batch["targets_positions"]}


def _eval_metrics(config) -> tuple[str, ...]:
  d = config.data
  wer = ("wer", "cer") if config.num_eval_bleu_examples > 0 else ()
  if wer and d.real_speech != "off" and d.real_validation_fraction > 0:
    wer += ("real_wer", "real_cer")
  return ("loss", "perplexity", "accuracy") + wer


def _objective(out, batch, label_smoothing: float):
  """The transcript's next-token loss, plus the model's weighted CTC loss where it has a
  CTC head (model.ctc_weight > 0; logged as train/ctc, per target token)."""
  if not isinstance(out, dict):
    return objectives.next_token_objective(out, batch, label_smoothing)
  sums = objectives.next_token_objective(out["logits"], batch, label_smoothing)
  return {**sums, "loss_sum": sums["loss_sum"] + out["aux_loss_sum"], "ctc_sum": out["ctc_sum"]}


def _eval_sums(out, batch):
  return objectives.next_token_eval(out["logits"] if isinstance(out, dict) else out, batch)


def _transcribe(params, features_BTF, rng, *, prompt: prompted.Prompt | None = None,
                **options):
  """search.transcribe, or with a `prompt` (a fine-tuned Whisper: prompted.decode_kwargs)
  prompted.transcribe."""
  if prompt is None:
    return decoding.transcribe(params, features_BTF, rng, **options)
  return prompted.transcribe(params, features_BTF, rng, prompt=prompt, config=options["config"],
                             options=options["options"], max_length=options["max_length"],
                             vocab_limit=options.get("vocab_limit"))


def _check(config) -> None:
  d, m = config.data, config.model
  if m.subsample not in SUBSAMPLING:
    fail("model.subsample", m.subsample, f"must be one of {tuple(SUBSAMPLING)}")
  if not isinstance(m.frontend_channels, int) or m.frontend_channels < 0:
    fail("model.frontend_channels", m.frontend_channels,
         "must be an integer >= 0 (0: the 1-D front end)")
  if d.max_frames <= 0 or d.max_frames % m.subsample:
    fail("data.max_frames", d.max_frames,
         f"must be a positive multiple of model.subsample={m.subsample}")
  if d.source == "tts" and (d.validation_fraction <= 0 or d.test_fraction <= 0):
    fail("data.validation_fraction", d.validation_fraction,
         "tts needs validation_fraction and test_fraction > 0")
  if d.feature_norm not in audio.FEATURE_NORMS:
    fail("data.feature_norm", d.feature_norm, f"must be one of {audio.FEATURE_NORMS}")
  _check_whisper(config)
  if d.real_speech not in ("off", "test", "train_test"):
    fail("data.real_speech", d.real_speech, "must be 'off', 'test' or 'train_test'")
  if not 0.0 <= m.ctc_weight <= 1.0:
    fail("model.ctc_weight", m.ctc_weight, "must be in [0, 1]")
  if config.decoding.method == "ctc" and m.ctc_weight <= 0:
    fail("decoding.method", "ctc", "needs the CTC head: set model.ctc_weight > 0")
  # decoding.ctc_weight and oov_penalty shape beam search only (as beam_size and alpha
  # do): another method ignores them, so `transcribe --method=ctc` needs no more flags.
  if config.decoding.oov_penalty > 0 and d.tokenizer_type != "char":
    fail("decoding.oov_penalty", config.decoding.oov_penalty,
         f"the word list is for letter models (data.tokenizer_type='char', not "
         f"{d.tokenizer_type!r})")
  if config.decoding.ctc_weight > 0 and m.ctc_weight <= 0:
    fail("decoding.ctc_weight", config.decoding.ctc_weight,
         "needs the CTC head: set model.ctc_weight > 0, or decoding.ctc_weight=0")
  if not 0.0 < d.real_test_fraction < 1.0:
    fail("data.real_test_fraction", d.real_test_fraction, "must be in (0, 1)")
  if not 0.0 <= d.real_validation_fraction < 1.0:
    fail("data.real_validation_fraction", d.real_validation_fraction, "must be in [0, 1)")
  problem = speech.variants_problem(d.espeak_variants)
  if problem:
    fail("data.espeak_variants", tuple(d.espeak_variants), problem)
  problem = speech.flite_voices_problem(d.flite_voices) if d.source == "tts" else None
  if problem:
    fail("data.flite_voices", tuple(d.flite_voices), problem)
  if not 0.0 <= d.flite_share < 1.0:
    fail("data.flite_share", d.flite_share, "must be in [0, 1)")
  if d.voices_per_sentence < 1:
    fail("data.voices_per_sentence", d.voices_per_sentence, "must be at least 1")
  if d.tts_real_transcripts < 0:
    fail("data.tts_real_transcripts", d.tts_real_transcripts, "must be >= 0 (0: off)")
  if d.tts_real_transcripts > 0 and (d.source != "tts" or d.real_speech != "train_test"):
    fail("data.tts_real_transcripts", d.tts_real_transcripts,
         f"speaks the real training prompts' transcripts: needs data.source='tts' and "
         f"data.real_speech='train_test' (not {d.source!r}, {d.real_speech!r})")
  a = d.augment
  if len(a.speed) != 2 or not 0 < a.speed[0] <= a.speed[1]:
    fail("data.augment.speed", tuple(a.speed), "must be (low, high) factors, 0 < low <= high")
  if len(a.warp) != 2 or not 0.5 <= a.warp[0] <= a.warp[1] <= 2.0:
    fail("data.augment.warp", tuple(a.warp),
         "must be (low, high) frequency factors, 0.5 <= low <= high <= 2")
  if len(a.snr_db) != 2 or a.snr_db[0] > a.snr_db[1]:
    fail("data.augment.snr_db", tuple(a.snr_db), "must be (low, high) decibels")
  for name in ("telephone_prob", "noise_prob"):
    if not 0.0 <= a[name] <= 1.0:
      fail(f"data.augment.{name}", a[name], "must be a probability in [0, 1]")
  if a.freq_width > audio.N_MELS:
    fail("data.augment.freq_width", a.freq_width, f"must be at most {audio.N_MELS} mel bins")


def _check_whisper(config) -> None:
  """data.features="whisper" (a Whisper run: init_from.whisper sets it) and what it excludes."""
  d, m = config.data, config.model
  if d.features not in audio.FEATURES:
    fail("data.features", d.features, f"must be one of {audio.FEATURES}")
  if d.features != "whisper":
    return
  if d.max_frames > audio.WHISPER_FRAMES or d.max_frames % 100:
    fail("data.max_frames", d.max_frames, f"Whisper's window is whole seconds, at most "
         f"{audio.WHISPER_FRAMES} frames (30 s)")
  if not m.decoder_start_id:
    fail("model.decoder_start_id", m.decoder_start_id,
         "data.features='whisper' decodes after Whisper's prompt: set config.init_from.whisper")
  for field, value in (("data.feature_norm", d.feature_norm),
                       ("model.frontend_channels", m.frontend_channels),
                       ("decoding.ctc_weight", config.decoding.ctc_weight),
                       ("decoding.oov_penalty", config.decoding.oov_penalty)):
    if value not in ("none", 0, 0.0):
      fail(field, value, "is not for data.features='whisper' (Whisper's own features and decoder)")
  if config.decoding.method == "ctc":
    fail("decoding.method", "ctc", "a Whisper run has no CTC head")


KIND = register(ModelKind(
    name="speech_to_text",
    description="speech recognition: log-mel encoder-decoder Transformer, WER/CER",
    model=SpeechToText,
    batch_shapes=_batch_shapes,
    model_inputs=_model_inputs,
    objective=_objective,
    eval_sums=_eval_sums,
    eval_metrics=_eval_metrics,
    task=lazy_task("transformer_jax.kinds.speech.task", "SpeechTask"),
    data_sources=("tts", "files"),
    file_format='TSV audio.wav<TAB>transcript or JSONL {"audio": ..., "text": ...}',
    forward_flops=flops.speech_forward,
    unit="frames",  # 10 ms feature frames of real audio.
    count_units=lambda batch: (batch["inputs"][..., -1] > 0).sum().astype(jnp.float32),
    train_metrics=("ctc",),  # the CTC head's loss (model.ctc_weight > 0): train/ctc.
    decode=_transcribe,
    decode_tool="transcribe",
    decode_methods=("greedy", "beam", "sample", "ctc"),
    decoding_fields=("ctc_weight", "oov_penalty", "segment_frames"),
    hf_architectures=("whisper",),
    check_config=_check,
))
