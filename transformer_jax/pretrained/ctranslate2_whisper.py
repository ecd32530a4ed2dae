"""Whisper's CTranslate2 models in transformers' names: the state dict, config, special ids.

  hf_config, state = whisper_state_dict(variables, ct2_config)     # config.json, state dict
  config, generation = split_generation_config(hf_config)          # and generation_config.json

The variables are ctranslate2_file.read_ct2's. The Whisper names are those of
ctranslate2/converters/transformers.py's WhisperLoader, undone: the self-attention's q/k/v
fused into one linear, the cross-attention's k/v into another. ctranslate2_folder.py
writes them as a Hugging Face folder.
"""

from __future__ import annotations

import numpy as np

from transformer_jax.pretrained import whisper
from transformer_jax.pretrained.tensors import PretrainedError

WHISPER_REVISION = 3  # ctranslate2/specs/whisper_spec.py WhisperSpec.revision
_GELU = 3  # ctranslate2/specs/common_spec.py Activation.GELU

def whisper_special_ids(vocab_size: int, vocabulary: list[str] | None = None) -> dict:
  """Whisper's special token ids: whisper/tokenizer.py's layout (end of text, start of
  transcript, the languages, translate, transcribe, start of LM, start of previous, no
  speech, no timestamps, then the timestamps) for the vocabulary size; a multilingual
  vocabulary (>= 51865, one token more) starts one id later. Where `vocabulary` is given,
  the ids of the tokens it names win."""
  multilingual = vocab_size >= 51865
  eot = 50256 + int(multilingual)
  languages = vocab_size - 51765 - int(multilingual)  # whisper's num_languages.
  translate = eot + 2 + languages
  ids = {"is_multilingual": multilingual, "endoftext": eot, "startoftranscript": eot + 1,
         "languages": list(range(eot + 2, translate)), "translate": translate,
         "transcribe": translate + 1, "startoflm": translate + 2,
         "startofprev": translate + 3, "nocaptions": translate + 4,
         "notimestamps": translate + 5}
  if vocabulary:
    index = {t: i for i, t in enumerate(vocabulary) if t.startswith("<|")}
    for key in ("endoftext", "startoftranscript", "translate", "transcribe", "startoflm",
                "startofprev", "nocaptions", "notimestamps"):
      ids[key] = index.get(f"<|{key}|>", ids[key])
  return ids


def _scalar(variables: dict, name: str, default: int) -> int:
  value = variables.get(name)
  return default if value is None else int(np.asarray(value).reshape(-1)[0])


def _layers(variables: dict, prefix: str) -> int:
  n = 0
  while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
    n += 1
  return n


def check_whisper(spec: str, revision: int, source: str) -> None:
  if spec != "WhisperSpec":
    raise PretrainedError(f"{source}: a CTranslate2 {spec or 'unnamed (binary v1)'} model, "
                          "not Whisper")
  if revision > WHISPER_REVISION:
    raise PretrainedError(f"{source}: WhisperSpec revision {revision} is not supported "
                          f"(revisions up to {WHISPER_REVISION} are)")


def whisper_state_dict(variables: dict[str, np.ndarray], ct2_config: dict | None = None, *,
                       vocabulary: list[str] | None = None, spec: str = "WhisperSpec",
                       revision: int = WHISPER_REVISION, source: str = "model.bin",
                       ) -> tuple[dict, dict[str, np.ndarray]]:
  """(config.json, state dict) of transformers' WhisperForConditionalGeneration for a
  CTranslate2 WhisperSpec's variables (read_ct2) and its config.json.

  Sizes come from the tensors' shapes, token ids from the vocabulary size (or `vocabulary`),
  suppressed tokens, alignment heads and languages from `ct2_config`. The fused q/k/v
  linears are split again; keys get no bias in Whisper (the converter fused zeros; a key
  bias would add the same number to every score of a query, which softmax ignores). The
  encoder's sinusoidal positions are CTranslate2's where stored, else computed. The state
  dict is float32 and holds proj_out.weight (the same array as the token embedding where
  tied, as config["tie_word_embeddings"] says). The config also holds what transformers
  keeps in generation_config.json (alignment_heads, is_multilingual, lang_ids, task_to_id,
  no_timestamps_token_id, prev_sot_token_id): split_generation_config separates them.
  Errors name `source`: `spec` and `revision` are read_ct2's.
  """
  check_whisper(spec, revision, source)
  ct2_config = ct2_config or {}
  v = _Variables(variables, source)
  d_model, mels, _ = v.shape("encoder/conv1/weight")
  vocab_size = v.shape("decoder/embeddings/weight")[0]
  enc_layers, dec_layers = _layers(variables, "encoder"), _layers(variables, "decoder")
  if not enc_layers or not dec_layers:
    raise PretrainedError(f"{source}: no CTranslate2 variable "
                          f"'{'encoder' if not enc_layers else 'decoder'}/layer_0/...'")
  sizes = {"d_model": int(d_model), "num_mel_bins": int(mels), "vocab_size": int(vocab_size),
           "encoder_layers": enc_layers, "decoder_layers": dec_layers,
           "encoder_ffn_dim": int(v.shape("encoder/layer_0/ffn/linear_0/weight")[0]),
           "decoder_ffn_dim": int(v.shape("decoder/layer_0/ffn/linear_0/weight")[0]),
           "max_target_positions": int(v.shape("decoder/position_encodings/encodings")[0]),
           "max_source_positions": int(
               variables["encoder/position_encodings/encodings"].shape[0]
               if "encoder/position_encodings/encodings" in variables else 1500)}
  activation = _scalar(variables, "decoder/activation", _GELU)
  if activation != _GELU:
    raise PretrainedError(f"{source}: decoder/activation is {activation}, not GELU ({_GELU})")
  if not _scalar(variables, "decoder/pre_norm", 1):
    raise PretrainedError(f"{source}: decoder/pre_norm is off; Whisper is pre-norm")
  projection = variables.get("decoder/projection/weight")
  tied = projection is None or projection is variables["decoder/embeddings/weight"] or bool(
      np.array_equal(projection, variables["decoder/embeddings/weight"]))
  state = _WhisperState(v, int(d_model)).build(sizes, tied)
  config = _whisper_config(variables, sizes, tied, ct2_config,
                           whisper_special_ids(vocab_size, vocabulary))
  for key in ("encoder_attention_heads", "decoder_attention_heads"):
    if not config[key] or d_model % config[key]:
      raise PretrainedError(f"{source}: {key.split('_')[0]}/num_heads "
                            f"({config[key]}) does not divide d_model {d_model}")
  return config, state


