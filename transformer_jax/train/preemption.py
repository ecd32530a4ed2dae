"""Stop requests: SIGTERM and SIGINT make the loop finish its step, save and exit cleanly.

The first signal only sets a flag (the handler then steps aside, so a second
Ctrl-C interrupts at once). With several processes, the loop's
`parallel.agreement.any_process` makes every process see a flag that any one of
them raised, so all of them save the same step and stop together.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
  """Context manager that catches SIGTERM/SIGINT while training (main thread only)."""

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.signal_name = signal.Signals(signum).name
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
    print(f"{self.signal_name} received: finishing this step, saving a checkpoint, then "
          "stopping", flush=True)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}


