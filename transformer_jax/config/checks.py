"""The checks of a config's generic fields, and the allowed values of its enumerations.

`check_fields()` checks every field that means the same for every kind; the full
check before a run (`transformer_jax.kinds.validate`) adds the kind's record's checks
and the mesh's. Each names the first bad field (ConfigError).
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import ml_collections

from transformer_jax.errors import ConfigError, fail as _fail

LR_SCHEDULES = ("rsqrt", "cosine", "linear", "constant")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
NORM_POSITIONS = ("pre", "post")
NORMS = ("layernorm", "rmsnorm")  # models/layers.py's NORMS.
ROTARY_SCALINGS = ("none", "linear", "llama3")  # models/layers.py's rotary_frequencies.
ACTIVATIONS = ("relu", "gelu", "gelu_exact", "silu")
POSITIONS = ("sinusoidal", "learned", "rotary")
ATTENTION = ("xla", "dot_product")
POOLING = ("cls", "mean")
REMAT = ("none", "full", "dots")
DECODING_METHODS = ("greedy", "beam", "sample", "ctc")  # ctc: a CTC head's own search.
TOKENIZER_TYPES = ("unigram", "char")  # sentencepiece model types (data/tokenizer.py).
# config.decoding fields that only some kinds' decoders read, with their off value and what
# they do; a kind names those it reads in its record's `decoding_fields`.
OPTIONAL_DECODING = {
    "ctc_weight": (0.0, "weighs a CTC head's scores (0: the decoder alone)"),
    "oov_penalty": (0.0, "charges words outside the training transcripts' word list (0: off)"),
    "segment_frames": (0, "cuts long recordings into pieces (0: off)"),
    "keep_placeholders": (False, "keeps a source's printf placeholders in its translation"),
}


def _positive_int(config, field: str):
  value = _get(config, field)
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    _fail(field, value, "must be a positive integer")


def _get(config, field: str):
  node = config
  for part in field.split("."):
    if part not in node:
      raise ConfigError(f"config.{field} is missing")
    node = node[part]
  return node


def _one_of(config, field: str, choices):
  value = _get(config, field)
  if value not in choices:
    _fail(field, value, f"must be one of {tuple(choices)}")


def _fraction(config, field: str, low_open: bool = False):
  value = _get(config, field)
  if not isinstance(value, (int, float)) or value < 0 or value >= 1 or (low_open and value == 0):
    _fail(field, value, "must be a fraction in " + ("(0, 1)" if low_open else "[0, 1)"))


def _check_profile(config) -> None:
  steps = config.profile_steps
  if isinstance(steps, (tuple, list)) and not steps:
    return
  if (not isinstance(steps, (tuple, list)) or len(steps) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
      or not 0 <= steps[0] < steps[1]):
    _fail("profile_steps", config.profile_steps,
          "must be () (off) or (start, stop) with 0 <= start < stop: the steps "
          "range(start, stop)")


def check_fields(config: ml_collections.ConfigDict) -> None:
  """Checks the fields that mean the same for every kind; raises ConfigError naming the first bad one."""
  value = config.num_train_steps
  if not isinstance(value, int) or isinstance(value, bool) or value < 0:
    _fail("num_train_steps", value, "must be an integer >= 0 (0: no training, the starting "
          "weights evaluated, saved and tested)")
  for f in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps",
            "max_checkpoints_to_keep", "per_device_batch_size", "max_target_length",
            "max_predict_length", "model.emb_dim", "model.num_heads", "model.qkv_dim",
            "model.mlp_dim", "model.num_encoder_layers", "model.num_decoder_layers",
            "data.vocab_size", "data.num_packing_bins", "gradient_accumulation_steps"):
    _positive_int(config, f)
  for f in ("warmup_steps", "checkpoint_every_seconds", "train_budget_seconds",
            "keep_best_checkpoints", "global_batch_size", "max_skipped_nonfinite_steps",
            "memory_limit_mib"):
    if _get(config, f) < 0:
      _fail(f, _get(config, f), "must be >= 0")
  _check_decoding(config)
  _check_profile(config)
  _check_compression(config)
  _check_lora(config)
  if config.num_eval_bleu_examples < 0:
    _fail("num_eval_bleu_examples", config.num_eval_bleu_examples, "must be >= 0 (0: off)")
  for f in ("num_eval_steps", "num_predict_examples"):
    v = _get(config, f)
    if v == 0 or v < -1:
      _fail(f, v, "must be positive, or -1 for all")
  if not config.learning_rate > 0:
    _fail("learning_rate", config.learning_rate, "must be > 0")
  if config.grad_clip_norm < 0:
    _fail("grad_clip_norm", config.grad_clip_norm, "must be >= 0 (0 disables clipping)")
  if config.weight_decay < 0:
    _fail("weight_decay", config.weight_decay, "must be >= 0")
  for f in ("label_smoothing", "adam_b1", "adam_b2", "model.dropout_rate",
            "model.attention_dropout_rate"):
    _fraction(config, f)
  _one_of(config, "lr_schedule", LR_SCHEDULES)
  _one_of(config, "model.dtype", DTYPES)
  _one_of(config, "model.norm_position", NORM_POSITIONS)
  _one_of(config, "model.norm", NORMS)
  if not config.model.rotary_base > 1:
    _fail("model.rotary_base", config.model.rotary_base, "must be > 1")
  _one_of(config, "model.activation", ACTIVATIONS)
  _one_of(config, "model.frontend_activation", ACTIVATIONS)
  _check_model(config)
  _one_of(config, "best_checkpoint_mode", ("min", "max"))
  _check_init_from(config)
  _check_data(config)
  _positive_int(config, "mesh.dcn_data")
  validate_distributed(config)


def _check_model(config) -> None:
  _one_of(config, "model.positions", POSITIONS)
  _one_of(config, "model.encoder_positions", ("",) + POSITIONS)
  _one_of(config, "model.attention", ATTENTION)
  _one_of(config, "model.pooling", POOLING)
  _positive_int(config, "model.patch_size")
  _positive_int(config, "data.image_size")
  _positive_int(config, "data.num_channels")
  _positive_int(config, "model.num_token_types")
  if config.model.max_length < 0:
    _fail("model.max_length", config.model.max_length, "must be >= 0 (0: from the lengths)")
  if not 0 < config.model.layer_norm_epsilon < 1:
    _fail("model.layer_norm_epsilon", config.model.layer_norm_epsilon, "must be in (0, 1)")
  if config.model.num_classes < 0:
    _fail("model.num_classes", config.model.num_classes, "must be >= 0 (0: from the data)")
  if config.model.attention == "dot_product" and config.model.attention_dropout_rate > 0:
    _fail("model.attention_dropout_rate", config.model.attention_dropout_rate,
          "must be 0 with model.attention='dot_product' (it has no attention dropout)")
  _one_of(config, "model.remat", REMAT)
  if config.model.qkv_dim % config.model.num_heads:
    _fail("model.qkv_dim", config.model.qkv_dim,
          f"must divide by model.num_heads={config.model.num_heads}")
  _check_decoder_recipe(config.model)


def _check_decoder_recipe(m) -> None:
  """The options of today's decoders (grouped-query attention, windows, RoPE scaling)."""
  if m.num_kv_heads < 0 or (m.num_kv_heads and m.num_heads % m.num_kv_heads):
    _fail("model.num_kv_heads", m.num_kv_heads,
          f"must divide model.num_heads={m.num_heads} (0: as many as the query heads)")
  for field in ("sliding_window", "global_every"):
    if m[field] < 0:
      _fail(f"model.{field}", m[field], "must be >= 0 (0: off)")
  if m.global_every and not m.sliding_window:
    _fail("model.global_every", m.global_every, "needs model.sliding_window > 0")
  if m.scan_layers and (m.global_every or m.rotary_base_local):
    _fail("model.scan_layers", m.scan_layers, "must be False with model.global_every or "
          "model.rotary_base_local (layers that differ cannot be one scanned layer)")
  if m.rotary_base_local and not m.rotary_base_local > 1:
    _fail("model.rotary_base_local", m.rotary_base_local, "must be > 1 (0: model.rotary_base)")
  if m.attention_scale < 0:
    _fail("model.attention_scale", m.attention_scale, "must be >= 0 (0: 1/sqrt(head width))")
  if m.rotary_scaling not in ROTARY_SCALINGS:
    _fail("model.rotary_scaling", m.rotary_scaling, f"must be one of {ROTARY_SCALINGS}")
  if m.rotary_scaling != "none" and not m.rotary_scaling_factor > 0:
    _fail("model.rotary_scaling_factor", m.rotary_scaling_factor, "must be > 0")
  if m.rotary_scaling == "llama3" and not (
      0 < m.rotary_low_freq_factor < m.rotary_high_freq_factor and m.rotary_original_length > 0):
    _fail("model.rotary_high_freq_factor", m.rotary_high_freq_factor,
          f"must exceed model.rotary_low_freq_factor={m.rotary_low_freq_factor} > 0, with "
          f"model.rotary_original_length={m.rotary_original_length} > 0")


