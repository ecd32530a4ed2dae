"""Ahead-of-time TPU compilation on this CPU host (libtpu describes the chips).

Skipped where libtpu is not installed (`pip install -e ".[tpu]"`).
"""

import os
import subprocess
import sys

import pytest

from transformer_jax import aot, config as config_lib
from transformer_jax.parallel import topology

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "configs", "base.py")
SMALL = ["--config.model.num_encoder_layers=1", "--config.model.num_decoder_layers=1",
         "--config.per_device_batch_size=8"]


@pytest.mark.parametrize("name,libtpu_name", [
    ("v4-8", "v4:2x2x1"), ("v4-32", "v4:2x2x4"), ("v5p-128", "v5p:4x4x4"),
    ("v5p-1024", "v5p:8x8x8"), ("v5e-8", "v5e:2x4"), ("v5e-256", "v5e:16x16"),
    ("v5litepod-16", "v5e:4x4"), ("v6e-64", "v6e:8x8"), ("v5p:2x2x2", "v5p:2x2x2"),
])
def test_topology_names(name, libtpu_name):
  assert aot.parse_topology(name).libtpu_name == libtpu_name


@pytest.mark.parametrize("name", ["v5p-100", "v9-8", "tpu", "v5e:4x4x4", "v4-2", "v5e-2",
                                  "v5e-512", "v5e:8x32", "v4-16384"])
def test_bad_topology_names(name):
  with pytest.raises(aot.TopologyError, match="--topology"):
    aot.parse_topology(name)


def test_slices_and_dcn_data_must_agree():
  config = config_lib.default_config()
  config.mesh.dcn_data = 4
  with pytest.raises(config_lib.ConfigError, match="config.mesh.dcn_data=4"):
    aot.compile_for_topology(config, aot.parse_topology("v5e-8"), num_slices=2)


def test_missing_libtpu_says_how_to_install_it(monkeypatch):
  find_spec = topology.importlib.util.find_spec
  monkeypatch.setattr(topology.importlib.util, "find_spec",
                      lambda name, *a: None if name == "libtpu" else find_spec(name, *a))
  with pytest.raises(aot.MissingLibtpu, match=r'pip install -e "\.\[tpu\]"'):
    aot.topology_devices(aot.parse_topology("v5e-8"))


def _aot(*args):
  env = dict(os.environ)
  # Not the 8 simulated CPU devices of conftest; JAX_PLATFORMS=cpu stays, so that
  # jax does not look for a TPU to run on (the TPU devices come from libtpu).
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-m", "transformer_jax.aot", f"--config={BASE}", *args],
                        capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def test_base_config_compiles_for_a_tpu_slice_and_fits():
  pytest.importorskip("libtpu")
  proc = _aot("--topology=v5e-8", *SMALL)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert "topology v5e:2x4 x 1 slice(s): 8 chips; mesh {'data': 8, 'fsdp': 1, 'tensor': 1}" in out
  assert "global batch 64 x 64" in out and "fits: yes" in out
  flops = float(out.split("FLOPs per step")[1].split()[0])
  assert flops > 1e9
  for what in ("parameters", "optimizer state", "temporaries", "total"):
    assert f"  {what} " in out


def test_a_layout_that_cannot_fit_exits_3():
  pytest.importorskip("libtpu")
  # 4k-wide layers with 64k-token rows on one 16 GiB chip.
  proc = _aot("--topology=v5e:1x1", "--config.mesh.data=1", "--config.model.emb_dim=4096",
              "--config.model.mlp_dim=16384", "--config.model.qkv_dim=4096",
              "--config.per_device_batch_size=64", "--config.max_target_length=1024")
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "fits: NO" in proc.stdout and "config.mesh.fsdp" in proc.stdout


def test_bad_topology_or_mesh_exits_2_with_the_field_named():
  proc = _aot("--topology=v5p-100")
  assert proc.returncode == 2 and "--topology='v5p-100'" in proc.stderr
  if not topology.importlib.util.find_spec("libtpu"):
    return
  proc = _aot("--topology=v5e-8", "--config.mesh.data=3")
  assert proc.returncode == 2 and "config.mesh=" in proc.stderr
