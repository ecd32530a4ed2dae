"""What the routes share: the Service (engine, batcher, metrics, stated limits), the
`endpoint` wrapper that answers every error as JSON in OpenAI's shape and counts the request,
and the body readers."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from transformer_jax.errors import BadInput
from transformer_jax.serve import batcher as batcher_lib, metrics as metrics_lib
from transformer_jax.serve.requests import HTTPError, parse_json

MAX_BODY = 1 << 20  # bytes of a JSON body.
MAX_UPLOAD = 25 << 20  # bytes of an uploaded audio file (OpenAI's limit).


@dataclasses.dataclass
class Service:
  """What the routes share: the engine, its batcher, the metrics and the stated limits."""
  engine: Any
  batcher: batcher_lib.Batcher
  metrics: metrics_lib.Metrics
  model_id: str
  max_items: int = 64  # texts in one request.
  max_tokens: int = 0  # generate: default cap of a completion (0: the buckets').
  closing: bool = False
  created: int = dataclasses.field(default_factory=lambda: int(time.time()))

  def limits(self) -> dict[str, Any]:
    e = self.engine
    out = {"max_batch": self.batcher.max_batch, "max_wait_ms": self.batcher.max_wait * 1000,
           "max_queue": self.batcher.max_queue, "max_items_per_request": self.max_items,
           "max_input_" + e.unit: e.buckets.max_length,
           "batch_buckets": list(e.buckets.batch), "length_buckets": list(e.buckets.length),
           "compiled_programs": len(e.programs),
           "warmup_seconds": round(e.programs.compile_seconds, 1)}
    if "translate" in e.jobs:
      out["beam_sizes"] = list(e.profiles)
    if "generate" in e.jobs:
      out.update(temperature=[0.0, 2.0], top_p=[0.0, 1.0], top_k=e.top_k,
                 max_tokens=e.buckets.max_length, chat=e.chat is not None)
    return out


def endpoint(name: str, job: str | None = None):
  """A route's handler with its errors answered as JSON and its request counted."""
  def wrap(handler):
    @functools.wraps(handler)
    async def route(request: Request) -> Response:
      service: Service = request.app.state.service
      t0 = time.perf_counter()
      try:
        if job is not None and job not in service.engine.jobs:
          raise HTTPError(404, f"{request.url.path}: the served model "
                          f"({service.engine.run.config.model.kind}) does not {job}; it serves "
                          f"{', '.join(service.engine.jobs)}", kind="not_found_error")
        response = await handler(request, service)
      except HTTPError as e:
        response = error_response(e)
      except BadInput as e:
        response = error_response(HTTPError(400, str(e)))
      except batcher_lib.QueueFull as e:
        response = error_response(HTTPError(429, str(e), headers={
            "Retry-After": str(e.retry_after)}, kind="rate_limit_error"))
      except batcher_lib.Closing as e:
        response = error_response(HTTPError(503, str(e), headers={"Retry-After": "5"},
                                            kind="service_unavailable"))
      except Exception as e:  # pylint: disable=broad-except
        response = error_response(HTTPError(
            500, f"the model failed on this request: {type(e).__name__}: {e}".splitlines()[0],
            kind="server_error"))
      service.metrics.observe_request(name, response.status_code, time.perf_counter() - t0)
      return response
    return route
  return wrap


def error_response(e: HTTPError) -> JSONResponse:
  return JSONResponse({"error": {"message": e.message, "type": e.kind, "param": e.param,
                                 "code": None}}, status_code=e.status, headers=e.headers)


async def json_body(request: Request) -> dict[str, Any]:
  return parse_json(await request.body(), MAX_BODY)


async def submit(service: Service, profile, rows: list) -> list:
  return await service.batcher.submit(profile, rows) if rows else []