def _check_init_from(config) -> None:
  if config.init_from.hf and config.model.scan_layers:
    _fail("model.scan_layers", config.model.scan_layers,
          "must be False with init_from.hf (Hugging Face weights load layer by layer)")
  if config.init_from.gguf and (config.model.scan_layers or config.init_from.workdir):
    _fail("init_from.gguf", config.init_from.gguf,
          "needs model.scan_layers=False and no init_from.workdir")
  if config.init_from.hf and config.init_from.workdir:
    _fail("init_from.hf", config.init_from.hf, "and init_from.workdir cannot both be set")
  if config.init_from.adapter and not (
      (config.init_from.hf or config.init_from.gguf) and config.lora.rank):
    _fail("init_from.adapter", config.init_from.adapter, "needs init_from.hf or "
          "init_from.gguf (the base the adapters were trained on) and lora.rank > 0")
  if config.init_from.params:
    try:
      re.compile(config.init_from.params)
    except re.error as e:
      _fail("init_from.params", config.init_from.params, f"is not a regex: {e}")


def _check_data(config) -> None:
  _fraction(config, "data.validation_fraction")
  _fraction(config, "data.test_fraction")
  if config.data.validation_fraction + config.data.test_fraction >= 1:
    _fail("data.test_fraction", config.data.test_fraction,
          "validation_fraction + test_fraction must be < 1")
  _one_of(config, "data.tokenizer_type", TOKENIZER_TYPES)
  if config.data.vocab_size < 300 and config.data.tokenizer_type == "unigram":
    _fail("data.vocab_size", config.data.vocab_size,
          "must be at least 300 (256 byte-fallback pieces + specials + words)")


