"""What the server runs: a trained run loaded once, its programs compiled for a few shapes,
and one batch of rows in, one result per row out.

An engine serves the jobs its model kind does, read off the kind's record: a decoder of
`decode_tool` "translate", "generate" or "transcribe", an encoder that `embeds` and/or
classifies (`uses_classes`). `prepare_*` turns one request's input into rows (and raises
BadInput naming what is wrong with it); `run(profile, rows)` decodes rows of one profile
together, padded to the buckets (serve/programs.py). `run` is called from the batcher's
worker thread, one batch at a time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.data.tokenizer import EOS_ID
from transformer_jax.decode.search import DecodeOptions
from transformer_jax.errors import BadInput
from transformer_jax.models.classifier import sentence_embedding
from transformer_jax.serve.programs import Buckets, CompiledPrograms, ladder

# Set to a text, it makes every batch that holds the text fail inside the translator: the
# tests' way to show that only the request that fails is failed.
FAULT_ENV = "TRANSFORMER_JAX_SERVE_FAULT"


@dataclasses.dataclass
class Result:
  value: Any  # what the row gives: a text, a vector, probabilities, ids.
  tokens: int = 0  # tokens produced (decoders) or read (encoders), for tokens/s.


class Engine:
  """Rows of one profile in, one Result per row out; programs compiled by `warm_up`."""
  jobs: tuple[str, ...] = ()  # "translate" | "generate" | "transcribe" | "embed" | "classify".
  profiles: tuple = ("default",)

  def __init__(self, run, buckets: Buckets):
    self.run = run
    self.buckets = buckets
    self.programs = CompiledPrograms(self._program)
    batch_sharding = run.programs.batch_sharding
    self._batch_sharding = batch_sharding
    self._replicated = jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    self._batches = 0

  # ------------------------------------------------------------------ to override
  def _program(self, profile, rows: int, length: int):
    raise NotImplementedError

  def length_of(self, row) -> int:
    return len(row)

  def _run(self, profile, batch: np.ndarray, rows: list, length: int) -> list[Result]:
    raise NotImplementedError

  # ------------------------------------------------------------------ shared
  def warm_up(self, log=print) -> None:
    with self.run.programs.context():
      self.programs.compile_all(self.profiles, self.buckets, log)

  def check_length(self, length: int, what: str) -> None:
    if length > self.buckets.max_length:
      raise BadInput(f"{what} has {length} {self.unit}; this server takes at most "
                     f"{self.buckets.max_length}")

  unit = "tokens"

  def run_batch(self, profile, rows: list) -> list[Result]:
    """Rows (at most the largest batch bucket) -> one Result each, in order."""
    if not rows:
      return []
    length = self.buckets.length_for(max(self.length_of(r) for r in rows))
    if length is None or len(rows) > self.buckets.max_batch:
      raise RuntimeError(f"a batch of {len(rows)} rows of up to "
                         f"{max(self.length_of(r) for r in rows)} does not fit the buckets")
    return self._run(profile, self.buckets.batch_for(len(rows)), rows, length)

  def _rng(self):
    self._batches += 1
    key = jax.random.fold_in(jax.random.key(self.run.config.seed), self._batches)
    return jax.device_put(key, self._replicated)

  def _abstract(self, shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=self._batch_sharding)

  def _put(self, array: np.ndarray) -> jax.Array:
    return jax.device_put(array, self._batch_sharding)

  def _key(self):
    return jax.device_put(jax.random.key(0), self._replicated)


def _id_rows(rows: Sequence[np.ndarray], batch: int, length: int) -> np.ndarray:
  out = np.zeros((batch, length), np.int32)
  for i, ids in enumerate(rows):
    out[i, :len(ids)] = ids
  return out


# --------------------------------------------------------------------------- translate


class Translator(Engine):
  """An encoder-decoder: a profile per served beam size (1: greedy)."""
  jobs = ("translate",)

  def __init__(self, run, buckets: Buckets, beam_sizes: Sequence[int]):
    super().__init__(run, buckets)
    self.profiles = tuple(sorted(set(beam_sizes)))
    self.default_beam = (run.config.decoding.beam_size
                         if run.config.decoding.method == "beam" else 1)
    if self.default_beam not in self.profiles:
      self.profiles = tuple(sorted(self.profiles + (self.default_beam,)))
    self._options = DecodeOptions.from_config(run.config.decoding)
    # A fault for tests of the batcher: a batch holding this text fails as a model error would.
    fault = os.environ.get(FAULT_ENV)
    self._fault = np.asarray(run.tokenizer.encode(fault), np.int32) if fault else None

  def _options_for(self, beam_size: int) -> DecodeOptions:
    if beam_size == 1:
      return dataclasses.replace(self._options, method="greedy")
    return dataclasses.replace(self._options, method="beam", beam_size=beam_size)

  def _program(self, profile, rows, length):
    options = self._options_for(profile)

    def decode(params, ids, rng):
      return self.run.programs.decode_fn(params, ids, rng, options=options)
    return decode, (self.run.params, self._abstract((rows, length), jnp.int32), self._key())

  def prepare(self, text: str, index: int) -> np.ndarray:
    ids = np.asarray(self.run.tokenizer.encode(text), np.int32)
    self.check_length(len(ids), f"text[{index}]")
    return ids

  def _run(self, profile, batch, rows, length):
    if self._fault is not None and any(np.array_equal(r, self._fault) for r in rows):
      raise RuntimeError(f"{FAULT_ENV}: a row of the fault text")
    out = self.programs(profile, batch, length, self.run.params,
                        self._put(_id_rows(rows, batch, length)), self._rng())
    out = np.asarray(out)
    results = []
    for i in range(len(rows)):
      text = self.run.tokenizer.decode(out[i])
      results.append(Result(text, int(np.sum(out[i] > 0))))
    return results


# --------------------------------------------------------------------------- generate


@dataclasses.dataclass
class Prompt:
  ids: np.ndarray
  max_tokens: int
  temperature: float
  top_p: float

  def __len__(self) -> int:
    return len(self.ids) + self.max_tokens


class Generator(Engine):
  """A decoder-only LM: one sampled profile whose temperature and top-p are each row's own
  (temperature 0: greedy); rows run to the length bucket of prompt + max_tokens."""
  jobs = ("generate",)
  profiles = ("sample",)

  def __init__(self, run, buckets: Buckets):
    super().__init__(run, buckets)
    self._options = dataclasses.replace(DecodeOptions.from_config(run.config.decoding),
                                        method="sample")
    self.top_k = self._options.top_k
    self.chat = None  # a ChatTemplate where the run's tokenizer folder has one.
    folder = getattr(run.tokenizer, "folder", None)
    stop_ids = (EOS_ID,)
    if folder is not None:
      from transformer_jax.tools import pretrained_lm  # pylint: disable=import-outside-toplevel
      chat = pretrained_lm.chat_template_of(folder, run.tokenizer)
      stop_ids = tuple(sorted(set(stop_ids) | set(chat.stop_ids)))
      self.chat = chat if chat.template else None
    self.stop_ids = stop_ids

  def _program(self, profile, rows, length):
    def decode(params, ids, rng, temperature, top_p):
      options = dataclasses.replace(self._options, temperature=temperature, top_p=top_p)
      return self.run.programs.decode_fn(params, ids, rng, options=options, max_length=length)
    return decode, (self.run.params, self._abstract((rows, length), jnp.int32), self._key(),
                    self._abstract((rows,), jnp.float32), self._abstract((rows,), jnp.float32))

  def prepare(self, text: str, *, max_tokens: int, temperature: float, top_p: float,
              what: str) -> Prompt:
    ids = np.asarray(self.run.tokenizer.encode(text, add_eos=False), np.int32)
    if len(ids) + max_tokens > self.buckets.max_length:
      room = self.buckets.max_length - len(ids)
      raise BadInput(f"{what} has {len(ids)} tokens; with max_tokens={max_tokens} that is past "
                     f"this server's {self.buckets.max_length} tokens"
                     + (f" (max_tokens <= {room} fits)" if room > 0 else ""))
    return Prompt(ids, max_tokens, temperature, top_p)

  def _run(self, profile, batch, rows, length):
    temperature = np.ones(batch, np.float32)
    top_p = np.ones(batch, np.float32)
    for i, row in enumerate(rows):
      temperature[i], top_p[i] = row.temperature, row.top_p
    out = np.asarray(self.programs(
        profile, batch, length, self.run.params,
        self._put(_id_rows([r.ids for r in rows], batch, length)), self._rng(),
        self._put(temperature), self._put(top_p)))
    results = []
    for i, row in enumerate(rows):
      new = out[i, len(row.ids):len(row.ids) + row.max_tokens].tolist()
      ends = [k for k, t in enumerate(new) if t in self.stop_ids or t == 0]
      stopped = bool(ends)
      new = new[:ends[0]] if ends else new
      results.append(Result((new, stopped), len(new)))
    return results

  def text(self, ids: Sequence[int]) -> str:
    return self.run.tokenizer.decode(np.asarray(ids, np.int32))


# --------------------------------------------------------------------------- encoders


class Encoder(Engine):
  """A text encoder: "embed" (mean-pooled, L2-normalised, as the embed tool) where the kind
  embeds, "classify" (softmax over the run's labels) where it has classes."""

  def __init__(self, run, buckets: Buckets, labels: Sequence[str] | None):
    super().__init__(run, buckets)
    kind = run.programs.kind
    self.labels = list(labels) if labels else None
    self.jobs = tuple(j for j, ok in (("embed", kind.embeds), ("classify", bool(labels))) if ok)
    self.profiles = self.jobs
    config = run.programs.model_config.replace(deterministic=True)
    self._model = kind.model(config)
    self._class_vector = config.class_vector
    self._params = run.programs.merged(run.params)

  def _program(self, profile, rows, length):
    model, kind, class_vector = self._model, self.run.programs.kind, self._class_vector

    def embed(params, ids_BL):
      hidden_BLD = model.apply({"params": params}, ids_BL, return_hidden=True)
      return sentence_embedding(hidden_BLD, ids_BL, class_vector)

    def classify(params, ids_BL):
      logits = model.apply({"params": params}, **kind.model_inputs({"inputs": ids_BL}))
      return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    fn = embed if profile == "embed" else classify
    return fn, (self._params, self._abstract((rows, length), jnp.int32))

  def prepare(self, text: str, what: str) -> np.ndarray:
    ids = np.asarray(self.run.tokenizer.encode(text), np.int32)
    self.check_length(len(ids), what)
    return ids

  def _run(self, profile, batch, rows, length):
    out = np.asarray(self.programs(profile, batch, length, self._params,
                                   self._put(_id_rows(rows, batch, length))))
    return [Result(out[i], len(rows[i])) for i in range(len(rows))]


# --------------------------------------------------------------------------- speech


class Transcriber(Engine):
  """A speech-to-text run: rows are feature frames, padded to frame buckets (Whisper: its
  window), decoded as the run's config.decoding says."""
  jobs = ("transcribe",)
  unit = "frames"

  def __init__(self, run, buckets: Buckets):
    super().__init__(run, buckets)
    from transformer_jax.kinds.speech import pipeline  # pylint: disable=import-outside-toplevel
    self._pipeline = pipeline
    self.form = pipeline.Form.from_config(run.config.data)

  def _program(self, profile, rows, length):
    shape = (rows, length, self._pipeline.audio.N_MELS + 1)
    return self.run.programs.decode_fn, (self.run.params, self._abstract(shape, jnp.float32),
                                         self._key())

  def prepare(self, samples: np.ndarray, what: str) -> np.ndarray:
    """int16 samples at 16 kHz -> [frames, 81] features (the mask last)."""
    frames = 1 + len(samples) // self._pipeline.audio.HOP
    if self.form.whisper:  # the window holds window * HOP samples.
      frames = -(-len(samples) // self._pipeline.audio.HOP)
    self.check_length(frames, what)
    length = self.form.window if self.form.whisper else frames
    return self._pipeline.features(self._pipeline.waveform(samples), length, self.form)

  def _run(self, profile, batch, rows, length):
    feats = np.zeros((batch, length, rows[0].shape[1]), np.float32)
    feats[len(rows):, :, -1] = float(self.form.whisper)  # padding rows (Whisper masks nothing).
    for i, row in enumerate(rows):
      feats[i, :len(row)] = row
    out = np.asarray(self.programs(profile, batch, length, self.run.params, self._put(feats),
                                   self._rng()))
    results = []
    for i in range(len(rows)):
      results.append(Result(self.run.tokenizer.decode(out[i]), int(np.sum(out[i] > 0))))
    return results


def speech_buckets(run, max_batch: int, multiple: int) -> Buckets:
  from transformer_jax.kinds.speech import pipeline  # pylint: disable=import-outside-toplevel
  form = pipeline.Form.from_config(run.config.data)
  if form.whisper:
    return Buckets(ladder(max_batch, multiple=multiple), (form.window,))
  limit = -(-run.config.data.max_frames // pipeline.DECODE_FRAMES) * pipeline.DECODE_FRAMES
  return Buckets(ladder(max_batch, multiple=multiple),
                 ladder(limit, first=pipeline.DECODE_FRAMES, factor=2,
                        multiple=pipeline.DECODE_FRAMES))
