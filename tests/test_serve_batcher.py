"""The batcher's schedule, with an engine of its own that takes a fixed time per batch (the
model's part is tests/test_serve.py's, over HTTP): clients answered by one batch join the
next one instead of running as a cohort of their own."""

import asyncio
import time

from transformer_jax.serve import batcher as batcher_lib
from transformer_jax.serve import metrics as metrics_lib
from transformer_jax.serve.engines import Result

BATCH_SECONDS = 0.4


class _Engine:
  """Each batch takes BATCH_SECONDS; records the rows of each."""

  def __init__(self):
    self.batches = []

  def run_batch(self, profile, rows):
    time.sleep(BATCH_SECONDS)
    self.batches.append(list(rows))
    return [Result(row, 1) for row in rows]


def test_clients_answered_by_a_batch_join_the_next_one():
  """Two clients in a closed loop, the second 0.2 s after the first (later than the
  first's 0.1 s wait): the first batch runs the first client's request alone, and the
  second client's request, queued meanwhile, waits for the first client's next request
  once that batch ends, so the two run together from then on (4 batches, not 6)."""
  engine = _Engine()
  batcher = batcher_lib.Batcher(engine, max_batch=2, max_wait_ms=100, max_queue=8,
                                metrics=metrics_lib.Metrics())
  batcher.start()

  async def client(name: str, delay: float):
    await asyncio.sleep(delay)
    for i in range(3):
      results = await batcher.submit("default", [f"{name}{i}"])
      assert [r.value for r in results] == [f"{name}{i}"]

  async def main():
    await asyncio.gather(client("a", 0.0), client("b", 0.2))
  asyncio.run(main())
  batcher.close(10)
  assert engine.batches == [["a0"], ["b0", "a1"], ["b1", "a2"], ["b2"]], engine.batches
