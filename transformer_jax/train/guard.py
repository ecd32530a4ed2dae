"""The non-finite guard: steps with a NaN or inf loss or gradient are counted, then stop the run.

A train step whose loss or gradient is not finite leaves the state as it was and
reports `nonfinite_sum` = 1 (steps.py). The guard reads those sums when the
steps' metrics are read (at a log, or before a save) and allows at most
config.max_skipped_nonfinite_steps of them in this process's run; one more stops
the run with errors.NumericalError, naming the last good checkpoint. A check
before a save marks the steps it found finite (`checked_through`), so that no step
goes into a checkpoint unchecked.
"""

from __future__ import annotations

from transformer_jax.errors import NumericalError


class Guard:
  """Counts non-finite steps; too many raise NumericalError."""

  def __init__(self, config, ckpt, start: int):
    """`ckpt`: the run's checkpoint.manager.Checkpointer (the message names its latest
    step); `start`: the step the run starts from (known finite: it was saved)."""
    self.config, self.ckpt = config, ckpt
    self.skipped = 0  # steps skipped for a non-finite loss or gradient (this process's run).
    self.checked_through = start  # steps up to here are known finite (checked before a save).

  def check(self, sums, first: int, last: int, count: bool = True) -> None:
    """Counts non-finite steps among steps first..last (`count`: else only checks, for
    steps that a later log counts); too many stop the run."""
    bad = int(round(float(sums.get("nonfinite_sum", 0))))
    if not bad:
      if not count:
        self.checked_through = last
      return
    first = max(first, self.checked_through + 1)  # steps a pre-save check found finite.
    so_far = self.skipped + bad
    limit = self.config.max_skipped_nonfinite_steps
    if so_far <= limit:
      if count:
        self.skipped = so_far
        print(f"warning: skipped {bad} step(s) with a non-finite loss or gradient between "
              f"steps {first} and {last} ({so_far} of at most {limit})", flush=True)
      return
    raise self._error(first, last)

  def _error(self, first: int, last: int) -> NumericalError:
    config, ckpt = self.config, self.ckpt
    ckpt.wait()
    good = ckpt.latest_step()
    kept = (f"The last good checkpoint is step {good} in {ckpt.directory} (kept; running the "
            "same command resumes from it)" if good is not None else "No checkpoint was saved")
    return NumericalError(
        f"the training loss or gradient became non-finite (NaN or inf) between steps {first} "
        f"and {last}; stopped without saving it. {kept}. Likely causes: "
        f"config.learning_rate={config.learning_rate} too high (try a third of it, or more "
        "warmup_steps), "
        + (f"model.dtype={config.model.dtype!r} overflowing (try float32), "
           if config.model.dtype != "float32" else "")
        + "or bad data. config.max_skipped_nonfinite_steps=N skips up to N such steps instead")
