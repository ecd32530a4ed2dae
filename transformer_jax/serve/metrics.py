"""The server's Prometheus metrics (prometheus_client), served at GET /metrics in the text
format: requests by endpoint and status, request latency, queue time, batch sizes, batch
time, tokens and tokens/s, queued rows, the compiled programs and the warm-up time, and
the process's memory and CPU (the library's process collector)."""

from __future__ import annotations

import time

import prometheus_client as prom

PREFIX = "transformer_jax"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
  """One server's metrics, in a registry of their own."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    prom.ProcessCollector(registry=self.registry)
    r = self.registry
    self.requests = prom.Counter(f"{PREFIX}_requests", "HTTP requests answered.",
                                 ["endpoint", "status"], registry=r)
    self.request_seconds = prom.Histogram(
        f"{PREFIX}_request_seconds", "Time from a request's arrival to its answer.",
        ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
    self.queue_seconds = prom.Histogram(
        f"{PREFIX}_queue_seconds", "Time a request waited before its first batch ran.",
        buckets=LATENCY_BUCKETS, registry=r)
    self.batch_rows = prom.Histogram(f"{PREFIX}_batch_rows", "Rows decoded together.",
                                     buckets=ROW_BUCKETS, registry=r)
    self.batch_seconds = prom.Histogram(f"{PREFIX}_batch_seconds", "Time of one batch.",
                                        ["profile"], buckets=LATENCY_BUCKETS, registry=r)
    self.tokens = prom.Counter(f"{PREFIX}_tokens", "Tokens produced by decoders (read by "
                               "encoders; frames for speech).", registry=r)
    self.tokens_per_second = prom.Gauge(f"{PREFIX}_tokens_per_second",
                                        "Tokens per second over the last 10 s of batches.",
                                        registry=r)
    self.queued_rows = prom.Gauge(f"{PREFIX}_queued_rows", "Rows waiting for a batch.",
                                  registry=r)
    self.failed_batches = prom.Counter(f"{PREFIX}_failed_requests_in_model",
                                       "Requests that failed inside the model.", registry=r)
    self.compiled_programs = prom.Gauge(f"{PREFIX}_compiled_programs",
                                        "Programs compiled at start-up.", registry=r)
    self.warmup_seconds = prom.Gauge(f"{PREFIX}_warmup_seconds",
                                     "Seconds the start-up compilation took.", registry=r)
    self._recent: list[tuple[float, int]] = []

  def observe_batch(self, profile, rows: int, seconds: float, tokens: int) -> None:
    self.batch_rows.observe(rows)
    self.batch_seconds.labels(str(profile)).observe(seconds)
    self.tokens.inc(tokens)
    now = time.monotonic()
    self._recent = [(t, n) for t, n in self._recent if now - t < 10.0] + [(now, tokens)]
    self.tokens_per_second.set(sum(n for _, n in self._recent) / 10.0)

  def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
    self.requests.labels(endpoint, str(status)).inc()
    self.request_seconds.labels(endpoint).observe(seconds)

  def text(self) -> bytes:
    return prom.generate_latest(self.registry)
