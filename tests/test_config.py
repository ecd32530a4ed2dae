"""Config validation names the bad field before anything is built."""

import pytest

from transformer_jax import config as config_lib, kinds
from transformer_jax.models import config as models_config
from transformer_jax.parallel import sharding

from conftest import tiny_config


def _error(num_devices=8, **overrides):
  with pytest.raises(config_lib.ConfigError) as e:
    kinds.validate(tiny_config(**overrides), num_devices)
  return str(e.value)


def test_default_and_base_configs_are_valid():
  kinds.validate(config_lib.default_config(), 1)
  kinds.validate(tiny_config(), 8)


@pytest.mark.parametrize("field,value,expected", [
    ("num_train_steps", -1, "config.num_train_steps=-1"),
    ("per_device_batch_size", -2, "config.per_device_batch_size=-2"),
    ("learning_rate", 0.0, "config.learning_rate=0.0"),
    ("lr_schedule", "exponential", "config.lr_schedule='exponential'"),
    ("label_smoothing", 1.5, "config.label_smoothing=1.5"),
    ("model.qkv_dim", 33, "config.model.qkv_dim=33"),
    ("model.dtype", "float16", "config.model.dtype='float16'"),
    ("model.norm_position", "middle", "config.model.norm_position='middle'"),
    ("data.source", "web", "config.data.source='web'"),
    ("data.test_fraction", 0.99, "config.data.test_fraction=0.99"),
    ("data.vocab_size", 50, "config.data.vocab_size=50"),
    ("data.tokenizer_type", "bpe", "config.data.tokenizer_type='bpe'"),
    ("logical_axis_rules", "zero", "config.logical_axis_rules='zero'"),
    ("decoding.method", "nucleus", "config.decoding.method='nucleus'"),
    ("decoding.method", "ctc", "config.decoding.method='ctc': is not offered for encoder_decoder"),
    ("decoding.beam_size", 0, "config.decoding.beam_size=0"),
    ("decoding.alpha", -0.5, "config.decoding.alpha=-0.5"),
    ("decoding.top_p", 0.0, "config.decoding.top_p=0.0"),
    ("decoding.top_k", -1, "config.decoding.top_k=-1"),
    ("decoding.ctc_weight", 1.0, "config.decoding.ctc_weight=1.0: must be in [0, 1)"),
    ("decoding.ctc_weight", 0.3,
     "config.decoding.ctc_weight=0.3: encoder_decoder models do not read it"),
    ("decoding.oov_penalty", -1.0, "config.decoding.oov_penalty=-1.0: must be >= 0"),
    ("decoding.oov_penalty", 2.0,
     "config.decoding.oov_penalty=2.0: encoder_decoder models do not read it"),
    ("decoding.segment_frames", 480,
     "config.decoding.segment_frames=480: encoder_decoder models do not read it"),
    ("decoding.segment_frames", 50, "config.decoding.segment_frames=50: must be 0"),
    ("num_eval_bleu_examples", -5, "config.num_eval_bleu_examples=-5"),
    ("model.num_kv_heads", 3, "config.model.num_kv_heads=3: must divide model.num_heads=2"),
    ("model.global_every", 6, "config.model.global_every=6: needs model.sliding_window > 0"),
    ("model.sliding_window", -1, "config.model.sliding_window=-1: must be >= 0"),
    ("model.rotary_scaling", "yarn", "config.model.rotary_scaling='yarn'"),
    ("model.attention_scale", -0.1, "config.model.attention_scale=-0.1"),
    ("model.rotary_base_local", 0.5, "config.model.rotary_base_local=0.5: must be > 1"),
])
def test_bad_fields_are_named(field, value, expected):
  assert expected in _error(**{field: value})


