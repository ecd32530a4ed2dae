"""A look at where a step's time goes: profiler traces of chosen steps, compile times.

`StepProfiler` captures a `jax.profiler` trace of the train steps
range(start, stop) (config.profile_steps) into WORKDIR/plugins/profile/, where
TensorBoard's profile tab (and XProf) find it next to the run's event files; a
perfetto_trace.json.gz beside it opens in ui.perfetto.dev. `compile_seconds` sums XLA's
compile time per jitted program, as JAX reports it, for `compile/<program>`.
"""

from __future__ import annotations

import collections
import glob
import os
import threading

import jax
from jax import monitoring

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compile_seconds: dict[str, float] = collections.defaultdict(float)
_lock = threading.Lock()
_listening = False


def _on_event(event: str, duration: float, **kwargs) -> None:
  if event == _COMPILE_EVENT:
    with _lock:
      _compile_seconds[str(kwargs.get("fun_name", "unknown"))] += duration


def listen_for_compiles() -> None:
  """Starts summing compile times (once per process)."""
  global _listening  # pylint: disable=global-statement
  if not _listening:
    monitoring.register_event_duration_secs_listener(_on_event)
    _listening = True


# The run's programs by the name JAX compiles them under; everything else (small
# jitted array operations) is summed as compile/other.
PROGRAMS = {"train_step": "train_step", "eval_step": "eval_step", "_decode": "decode",
            "init_unboxed": "init"}


def compile_seconds() -> dict[str, float]:
  """`compile/<program>` (train_step, eval_step, decode, init, other) and
  `compile/total`: seconds XLA spent compiling so far in this process."""
  out: dict[str, float] = collections.defaultdict(float)
  with _lock:
    for name, seconds in _compile_seconds.items():
      bare = name[4:-1] if name.startswith("jit(") and name.endswith(")") else name
      out[f"compile/{PROGRAMS.get(bare, 'other')}"] += seconds
  if out:
    out["compile/total"] = sum(out.values())
  return dict(sorted(out.items()))


class StepProfiler:
  """Traces the train steps range(start, stop) of this process (nothing for `()`)."""

  def __init__(self, steps, workdir: str, enabled: bool = True):
    self.range = tuple(steps) if steps else None
    self.workdir = workdir
    self.enabled = enabled
    self.active = False

  def before(self, step: int) -> None:
    """Call before running train step `step`: starts the trace at the range's start (or at
    the first step of a run that resumes inside the range)."""
    if not self.enabled or self.range is None or self.active:
      return
    start, stop = self.range
    if start <= step < stop:
      jax.profiler.start_trace(self.workdir, create_perfetto_trace=True)
      self.active = True

  def after(self, step: int, outputs) -> None:
    """Call after dispatching train step `step`: ends the trace after the range's last."""
    if self.active and step + 1 >= self.range[1]:
      self.stop(outputs)

  def stop(self, outputs=None) -> None:
    if not self.active:
      return
    jax.block_until_ready(outputs)  # the traced steps' work belongs in the trace.
    jax.profiler.stop_trace()
    self.active = False
    traces = sorted(glob.glob(os.path.join(self.workdir, "plugins", "profile", "*")))
    where = traces[-1] if traces else os.path.join(self.workdir, "plugins", "profile")
    print(f"Profile of steps {self.range[0]}-{self.range[1] - 1} in {where} (tensorboard "
          f"--logdir={self.workdir}, profile tab; or perfetto_trace.json.gz in ui.perfetto.dev)",
          flush=True)