class _Variables:
  """A CTranslate2 model's variables, taken as float32 with their names and shapes checked."""

  def __init__(self, variables: dict[str, np.ndarray], source: str):
    self.variables, self.source = variables, source

  def __contains__(self, name: str) -> bool:
    return name in self.variables

  def _checked(self, name: str) -> np.ndarray:
    """The variable as stored, after checking that it is there and floating point."""
    if name not in self.variables:
      raise PretrainedError(f"{self.source}: CTranslate2 variable {name!r} is missing")
    array = np.asarray(self.variables[name])
    if not np.issubdtype(array.dtype, np.floating):
      raise PretrainedError(f"{self.source}: CTranslate2 variable {name!r} is {array.dtype}, "
                            "not floating point")
    return array

  def shape(self, name: str) -> tuple[int, ...]:
    """The variable's shape, checked as `take` checks it, without a float32 copy."""
    return tuple(self._checked(name).shape)

  def take(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = self._checked(name)
    if shape is not None and tuple(array.shape) != tuple(shape):
      raise PretrainedError(f"{self.source}: CTranslate2 variable {name!r} has shape "
                            f"{tuple(array.shape)}, expected {tuple(shape)}")
    return np.asarray(array, np.float32)


class _WhisperState:
  """transformers' Whisper state dict, built from CTranslate2 variables layer by layer."""

  def __init__(self, v: _Variables, d_model: int):
    self.v, self.d = v, d_model
    self.state: dict[str, np.ndarray] = {}

  def build(self, sizes: dict, tied: bool) -> dict[str, np.ndarray]:
    v, d, state = self.v, self.d, self.state
    for i in (1, 2):
      state[f"model.encoder.conv{i}.weight"] = v.take(
          f"encoder/conv{i}/weight", (d, sizes["num_mel_bins"] if i == 1 else d, 3))
      state[f"model.encoder.conv{i}.bias"] = v.take(f"encoder/conv{i}/bias", (d,))
    source_positions = sizes["max_source_positions"]
    state["model.encoder.embed_positions.weight"] = (
        v.take("encoder/position_encodings/encodings", (source_positions, d))
        if "encoder/position_encodings/encodings" in v
        else whisper.encoder_positions(source_positions, d))
    for i in range(sizes["encoder_layers"]):
      self.layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", sizes["encoder_ffn_dim"],
                 cross=False)
    self.norm("model.encoder.layer_norm", "encoder/layer_norm")
    embeddings = v.take("decoder/embeddings/weight", (sizes["vocab_size"], d))
    state["model.decoder.embed_tokens.weight"] = embeddings
    state["model.decoder.embed_positions.weight"] = v.take(
        "decoder/position_encodings/encodings", (sizes["max_target_positions"], d))
    for i in range(sizes["decoder_layers"]):
      self.layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", sizes["decoder_ffn_dim"],
                 cross=True)
    self.norm("model.decoder.layer_norm", "decoder/layer_norm")
    state["proj_out.weight"] = (embeddings if tied else v.take(
        "decoder/projection/weight", (sizes["vocab_size"], d)))
    return state

  def linear(self, hf: str, ct2: str, rows: int, cols: int) -> None:
    self.state[f"{hf}.weight"] = self.v.take(f"{ct2}/weight", (rows, cols))
    self.state[f"{hf}.bias"] = self.v.take(f"{ct2}/bias", (rows,))

  def norm(self, hf: str, ct2: str) -> None:
    self.state[f"{hf}.weight"] = self.v.take(f"{ct2}/gamma", (self.d,))
    self.state[f"{hf}.bias"] = self.v.take(f"{ct2}/beta", (self.d,))

  def fused(self, hf: str, ct2: str, parts: tuple[str, ...]) -> None:
    """A fused CTranslate2 linear split into `parts` (k_proj: no bias)."""
    n, d = len(parts), self.d
    weights = np.split(self.v.take(f"{ct2}/weight", (n * d, d)), n)
    biases = np.split(self.v.take(f"{ct2}/bias", (n * d,)), n)
    for part, w, b in zip(parts, weights, biases):
      self.state[f"{hf}.{part}.weight"] = w
      if part != "k_proj":
        self.state[f"{hf}.{part}.bias"] = b

  def layer(self, hf: str, ct2: str, ffn: int, cross: bool) -> None:
    d = self.d
    self.fused(f"{hf}.self_attn", f"{ct2}/self_attention/linear_0",
               ("q_proj", "k_proj", "v_proj"))
    self.linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1", d, d)
    self.norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
    if cross:
      self.fused(f"{hf}.encoder_attn", f"{ct2}/attention/linear_0", ("q_proj",))
      self.fused(f"{hf}.encoder_attn", f"{ct2}/attention/linear_1", ("k_proj", "v_proj"))
      self.linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2", d, d)
      self.norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
    self.linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0", ffn, d)
    self.linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1", d, ffn)
    self.norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")


