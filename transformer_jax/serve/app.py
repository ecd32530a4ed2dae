"""The HTTP side: a Starlette app whose routes check a request, hand its rows to the batcher
and shape the answer.

  GET  /health                 status, the model, the limits (503 while shutting down)
  GET  /metrics                Prometheus text format
  GET  /v1/models              the one model (OpenAI's list shape)
  POST /v1/translate           {"text": [...], "beam_size"?} -> {"translations": [...]}
  POST /v1/classify            {"text": [...]} -> {"results": [{"label", "probabilities"}]}
  POST /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/audio/transcriptions
                               OpenAI's shapes (serve/openai_api.py)

Every error is JSON in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with
a one-line message: 400 for a bad body or field, 404 for a job this model does not do, 413
for a body too big, 429 (queue full) or 503 (shutting down) with Retry-After, 500 when the
model fails on the request (the other requests of its batch are answered).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transformer_jax.serve import openai_api
from transformer_jax.serve.requests import Fields, HTTPError
from transformer_jax.serve.service import Service, endpoint, error_response, json_body, submit


# --------------------------------------------------------------------------- routes


@endpoint("health")
async def health(request: Request, service: Service) -> Response:
  del request
  run = service.engine.run
  return JSONResponse({"status": "closing" if service.closing else "ok",
                       "model": service.model_id, "kind": run.config.model.kind,
                       "step": run.step, "jobs": list(service.engine.jobs),
                       "queued_rows": service.batcher.queued_rows, "limits": service.limits()},
                      status_code=503 if service.closing else 200)


@endpoint("metrics")
async def metrics(request: Request, service: Service) -> Response:
  del request
  return Response(service.metrics.text(), media_type="text/plain; version=0.0.4")


@endpoint("models")
async def models(request: Request, service: Service) -> Response:
  del request
  return JSONResponse({"object": "list", "data": [{
      "id": service.model_id, "object": "model", "created": service.created,
      "owned_by": "transformer_jax"}]})


@endpoint("translate", "translate")
async def translate(request: Request, service: Service) -> Response:
  fields = Fields(await json_body(request), ("text", "beam_size", "model"))
  texts, _ = fields.texts("text", limit=service.max_items)
  engine = service.engine
  beam = fields.choice("beam_size", engine.default_beam, engine.profiles)
  todo = [i for i, t in enumerate(texts) if t.strip()]  # empty lines give empty lines.
  rows = [engine.prepare(texts[i], i) for i in todo]
  out = [""] * len(texts)
  for i, result in zip(todo, await submit(service, beam, rows)):
    out[i] = result.value
  return JSONResponse({"translations": out, "model": service.model_id})


@endpoint("classify", "classify")
async def classify(request: Request, service: Service) -> Response:
  fields = Fields(await json_body(request), ("text", "model"))
  texts, _ = fields.texts("text", limit=service.max_items)
  engine = service.engine
  rows = [engine.prepare(t, f"text[{i}]") for i, t in enumerate(texts)]
  results = []
  for result in await submit(service, "classify", rows):
    probs = [float(p) for p in result.value[:len(engine.labels)]]
    best = max(range(len(probs)), key=probs.__getitem__)
    results.append({"label": engine.labels[best],
                    "probabilities": dict(zip(engine.labels, probs))})
  return JSONResponse({"results": results, "model": service.model_id})


def create_app(service: Service) -> Starlette:
  routes = [
      Route("/health", health, methods=["GET"]),
      Route("/metrics", metrics, methods=["GET"]),
      Route("/v1/models", models, methods=["GET"]),
      Route("/v1/translate", translate, methods=["POST"]),
      Route("/v1/classify", classify, methods=["POST"]),
      Route("/v1/completions", openai_api.completions, methods=["POST"]),
      Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
      Route("/v1/embeddings", openai_api.embeddings, methods=["POST"]),
      Route("/v1/audio/transcriptions", openai_api.transcriptions, methods=["POST"]),
  ]

  async def not_found(request: Request, exc) -> Response:
    del exc
    return error_response(HTTPError(404, f"no route {request.method} {request.url.path}",
                                    kind="not_found_error"))

  async def not_allowed(request: Request, exc) -> Response:
    del exc
    return error_response(HTTPError(405, f"{request.method} is not allowed on "
                                    f"{request.url.path}"))
  app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
  app.state.service = service
  return app