@pytest.mark.parametrize("field,value,expected", [
    ("decoding.method", "ctc", "config.decoding.method='ctc': needs the CTC head"),
    ("model.subsample", 3, "config.model.subsample=3"),
    ("model.frontend_channels", -1, "config.model.frontend_channels=-1: must be an integer"),
    ("decoding.ctc_weight", 0.3, "config.decoding.ctc_weight=0.3: needs the CTC head"),
    ("decoding.oov_penalty", 2.0,
     "config.decoding.oov_penalty=2.0: the word list is for letter models "
     "(data.tokenizer_type='char', not 'unigram')"),
    ("data.real_speech", "all", "config.data.real_speech='all'"),
    ("data.feature_norm", "cmvn", "config.data.feature_norm='cmvn': must be one of "
     "('none', 'mean', 'mean_var')"),
    ("data.augment.speed", (1.2, 0.9), "config.data.augment.speed=(1.2, 0.9)"),
    ("data.augment.warp", (1.1, 0.9), "config.data.augment.warp=(1.1, 0.9)"),
    ("data.voices_per_sentence", 0, "config.data.voices_per_sentence=0: must be at least 1"),
    ("data.flite_share", 1.0, "config.data.flite_share=1.0: must be in [0, 1)"),
    ("data.tts_real_transcripts", -1, "config.data.tts_real_transcripts=-1: must be >= 0"),
    ("data.tts_real_transcripts", 2, "config.data.tts_real_transcripts=2: speaks the real "
     "training prompts' transcripts: needs data.source='tts' and data.real_speech='train_test'"),
    ("data.real_validation_fraction", 1.0,
     "config.data.real_validation_fraction=1.0: must be in [0, 1)"),
    ("data.espeak_variants", ("m1", "linda"),
     "config.data.espeak_variants=('m1', 'linda'): ['linda'] speak the validation"),
])
def test_bad_speech_fields_are_named(field, value, expected):
  overrides = {"model.kind": "speech_to_text", "data.source": "tts", "model.ctc_weight": 0.0,
               field: value}
  assert expected in _error(**overrides)


def test_the_beams_speech_options_leave_other_methods_alone():
  overrides = {"model.kind": "speech_to_text", "data.source": "tts", "model.ctc_weight": 0.5,
               "data.tokenizer_type": "char", "decoding.ctc_weight": 0.3,
               "decoding.oov_penalty": 2.0}
  for method in ("beam", "greedy", "ctc"):  # like beam_size and alpha, ignored off the beam
    kinds.validate(tiny_config(**overrides, **{"decoding.method": method}), 8)


def test_mesh_is_checked_against_devices():
  c = tiny_config()
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 3, 3, 1
  with pytest.raises(config_lib.ConfigError, match=r"config.mesh=.*data \* fsdp \* tensor is 9, but there are 8 devices"):
    kinds.validate(c, 8)
  c.mesh.data, c.mesh.fsdp = -1, 2
  assert sharding.mesh_shape(c, 8) == (4, 2, 1)
  c.mesh.fsdp = 3
  with pytest.raises(config_lib.ConfigError, match="config.mesh"):
    sharding.mesh_shape(c, 8)
  c.mesh.data, c.mesh.fsdp = -1, -1
  with pytest.raises(config_lib.ConfigError, match="at most one axis may be -1"):
    sharding.mesh_shape(c, 8)


def test_slices_multiply_the_data_axis():
  c = tiny_config()
  c.mesh.dcn_data, c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, -1, 2, 1
  assert sharding.slice_mesh_shape(c, 8) == (2, 2, 1)
  assert sharding.mesh_shape(c, 8) == (4, 2, 1)
  c.mesh.dcn_data = 3
  with pytest.raises(config_lib.ConfigError, match="dcn_data=3 slices"):
    sharding.mesh_shape(c, 8)


@pytest.mark.parametrize("field,value,rules,expected", [
    ("model.num_heads", 2, "fsdp_tensor", "config.model.num_heads=2 does not divide over the "
     "mesh axes ('tensor',) (4 devices)"),
    ("model.mlp_dim", 66, "fsdp_tensor", "config.model.mlp_dim=66"),
    ("model.emb_dim", 33, "fsdp", "config.model.emb_dim=33"),
])
def test_sharded_sizes_must_divide(field, value, rules, expected):
  c = tiny_config(logical_axis_rules=rules, **{field: value, "model.qkv_dim": 32})
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 2, 4
  with pytest.raises(config_lib.ConfigError) as e:
    kinds.validate(c, 8)
  assert expected in str(e.value) and "config.mesh=" in str(e.value)