def _whisper_config(variables, sizes: dict, tied: bool, ct2_config: dict, ids: dict) -> dict:
  """config.json of transformers' Whisper, with what generation_config.json holds."""
  eot = ids["endoftext"]
  lang_ids = ct2_config.get("lang_ids") or ids["languages"]
  return {
      "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
      "vocab_size": sizes["vocab_size"], "num_mel_bins": sizes["num_mel_bins"],
      "d_model": sizes["d_model"],
      "encoder_layers": sizes["encoder_layers"], "decoder_layers": sizes["decoder_layers"],
      "encoder_attention_heads": _scalar(variables, "encoder/num_heads", 0),
      "decoder_attention_heads": _scalar(variables, "decoder/num_heads", 0),
      "encoder_ffn_dim": sizes["encoder_ffn_dim"], "decoder_ffn_dim": sizes["decoder_ffn_dim"],
      "max_source_positions": sizes["max_source_positions"],
      "max_target_positions": sizes["max_target_positions"],
      "activation_function": "gelu",
      "scale_embedding": bool(_scalar(variables, "decoder/scale_embeddings", 0)),
      "is_encoder_decoder": True, "use_cache": True, "tie_word_embeddings": tied,
      "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
      "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0, "init_std": 0.02,
      "decoder_start_token_id": ids["startoftranscript"],
      "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot,
      "suppress_tokens": list(ct2_config.get("suppress_ids") or []),
      "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin") or [220, eot]),
      # What transformers keeps in generation_config.json (split_generation_config).
      "alignment_heads": [list(h) for h in ct2_config.get("alignment_heads") or []],
      "lang_ids": list(lang_ids) if ids["is_multilingual"] else [],
      "is_multilingual": ids["is_multilingual"],
      "no_timestamps_token_id": ids["notimestamps"],
      "prev_sot_token_id": ids["startofprev"],
      "task_to_id": ({"transcribe": ids["transcribe"], "translate": ids["translate"]}
                     if ids["is_multilingual"] else {}),
  }


_GENERATION_KEYS = ("alignment_heads", "is_multilingual", "no_timestamps_token_id",
                    "prev_sot_token_id", "task_to_id", "lang_ids")


def split_generation_config(hf_config: dict, vocabulary: list[str] | None = None,
                            ) -> tuple[dict, dict]:
  """(config.json, generation_config.json) of whisper_state_dict's config: transformers'
  Whisper keeps the decoding settings (suppressed tokens, alignment heads, languages as
  lang_to_id {"<|en|>": 50259, ...}, which needs the vocabulary) in the second."""
  config = {k: v for k, v in hf_config.items() if k not in _GENERATION_KEYS}
  c = hf_config
  generation = {
      "decoder_start_token_id": c["decoder_start_token_id"],
      "bos_token_id": c["bos_token_id"], "eos_token_id": c["eos_token_id"],
      "pad_token_id": c["pad_token_id"], "max_length": c["max_target_positions"],
      "suppress_tokens": c["suppress_tokens"],
      "begin_suppress_tokens": c["begin_suppress_tokens"],
      "is_multilingual": c["is_multilingual"], "return_timestamps": False,
      "no_timestamps_token_id": c["no_timestamps_token_id"],
      "prev_sot_token_id": c["prev_sot_token_id"],
      "max_initial_timestamp_index": 50,  # whisper's max_initial_timestamp: 1 s.
  }
  if c["alignment_heads"]:
    generation["alignment_heads"] = c["alignment_heads"]
  if c["is_multilingual"]:
    generation["task_to_id"] = c["task_to_id"]
    if vocabulary:
      generation["lang_to_id"] = {vocabulary[i]: i for i in c["lang_ids"]
                                  if i < len(vocabulary)}
  return config, generation
