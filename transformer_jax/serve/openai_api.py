"""OpenAI's endpoints, in OpenAI's request and response shapes, so that its client (and the
tools built on it) talk to a served run as they are:

  POST /v1/completions          decoder LMs: prompt(s) -> choices; stream: server-sent events
  POST /v1/chat/completions     decoder LMs whose tokenizer folder has a chat template
  POST /v1/embeddings           encoders that embed: float or base64 vectors
  POST /v1/audio/transcriptions speech runs: a multipart WAV upload -> {"text"}

Sampling per request: temperature (0: greedy) and top_p, within the limits /health states;
top_k is the run's. A stream is sent once the batch holding the request has decoded (one
event per token, then [DONE]): the server decodes whole batches, so a stream's first
token comes no sooner than the whole answer.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Sequence

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from transformer_jax.serve.requests import Fields, HTTPError, bad, messages as parse_messages
from transformer_jax.serve.service import MAX_UPLOAD, Service, endpoint, json_body, submit

SAMPLING = ("model", "max_tokens", "temperature", "top_p", "n", "stop", "stream",
            "stream_options", "user", "seed")
UNSUPPORTED = ("logprobs", "top_logprobs", "echo", "best_of", "suffix", "logit_bias",
               "presence_penalty", "frequency_penalty", "tools", "tool_choice", "functions",
               "function_call", "response_format", "parallel_tool_calls", "modalities",
               "audio", "prediction", "reasoning_effort", "service_tier", "store", "metadata")


def _sampling(fields: Fields, service: Service, max_tokens_default: int) -> dict:
  engine = service.engine
  fields.choice("n", 1, [1])
  fields.choice("stream", False, [False, True])
  if fields.has("stream_options") and not isinstance(fields.body["stream_options"], dict):
    raise bad("field 'stream_options' must be an object", "stream_options")
  limit = engine.buckets.max_length
  name = "max_completion_tokens" if fields.has("max_completion_tokens") else "max_tokens"
  return {"max_tokens": fields.integer(name, max_tokens_default, 1, limit),
          "temperature": fields.number("temperature", 1.0, 0.0, 2.0),
          "top_p": fields.number("top_p", 1.0, 0.0, 1.0) or 1e-6,
          "stop": fields.stops(), "stream": bool(fields.body.get("stream")),
          "usage_in_stream": bool((fields.body.get("stream_options") or {}).get(
              "include_usage"))}


def _answer(engine, result, stop: Sequence[str]) -> tuple[list[int], str, str]:
  """(the new ids kept, their text, finish_reason) of one generated row."""
  ids, stopped = result.value
  text = engine.text(ids)
  cuts = [text.find(s) for s in stop if s in text]
  if cuts:
    return ids, text[:min(cuts)], "stop"
  return ids, text, "stop" if stopped else "length"


async def _generate(service: Service, prompts: list[str], sampling: dict, what: str):
  engine = service.engine
  rows = [engine.prepare(p, max_tokens=sampling["max_tokens"],
                         temperature=sampling["temperature"], top_p=sampling["top_p"],
                         what=what.format(i=i)) for i, p in enumerate(prompts)]
  results = await submit(service, "sample", rows)
  answers = [_answer(engine, r, sampling["stop"]) for r in results]
  usage = {"prompt_tokens": sum(len(r.ids) for r in rows),
           "completion_tokens": sum(len(a[0]) for a in answers)}
  usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
  return answers, usage


def _pieces(engine, ids: list[int], text: str) -> list[str]:
  """`text` cut into one piece per token (the text of each prefix, differenced)."""
  pieces, before = [], ""
  for k in range(1, len(ids) + 1):
    now = engine.text(ids[:k])
    if not text.startswith(now):  # past a stop string, or a token of partial bytes.
      continue
    pieces.append(now[len(before):])
    before = now
  if before != text:
    pieces.append(text[len(before):])
  return [p for p in pieces if p]


def _events(chunks: list[dict]):
  async def send():
    for chunk in chunks:
      yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"
  return StreamingResponse(send(), media_type="text/event-stream",
                           headers={"Cache-Control": "no-cache"})


@endpoint("completions", "generate")
async def completions(request: Request, service: Service) -> Response:
  fields = Fields(await json_body(request), ("prompt",) + SAMPLING, UNSUPPORTED)
  prompts, _ = fields.texts("prompt", limit=service.max_items)
  if not prompts:
    raise bad("field 'prompt' holds no prompt", "prompt")
  sampling = _sampling(fields, service, 16)
  answers, usage = await _generate(service, prompts, sampling, "prompt[{i}]")
  head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
          "created": int(time.time()), "model": service.model_id}
  if not sampling["stream"]:
    return JSONResponse({**head, "choices": [
        {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
        for i, (_, text, reason) in enumerate(answers)], "usage": usage})
  chunks = []
  for i, (ids, text, reason) in enumerate(answers):
    for piece in _pieces(service.engine, ids, text):
      chunks.append({**head, "choices": [{"index": i, "text": piece, "finish_reason": None,
                                          "logprobs": None}]})
    chunks.append({**head, "choices": [{"index": i, "text": "", "finish_reason": reason,
                                        "logprobs": None}]})
  if sampling["usage_in_stream"]:
    chunks.append({**head, "choices": [], "usage": usage})
  return _events(chunks)


@endpoint("chat", "generate")
async def chat_completions(request: Request, service: Service) -> Response:
  engine = service.engine
  fields = Fields(await json_body(request), ("messages", "max_completion_tokens") + SAMPLING,
                  UNSUPPORTED)
  conversation = parse_messages(fields.body.get("messages"))
  if engine.chat is None:
    raise bad("the served model has no chat template (its tokenizer folder's "
              "tokenizer_config.json chat_template); use /v1/completions")
  from transformer_jax.tools import pretrained_lm  # pylint: disable=import-outside-toplevel
  prompt = pretrained_lm.render_messages(engine.chat.template, engine.chat.special_tokens,
                                         conversation, "the chat template")
  room = engine.buckets.max_length - len(engine.run.tokenizer.encode(prompt, add_eos=False))
  sampling = _sampling(fields, service, max(1, room))
  (answer,), usage = await _generate(service, [prompt], sampling, "the conversation")
  ids, text, reason = answer
  head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
          "model": service.model_id}
  if not sampling["stream"]:
    return JSONResponse({**head, "object": "chat.completion", "choices": [{
        "index": 0, "message": {"role": "assistant", "content": text},
        "finish_reason": reason, "logprobs": None}], "usage": usage})
  head["object"] = "chat.completion.chunk"
  chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                  "finish_reason": None}]}]
  for piece in _pieces(engine, ids, text):
    chunks.append({**head, "choices": [{"index": 0, "delta": {"content": piece},
                                        "finish_reason": None}]})
  chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
  if sampling["usage_in_stream"]:
    chunks.append({**head, "choices": [], "usage": usage})
  return _events(chunks)


@endpoint("embeddings", "embed")
async def embeddings(request: Request, service: Service) -> Response:
  fields = Fields(await json_body(request), ("input", "model", "encoding_format", "user"),
                  ("dimensions",))
  texts, _ = fields.texts("input", limit=service.max_items)
  fmt = fields.choice("encoding_format", "float", ["float", "base64"])
  rows = [service.engine.prepare(t, f"input[{i}]") for i, t in enumerate(texts)]
  results = await submit(service, "embed", rows)
  data = []
  for i, r in enumerate(results):
    vector = np.asarray(r.value, np.float32)
    value = (base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii") if fmt == "base64"
             else vector.tolist())
    data.append({"object": "embedding", "index": i, "embedding": value})
  tokens = sum(len(r) for r in rows)
  return JSONResponse({"object": "list", "data": data, "model": service.model_id,
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


@endpoint("transcriptions", "transcribe")
async def transcriptions(request: Request, service: Service) -> Response:
  if not request.headers.get("content-type", "").startswith("multipart/form-data"):
    raise bad("send the audio as multipart/form-data with a 'file' field (a WAV file)", "file")
  if int(request.headers.get("content-length") or 0) > MAX_UPLOAD + 65536:
    raise HTTPError(413, f"the upload is over this server's {MAX_UPLOAD >> 20} MiB")
  async with request.form(max_files=1, max_fields=16) as form:
    upload = form.get("file")
    fields = Fields({k: v for k, v in form.items() if k != "file"},
                    ("model", "language", "response_format", "temperature"),
                    ("prompt", "timestamp_granularities[]", "timestamp_granularities",
                     "chunking_strategy", "include[]"))
    if upload is None or isinstance(upload, str):
      raise bad("field 'file' is required: the audio, a WAV file", "file")
    data = await upload.read()
    name = upload.filename or "file"
  fmt = fields.choice("response_format", "json", ["json", "text"])
  if fields.has("temperature") and float(fields.body["temperature"] or 0) != 0:
    raise bad("field 'temperature': this server decodes speech as the run's config.decoding "
              "says (send 0 or leave it out)", "temperature")
  from transformer_jax.kinds.speech import audio, splits  # pylint: disable=import-outside-toplevel
  try:
    samples = splits.read_audio(io.BytesIO(data), name=repr(name))
  except audio.AudioError as e:
    raise bad(f"field 'file': {e}", "file") from e
  (result,) = await submit(service, "default", [service.engine.prepare(samples, repr(name))])
  if fmt == "text":
    return PlainTextResponse(result.value + "\n")
  return JSONResponse({"text": result.value})