def test_rule_overrides_replace_preset_entries():
  c = tiny_config(logical_axis_rules="fsdp_tensor",
                  logical_axis_rule_overrides=(("vocab", None), ("embed", ("fsdp", "data"))))
  kinds.validate(c, 8)
  rules = dict(sharding.logical_axis_rules(c))
  assert rules["vocab"] is None and rules["embed"] == ("fsdp", "data")
  assert rules["mlp"] == "tensor"  # untouched entries keep the preset's value.
  bad = tiny_config(logical_axis_rule_overrides=(("vocab", "model"),))
  with pytest.raises(config_lib.ConfigError, match="config.logical_axis_rule_overrides"):
    kinds.validate(bad)


def test_model_config_derivation():
  m = models_config.model_config(tiny_config(), vocab_size=321)
  assert m.vocab_size == 384  # padded to a multiple of 128 so that it shards evenly.
  assert m.head_dim == 16 and not m.decode and not m.deterministic
  assert m.replace(decode=True).decode and not m.decode


def test_a_saved_config_round_trips_and_unknown_fields_are_named(tmp_path):
  c = tiny_config(**{"decoding.method": "beam", "model.emb_dim": 48,
                     "logical_axis_rule_overrides": (("vocab", None), ("mlp", ("fsdp", "tensor")))})
  path = tmp_path / "config.json"
  path.write_text(c.to_json_best_effort(), encoding="utf-8")
  loaded = config_lib.from_json(str(path))
  assert loaded.decoding.method == "beam" and loaded.model.emb_dim == 48
  assert dict(sharding.logical_axis_rules(loaded)) == dict(sharding.logical_axis_rules(c))
  kinds.validate(loaded, 8)
  path.write_text('{"model": {"emb_dimension": 3}}', encoding="utf-8")
  with pytest.raises(config_lib.ConfigError, match="unknown field config.model.emb_dimension"):
    config_lib.from_json(str(path))
  with pytest.raises(config_lib.ConfigError, match="cannot read"):
    config_lib.from_json(str(tmp_path / "missing.json"))


def test_best_checkpoint_metric_must_be_one_the_kind_logs():
  # The translation run logs eval/bleu only when it translates validation sentences.
  assert "config.best_checkpoint_metric='eval/bleu'" in _error(best_checkpoint_metric="eval/bleu")
  kinds.validate(tiny_config(best_checkpoint_metric="eval/bleu", num_eval_bleu_examples=8))
  message = _error(**{"best_checkpoint_metric": "eval/f1", "model.kind": "decoder_lm",
                      "data.source": "python_stdlib"})
  assert "a 'decoder_lm' run logs ('eval/loss', 'eval/perplexity', 'eval/accuracy')" in message
  assert "config.best_checkpoint_metric='eval/f1'" in message


def test_each_kind_offers_its_own_decoding_methods():
  lm = {"model.kind": "decoder_lm", "data.source": "python_stdlib"}
  assert "config.decoding.method='beam': is not offered for decoder_lm" in _error(
      **lm, **{"decoding.method": "beam"})
  kinds.validate(tiny_config(**lm, **{"decoding.method": "sample"}), 8)


def test_kind_specific_fields_are_checked_by_the_kind():
  vit = {"model.kind": "vit", "data.source": "mnist", "data.image_size": 28}
  assert "config.model.positions='sinusoidal'" in _error(**vit)
  assert "config.model.patch_size=5" in _error(**vit, **{"model.positions": "learned",
                                                         "model.patch_size": 5})
  assert "config.data.source='gettext': must be one of ('mnist', 'files')" in _error(
      **{**vit, "data.source": "gettext", "model.positions": "learned"})