def _check_compression(config) -> None:
  _one_of(config, "quantization.bits", (0, 4, 8))
  _one_of(config, "quantization.activation_bits", (0, 8))
  if config.quantization.activation_bits and not config.quantization.bits:
    _fail("quantization.activation_bits", config.quantization.activation_bits,
          "needs quantization.bits (weights quantized too)")
  _fraction(config, "pruning.sparsity")
  _one_of(config, "pruning.scope", ("layer", "global"))
  _one_of(config, "pruning.structure", ("none", "groups"))
  _positive_int(config, "pruning.update_every")
  p = config.pruning
  if p.start_step < 0 or p.end_step < p.start_step:
    _fail("pruning.end_step", p.end_step,
          f"must be >= pruning.start_step={p.start_step} >= 0")
  if p.structure == "groups" and p.scope == "global":
    _fail("pruning.scope", p.scope, "must be 'layer' with pruning.structure='groups'")


def _check_lora(config) -> None:
  lora = config.lora
  if not isinstance(lora.rank, int) or lora.rank < 0:
    _fail("lora.rank", lora.rank, "must be an integer >= 0 (0: off)")
  _one_of(config, "lora.base_bits", (0, 4, 8))
  _one_of(config, "lora.base_quant_type", ("int", "nf4"))
  if lora.base_quant_type == "nf4" and lora.base_bits != 4:
    _fail("lora.base_quant_type", lora.base_quant_type,
          f"needs lora.base_bits=4 (now {lora.base_bits})")
  if not lora.rank:
    if lora.base_bits:
      _fail("lora.base_bits", lora.base_bits, "needs lora.rank > 0 (a frozen base)")
    return
  if not lora.alpha > 0:
    _fail("lora.alpha", lora.alpha, "must be > 0 (the adapters' scale is alpha / rank)")
  if not 0 <= lora.dropout < 1:
    _fail("lora.dropout", lora.dropout, "must be in [0, 1)")
  for field in ("targets", "train_also"):
    patterns = lora[field]
    if isinstance(patterns, str) or not all(isinstance(p, str) and p for p in patterns):
      _fail(f"lora.{field}", patterns, "must be a tuple of non-empty patterns")
    for p in patterns:
      if not p.startswith("names="):
        try:
          re.compile(p)
        except re.error as e:
          _fail(f"lora.{field}", p, f"is not a regex: {e}")
  if not lora.targets:
    _fail("lora.targets", lora.targets, "must name at least one kernel")
  for field in ("quantization.bits", "pruning.sparsity"):
    if _get(config, field):
      _fail(field, _get(config, field), "does not go with lora.rank > 0 (quantize or prune "
            "the merged model after fine-tuning: python -m transformer_jax.compress)")


