"""A train step that cannot fit in a device's memory is caught when it compiles."""

import jax
import jax.numpy as jnp
import pytest
from test_nonfinite import _digest, _train

from transformer_jax.parallel import memory

from conftest import excerpt, tiny_config, write_parallel_tsv


def _compiled_matmul(n):
  x = jax.ShapeDtypeStruct((n, n), jnp.float32)
  return jax.jit(lambda a: jnp.tanh(a @ a) @ a).lower(x).compile()


def test_the_footprint_is_xlas_count_and_a_step_over_the_limit_is_refused():
  footprint = memory.Footprint.of(_compiled_matmul(256))
  assert footprint.arguments == 256 * 256 * 4 and footprint.outputs == 256 * 256 * 4
  assert footprint.total >= footprint.arguments + footprint.outputs
  config = tiny_config()
  memory.check_fits(footprint, 0, (footprint.total, "test"), config)  # exactly fits.
  with pytest.raises(memory.OutOfMemoryError) as e:
    memory.check_fits(footprint, 0, (footprint.total - 1, "a small device"), config)
  message = str(e.value)
  assert "per device but has" in message and "(a small device)" in message
  for field in ("config.per_device_batch_size (now", "config.model.remat='full'",
                "config.mesh.fsdp", "config.gradient_accumulation_steps"):
    assert field in message


def test_a_cpu_device_gets_its_share_of_the_machines_ram():
  limit, source = memory.device_limit()
  devices = len(jax.local_devices())
  assert source == "the machine's RAM" + (f" shared by {devices} devices" if devices > 1 else "")
  assert 0 < limit <= memory._machine_ram() // devices + 1  # pylint: disable=protected-access
  assert memory.device_limit(5) == (5 * memory.MiB, "config.memory_limit_mib=5")


@pytest.mark.slow
def test_a_step_too_big_for_the_device_stops_before_init_and_changes_nothing(tmp_path):
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=20)
  workdir = tmp_path / "run"
  proc = _train(workdir, tsv, "--config.num_train_steps=2")
  assert proc.returncode == 0, excerpt(proc.stderr)
  before = _digest(workdir / "checkpoints")
  proc = _train(workdir, tsv, "--config.num_train_steps=4", "--config.memory_limit_mib=1")
  assert proc.returncode == 2, excerpt(proc.stderr)
  assert "Traceback" not in proc.stderr
  error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(error) == 1, excerpt(proc.stderr)
  assert "the train step needs" in error[0] and "(config.memory_limit_mib=1)" in error[0]
  assert "config.per_device_batch_size (now" in error[0]
  assert "Resuming" not in proc.stdout  # refused before the state was restored.
  assert _digest(workdir / "checkpoints") == before
