"""Where a train step's time goes on this machine: XLA's ops, grouped, from a profile.

  python benchmarks/step_profile.py --config=configs/base.py [--steps=10] [--top=25]

Compiles the config's train step (synthetic full-length batches, as
benchmarks/train_step.py), traces `--steps` steps with jax.profiler and sums
the time of every op the executable ran, over all threads, per step. Ops are
grouped by their fusion's name without the number (`transpose_copy_fusion`,
`wrapped_reduce-window`, ...), and every op that holds a matrix product is
counted as `matmul` whatever XLA named it. Read the shares as shares of the traced
op time, not of the cores: an op XLA:CPU hands to YNNPACK is traced as one event
on the thread that calls it, while the library's own workers are not traced.
"""

import collections
import glob
import re
import tempfile
import time

from transformer_jax.train import hugepages

hugepages.reexec()  # as train.py does.

import jax
from absl import app, flags
from ml_collections import config_flags
from synthetic import synthetic_batch  # benchmarks/synthetic.py

from transformer_jax import kinds
from transformer_jax.parallel import sharding
from transformer_jax.train import programs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/base.py", "Config file.")
_STEPS = flags.DEFINE_integer("steps", 10, "Traced steps (after 3 warm-up steps).")
_TOP = flags.DEFINE_integer("top", 25, "Groups printed.")
_HLO = flags.DEFINE_string("hlo", "", "Also write the compiled step's HLO text here.")


def _ops_with_products(hlo: str) -> set[str]:
  """Names of the instructions that are, or call a computation that holds, a dot."""
  bodies = dict(re.findall(r"^%?(\S+) \([^)]*\) -> [^{]*\{\n(.*?)\n\}", hlo, re.S | re.M))
  with_dot = {name for name, body in bodies.items() if re.search(r"\sdot\(", body)}
  ops = set()
  for m in re.finditer(r"^\s+(?:ROOT )?%(\S+) = \S+ (\S+?)\((.*)$", hlo, re.M):
    name, op, rest = m.groups()
    called = re.search(r"calls=%([^,\s]+)", rest)
    if op == "dot" or (called and called.group(1) in with_dot):
      ops.add(name)
  return ops


def main(_):
  config = _CONFIG.value
  kinds.validate(config, jax.device_count())
  vocab_size = config.data.vocab_size
  progs = programs.build(config, sharding.make_mesh(config), vocab_size,
                         max(config.model.num_classes, 2))
  state = progs.init_state(jax.random.key(0))
  batch = synthetic_batch(progs, config, vocab_size)
  with progs.context():
    compiled = progs.train_step.lower(state, batch).compile()
    hlo = compiled.as_text()
    if _HLO.value:
      with open(_HLO.value, "w", encoding="utf-8") as f:
        f.write(hlo)
    for _ in range(3):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(_STEPS.value):
      state, m = compiled(state, batch)
    jax.block_until_ready(m)
    step_ms = (time.perf_counter() - t0) / _STEPS.value * 1e3
    with tempfile.TemporaryDirectory() as trace_dir:
      jax.profiler.start_trace(trace_dir)
      for _ in range(_STEPS.value):
        state, m = compiled(state, batch)
      jax.block_until_ready(m)
      jax.profiler.stop_trace()
      path = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[-1]
      profile = jax.profiler.ProfileData.from_file(path)
      names = set(re.findall(r"^\s+(?:ROOT )?%(\S+) = ", hlo, re.M))
      products = _ops_with_products(hlo)
      groups, threads = collections.Counter(), set()
      for plane in profile.planes:
        for line in plane.lines:
          for ev in line.events:
            if ev.name in names:  # an op of the step (not the runtime's own events).
              threads.add((plane.name, line.name))
              group = "matmul" if ev.name in products else re.sub(r"\.\d+$", "", ev.name)
              groups[group] += ev.duration_ns / 1e6 / _STEPS.value
  total = sum(groups.values())
  print(f"step {step_ms:.1f} ms untraced; traced op time {total:.1f} ms per step on "
        f"{len(threads)} threads")
  print("| ops | traced ms per step | share |")
  print("| --- | --- | --- |")
  for group, ms in groups.most_common(_TOP.value):
    print(f"| {group} | {ms:.2f} | {ms / total:.1%} |")


if __name__ == "__main__":
  app.run(main)