def _check_decoding(config) -> None:
  d = config.decoding
  _one_of(config, "decoding.method", DECODING_METHODS)
  _positive_int(config, "decoding.beam_size")
  if not d.alpha >= 0:
    _fail("decoding.alpha", d.alpha, "must be >= 0")
  if not d.temperature >= 0:
    _fail("decoding.temperature", d.temperature, "must be >= 0 (0: greedy)")
  if not isinstance(d.top_k, int) or d.top_k < 0:
    _fail("decoding.top_k", d.top_k, "must be an integer >= 0 (0: off)")
  if not 0 < d.top_p <= 1:
    _fail("decoding.top_p", d.top_p, "must be in (0, 1] (1: off)")
  if not 0 <= d.ctc_weight < 1:
    _fail("decoding.ctc_weight", d.ctc_weight, "must be in [0, 1) (0: the decoder alone)")
  if not d.oov_penalty >= 0:
    _fail("decoding.oov_penalty", d.oov_penalty, "must be >= 0 (0: no word list)")
  if not isinstance(d.segment_frames, int) or not (d.segment_frames == 0
                                                   or d.segment_frames >= 100):
    _fail("decoding.segment_frames", d.segment_frames,
          "must be 0 (decode recordings whole) or an integer >= 100 (1 s pieces at least)")


def validate_distributed(config) -> None:
  """Checks config.distributed; runs before jax.distributed is initialised."""
  d = config.distributed
  if d.coordinator_address:
    if ":" not in d.coordinator_address:
      _fail("distributed.coordinator_address", d.coordinator_address, "must be HOST:PORT")
    if not isinstance(d.num_processes, int) or d.num_processes < 1:
      _fail("distributed.num_processes", d.num_processes, "must be a positive integer")
    if not isinstance(d.process_id, int) or not 0 <= d.process_id < d.num_processes:
      _fail("distributed.process_id", d.process_id,
            f"must be in [0, distributed.num_processes={d.num_processes})")
