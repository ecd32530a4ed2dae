"""The model-FLOP formula (flops.py) against XLA's count, and the peak it is divided by."""

import json
import os

import jax
import pytest

from transformer_jax import kinds
from transformer_jax.observe import flops
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

from conftest import tiny_config

# (kind, vocabulary, classes, config overrides): one compiled step of each kind.
KINDS = [
    ("encoder_decoder", 2000, 0, {}),
    ("decoder_lm", 2000, 0, {"model.kind": "decoder_lm"}),
    ("encoder_classifier", 2000, 5, {"model.kind": "encoder_classifier"}),
    ("vit", 0, 10, {"model.kind": "vit", "model.positions": "learned",
                    "data.image_size": 16, "model.patch_size": 4}),
    ("speech_to_text", 2000, 0, {"model.kind": "speech_to_text", "data.source": "tts",
                                 "data.max_frames": 128, "model.subsample": 4,
                                 "model.ctc_weight": 0.3}),
    ("speech_to_text", 2000, 0, {"model.kind": "speech_to_text", "data.source": "tts",
                                 "data.max_frames": 128, "model.subsample": 4,
                                 "model.ctc_weight": 0.3, "model.frontend_channels": 16}),
]


@pytest.mark.parametrize("kind,vocab,classes,overrides", KINDS,
                         ids=[k[0] + ("_2d" if "model.frontend_channels" in k[3] else "")
                              for k in KINDS])
def test_formula_is_xlas_count_of_the_compiled_step_less_elementwise_work(
    kind, vocab, classes, overrides):
  # Sizes where matrix products dominate, so the elementwise work XLA also counts
  # (softmax, norms, activations, Adam) is a few percent.
  config = tiny_config(**{"model.emb_dim": 128, "model.qkv_dim": 128, "model.mlp_dim": 512,
                          "model.num_heads": 4, "max_target_length": 32,
                          "model.dropout_rate": 0.0, "model.attention_dropout_rate": 0.0,
                          "global_batch_size": 16, "mesh.data": 1}, **overrides)
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  progs = programs.build(config, mesh, vocab, classes)
  with progs.context():
    cost = progs.train_step.lower(progs.abstract_state, progs.batch_specs()).compile()
    cost = cost.cost_analysis()
  xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
  ours = flops.train_flops_per_step(kinds.get(kind).forward_flops, progs.model_config,
                                    progs.batch_shapes)
  assert ours == progs.train_flops
  assert 0.93 * xla <= ours <= xla, (ours, xla, ours / xla)


def test_encoder_decoder_count_by_hand():
  """The base shape written out: 3+3 layers, width 256, MLP 1024, vocabulary 8,064, 32 x 64."""
  config = tiny_config(**{"model.emb_dim": 256, "model.qkv_dim": 256, "model.mlp_dim": 1024,
                          "model.num_heads": 4, "model.num_encoder_layers": 3,
                          "model.num_decoder_layers": 3, "max_target_length": 64,
                          "global_batch_size": 32})
  progs = programs.build(config, sharding.make_mesh(config), 8064)
  b, n, d, f, v = 32, 64, 256, 1024, 8064
  attention = 2 * b * n * 4 * d * d + 2 * 2 * b * n * n * d
  mlp = 2 * 2 * b * n * d * f
  forward = 3 * (attention + mlp) + 3 * (2 * attention + mlp) + 2 * b * n * d * v
  assert progs.train_flops == 3 * forward
  # Per token slot (source and target): about 6 x the parameters each position meets.
  assert progs.train_flops / (2 * b * n) == pytest.approx(23.6e6, rel=0.01)


def test_a_kind_without_a_formula_has_no_flops():
  assert flops.train_flops_per_step(None, None, {}) is None


def test_cpu_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  first = flops.cpu_matmul_flops()
  path = tmp_path / "transformer_jax" / "cpu_matmul.json"
  table = json.loads(path.read_text())
  assert list(table.values()) == [first] and first > 1e9
  # The cache answers next time: a changed entry comes back as written.
  key = next(iter(table))
  path.write_text(json.dumps({key: 123.0}))
  assert flops.cpu_matmul_flops() == 123.0
  rate, name = flops.peak_flops()
  assert rate == 123.0 and "CPU" in name
  # A broken cache file is measured over, not an error.
  path.write_text("{not json")
  assert flops.cpu_matmul_flops() > 1e9


def test_the_cpu_is_named_beside_its_figures():
  info = flops._cpuinfo()
  text = flops.cpu_description()
  assert text.endswith(f", {os.cpu_count()} cores")
  if "model name" in info:
    assert text.startswith(info["model name"])
  if "cpu family" in info:  # what a hypervisor's generic name hides.
    assert f"(family {info['cpu family']}, model {info['model']})" in text
  flags = info.get("flags", "").split()
  assert ("AVX-512" in text) == ("avx512f" in flags)
  assert ("AVX2" in text) == ("avx2" in flags and "avx512f" not in flags)
  assert flops.device_description(jax.devices()[:2]) == f"2 x cpu ({text})"
  _, name = flops.peak_flops()
  assert text in name


def test_accelerator_peaks_come_from_the_chip_table():
  assert flops.chip_peak_flops("TPU v5 lite") == 197e12
  assert flops.chip_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.chip_peak_flops("NVIDIA H100 80GB HBM3e") == 989e12  # a variant: its prefix.
  assert flops.chip_peak_flops("Some New Chip") is None
