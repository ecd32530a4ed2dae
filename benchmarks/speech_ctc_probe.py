"""Can the speech encoder learn to hear? Its CTC head trained alone, letters vs subwords.

  python benchmarks/speech_ctc_probe.py --workdir=runs/speech --tokenizer_type=char
  python benchmarks/speech_ctc_probe.py --workdir=runs/speech --tokenizer_type=unigram \
      --vocab_size=512

Reads a speech workdir's training split from its synthesis cache (the run's config.json
and speech_cache/), trains a sentencepiece model of --tokenizer_type on the
transcripts, and trains the speech encoder of the run's shape with only its CTC
head (no decoder, no augmentation, one clean utterance per row) for --steps. Every 50
steps it prints the CTC loss per label and the greedy CTC CER on --eval utterances held
back from the training ones. The encoder that learns letters in a few hundred steps
stays on blanks with a 512-piece vocabulary (BUILD_NOTES.md, speech section).
"""

import os
import time

import jax
import jax.numpy as jnp
import jiwer
import numpy as np
import optax
from absl import app, flags

from transformer_jax import config as config_lib
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.decode import search as decoding
from transformer_jax.kinds.speech import pipeline as speech_pipeline, splits as speech_splits
from transformer_jax.kinds.speech.corpus import normalize
from transformer_jax.kinds.speech.task import CACHE_DIR
from transformer_jax.models import config as models_config
from transformer_jax.models.speech import SpeechToText

_WORKDIR = flags.DEFINE_string("workdir", None, "A speech train.py workdir with its cache.",
                               required=True)
_TYPE = flags.DEFINE_enum("tokenizer_type", "char", list(tokenizer_lib.MODEL_TYPES),
                          "The labels: letters or subword pieces.")
_VOCAB = flags.DEFINE_integer("vocab_size", 512, "Pieces (an upper bound for char).")
_STEPS = flags.DEFINE_integer("steps", 300, "Training steps.")
_BATCH = flags.DEFINE_integer("batch", 16, "Utterances per step.")
_UTTERANCES = flags.DEFINE_integer("utterances", 2000, "Training utterances.")
_EVAL = flags.DEFINE_integer("eval", 64, "Held-back utterances scored every 50 steps.")
_LR = flags.DEFINE_float("learning_rate", 2e-3, "Adam's rate after 100 warm-up steps.")


def main(argv):
  del argv
  config = config_lib.from_json(os.path.join(_WORKDIR.value, "config.json"))
  data = speech_splits.load_speech(config.data, os.path.join(_WORKDIR.value, CACHE_DIR))
  texts = [normalize(t) for t in data.train.texts]
  tok = tokenizer_lib.Tokenizer(tokenizer_lib.train_tokenizer(
      texts, _VOCAB.value, model_type=_TYPE.value))
  frames, length = config.data.max_frames, config.max_target_length
  use = speech_pipeline.fits(data.train, tok, frames, length)[:_UTTERANCES.value + _EVAL.value]
  inputs = np.stack([speech_pipeline.features(speech_pipeline.waveform(data.train.samples[i]),
                                              frames) for i in use])
  targets = np.stack([speech_pipeline.target_row(tok, data.train.texts[i], length)["targets"]
                      for i in use])
  n = len(use) - _EVAL.value
  print(f"{n} training + {_EVAL.value} held-back utterances; {_TYPE.value} labels, "
        f"{tok.vocab_size} pieces", flush=True)
  cfg = models_config.model_config(config, tok.vocab_size).replace(ctc_weight=1.0,
                                                                deterministic=True)
  model = SpeechToText(cfg)
  params = model.init(jax.random.key(0), inputs[:2], targets[:2])["params"]
  params = {k: v for k, v in params.items() if k in ("encoder", "ctc_head")}

  def loss_fn(p, x, y):
    loss = model.apply({"params": p}, x, y, method=lambda m, x, y: m.ctc_loss(
        m.encode(x), SpeechToText.source_valid(x, cfg), y))
    return loss.sum() / (y > 0).sum()

  schedule = optax.join_schedules([optax.linear_schedule(0.0, _LR.value, 100),
                                   optax.constant_schedule(_LR.value)], [100])
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule, b2=0.98))
  state = opt.init(params)

  @jax.jit
  def step(p, s, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
    updates, s = opt.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss

  decode = jax.jit(lambda p, x: decoding.ctc_greedy(p, x, config=cfg, max_length=length,
                                                    vocab_limit=tok.vocab_size))
  held_x, held_y = jnp.asarray(inputs[n:]), targets[n:]
  refs = [tok.decode(y) for y in held_y]
  rng, t0 = np.random.default_rng(0), time.monotonic()
  for i in range(1, _STEPS.value + 1):
    rows = rng.integers(0, n, _BATCH.value)
    params, state, loss = step(params, state, jnp.asarray(inputs[rows]),
                               jnp.asarray(targets[rows]))
    if i % 50 == 0:
      hyps = [tok.decode(ids) for ids in np.asarray(decode(params, held_x))]
      print(f"step {i}: CTC {float(loss):.3f} per label, held-back "
            f"{float(loss_fn(params, held_x, jnp.asarray(held_y))):.3f}, greedy CER "
            f"{100 * jiwer.cer(refs, hyps):.1f}% ({time.monotonic() - t0:.0f}s) "
            f"{hyps[0]!r} for {refs[0]!r}", flush=True)


if __name__ == "__main__":
  app.run(main)
