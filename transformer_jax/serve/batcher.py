"""Dynamic batching: requests that arrive together are decoded together.

A request is rows of one profile (serve/engines.py). The worker thread takes the oldest
request's profile, waits until `max_batch` rows of that profile are queued or `max_wait_ms`
have passed since the oldest came or since the worker's last batch ended, whichever is
later, and runs up to `max_batch` of them (a request of more rows spans batches) in one
program. (Counted from the arrival alone, a busy server splits its clients into cohorts:
those answered by one batch send again a moment after the next batch has started with
the rest, so batches run half full, padded to the full bucket: at 16 clients of the base
translator, 7.9 rows per batch. Waiting `max_wait_ms` after each batch lets the answered
clients join the next one; BUILD_NOTES.) A batch that fails is run again one request at
a time, so that only the request that fails gets the error. More than `max_queue` queued
rows refuse a request at once (QueueFull: the server answers 429 with Retry-After).
`close()` stops new requests and returns when every queued one is answered.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from typing import Any

from transformer_jax.serve import metrics as metrics_lib


class QueueFull(Exception):
  """More queued rows than the server takes; retry after `retry_after` seconds."""

  def __init__(self, queued: int, limit: int, retry_after: int):
    super().__init__(f"the server has {queued} rows queued (--max_queue={limit}); "
                     f"retry after {retry_after} s")
    self.retry_after = retry_after


class Closing(Exception):
  """The server is shutting down: it answers what it holds, and takes nothing new."""


@dataclasses.dataclass(eq=False)
class _Request:
  profile: Any
  rows: list
  future: asyncio.Future
  loop: asyncio.AbstractEventLoop
  enqueued: float
  results: list = dataclasses.field(default_factory=list)
  taken: int = 0  # rows handed to batches so far.
  answered: int = 0
  error: BaseException | None = None
  started: float | None = None

  def __post_init__(self):
    self.results = [None] * len(self.rows)


class Batcher:
  """One worker thread running `engine.run_batch` on batches of queued rows."""

  def __init__(self, engine, *, max_batch: int, max_wait_ms: float, max_queue: int,
               metrics: metrics_lib.Metrics):
    self.engine = engine
    self.max_batch = max_batch
    self.max_wait = max_wait_ms / 1000.0
    self.max_queue = max_queue
    self.metrics = metrics
    self._queue: collections.deque[_Request] = collections.deque()
    self._queued_rows = 0
    self._cond = threading.Condition()
    self._closing = False
    self._seconds_per_row = 0.05  # a running estimate, for Retry-After.
    self._free_since = 0.0  # when the worker's last batch ended.
    self._thread = threading.Thread(target=self._work, name="batcher", daemon=True)

  def start(self) -> None:
    self._thread.start()

  def close(self, timeout: float | None = None) -> None:
    """Refuses new requests, answers the queued ones, then stops the worker."""
    with self._cond:
      self._closing = True
      self._cond.notify_all()
    self._thread.join(timeout)

  @property
  def queued_rows(self) -> int:
    return self._queued_rows

  async def submit(self, profile, rows: list) -> list:
    """The engine's Result for each row, in order (the request's first failure raised)."""
    loop = asyncio.get_running_loop()
    request = _Request(profile, list(rows), loop.create_future(), loop, time.perf_counter())
    with self._cond:
      if self._closing:
        raise Closing("the server is shutting down")
      if self._queued_rows + len(rows) > self.max_queue:
        wait = max(1, round(self._queued_rows * self._seconds_per_row))
        raise QueueFull(self._queued_rows, self.max_queue, wait)
      self._queue.append(request)
      self._queued_rows += len(rows)
      self.metrics.queued_rows.set(self._queued_rows)
      self._cond.notify_all()
    return await request.future

  # ------------------------------------------------------------------ the worker thread
  def _work(self) -> None:
    while True:
      with self._cond:
        while not self._queue and not self._closing:
          self._cond.wait()
        if not self._queue:
          return  # closing, and nothing left.
        profile, parts = self._take()
      self._run(profile, parts)
      self._free_since = time.perf_counter()

  def _rows_waiting(self, profile) -> int:
    return sum(len(r.rows) - r.taken for r in self._queue if r.profile == profile)

  def _take(self) -> tuple[Any, list[tuple[_Request, int, int]]]:
    """Under the lock: waits for a full batch of the oldest request's profile (or its
    deadline), then takes up to max_batch rows of it: (request, first, end) parts."""
    head = self._queue[0]
    deadline = max(head.enqueued, self._free_since) + self.max_wait
    while (self._rows_waiting(head.profile) < self.max_batch and not self._closing
           and time.perf_counter() < deadline):
      self._cond.wait(deadline - time.perf_counter())
    parts, room = [], self.max_batch
    for request in list(self._queue):
      if request.profile != head.profile or room == 0:
        continue
      n = min(room, len(request.rows) - request.taken)
      parts.append((request, request.taken, request.taken + n))
      request.taken += n
      room -= n
      if request.taken == len(request.rows):
        self._queue.remove(request)
    taken = self.max_batch - room
    self._queued_rows -= taken
    self.metrics.queued_rows.set(self._queued_rows)
    return head.profile, parts

  def _run(self, profile, parts: list[tuple[_Request, int, int]]) -> None:
    now = time.perf_counter()
    live = [p for p in parts if p[0].error is None]
    for request, _, _ in live:
      if request.started is None:
        request.started = now
        self.metrics.queue_seconds.observe(now - request.enqueued)
    rows = [row for request, first, end in live for row in request.rows[first:end]]
    try:
      results = self.engine.run_batch(profile, rows)
    except Exception:  # pylint: disable=broad-except
      if len(live) == 1:
        self._fail(live[0][0], profile)
        return
      for part in live:  # one request at a time: only the one that fails fails.
        self._run(profile, [part])
      return
    seconds = time.perf_counter() - now
    self._seconds_per_row = 0.8 * self._seconds_per_row + 0.2 * seconds / len(rows)
    self.metrics.observe_batch(profile, len(rows), seconds, sum(r.tokens for r in results))
    k = 0
    for request, first, end in live:
      request.results[first:end] = results[k:k + end - first]
      k += end - first
      request.answered += end - first
      if request.answered == len(request.rows):
        _resolve(request, request.results)

  def _fail(self, request: _Request, profile) -> None:
    import sys  # pylint: disable=import-outside-toplevel
    import traceback  # pylint: disable=import-outside-toplevel
    error = sys.exc_info()[1]
    print(f"error: a request of profile {profile!s} failed in the model: "
          f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
    traceback.print_exc(limit=-3, file=sys.stderr)
    self.metrics.failed_batches.inc()
    request.error = error
    with self._cond:  # its rows still queued are dropped.
      if request in self._queue:
        self._queue.remove(request)
        self._queued_rows -= len(request.rows) - request.taken
        self.metrics.queued_rows.set(self._queued_rows)
    _resolve(request, error)


def _resolve(request: _Request, value) -> None:
  def done():
    if request.future.done():  # the client went away.
      return
    if isinstance(value, BaseException):
      request.future.set_exception(value)
    else:
      request.future.set_result(value)
  request.loop.call_soon_threadsafe(done)
