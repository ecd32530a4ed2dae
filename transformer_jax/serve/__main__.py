"""Serves a trained run over HTTP, requests decoded together in batches.

  python -m transformer_jax.serve --workdir=runs/base [--host=127.0.0.1] [--port=8000]
      [--max_batch=16] [--max_wait_ms=10] [--max_queue=256] [--beam_sizes=1,4]
      [--length_buckets=16,32,64] [--step=N] [--model_id=NAME]

Loads the run (its latest or --step checkpoint), compiles its programs for every batch and
length bucket (no compile on a request's path afterwards; the log says how many and how
long), then serves the jobs its kind does (serve/app.py lists the routes): a translator
/v1/translate, a decoder LM /v1/completions and /v1/chat/completions, an encoder
/v1/embeddings and /v1/classify, a speech run /v1/audio/transcriptions; every run /health
and /metrics. Ctrl-C or SIGTERM stops taking connections, answers the requests in flight,
and exits 0. Exit code 2 on a bad workdir or flag.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from absl import app, flags

from transformer_jax.tools import cli, flags as tool_flags

_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 16, "Rows decoded together at most.")
_MAX_WAIT = flags.DEFINE_float("max_wait_ms", 10.0, "How long the oldest request waits for "
                               "others to join its batch.")
_MAX_QUEUE = flags.DEFINE_integer("max_queue", 256, "Rows queued at most; past it requests "
                                  "get 429 with Retry-After.")
_MAX_ITEMS = flags.DEFINE_integer("max_items", 64, "Texts (or prompts) in one request.")
_BEAM_SIZES = flags.DEFINE_list("beam_sizes", [], "Translation: the beam sizes requests may "
                                "ask for (1: greedy; default: 1 and the run's).")
_LENGTH_BUCKETS = flags.DEFINE_list("length_buckets", [], "Row lengths compiled (tokens; "
                                    "frames for speech); default: a ladder up to the run's.")
_MODEL_ID = flags.DEFINE_string("model_id", None, "The model's name in answers (default: the "
                                "workdir's folder name).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The train.py workdir of the run.",
                               required=True)
_STEP = flags.DEFINE_integer("step", -1, "Checkpoint step to load (-1: the latest).")


def _ints(values, flag: str) -> tuple[int, ...]:
  try:
    out = tuple(sorted({int(v) for v in values}))
  except ValueError as e:
    raise tool_flags.BadInput(f"--{flag}={','.join(values)}: give whole numbers") from e
  if any(v < 1 for v in out):
    raise tool_flags.BadInput(f"--{flag}={','.join(values)}: every value must be >= 1")
  return out


def _check_flags() -> None:
  for flag, value, low in (("max_batch", _MAX_BATCH.value, 1), ("max_queue", _MAX_QUEUE.value, 1),
                           ("max_items", _MAX_ITEMS.value, 1), ("port", _PORT.value, 0)):
    if value < low:
      raise tool_flags.BadInput(f"--{flag}={value} must be >= {low}")
  if _MAX_QUEUE.value < _MAX_ITEMS.value:
    raise tool_flags.BadInput(f"--max_queue={_MAX_QUEUE.value} must be >= --max_items="
                              f"{_MAX_ITEMS.value} (a request of that many texts must fit)")
  if _MAX_WAIT.value < 0:
    raise tool_flags.BadInput(f"--max_wait_ms={_MAX_WAIT.value} must be >= 0")


def build_service(workdir: str, step: int):
  """The run loaded, its engine's programs compiled, the batcher started."""
  from transformer_jax.serve import batcher, metrics as metrics_lib, service  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import loaded_run  # pylint: disable=import-outside-toplevel

  kind_tool = _kind_tool(workdir)
  if _BEAM_SIZES.value and kind_tool != "translate":
    raise tool_flags.BadInput("--beam_sizes is for translation runs")
  run = loaded_run.load_run(workdir, tool=None, step=step, as_floats=kind_tool == "encode")
  engine = _engine(run, kind_tool, workdir)
  metrics = metrics_lib.Metrics()
  _warm_up(engine, metrics)
  worker = batcher.Batcher(engine, max_batch=engine.buckets.max_batch,
                           max_wait_ms=_MAX_WAIT.value, max_queue=_MAX_QUEUE.value,
                           metrics=metrics)
  worker.start()
  model_id = _MODEL_ID.value or os.path.basename(os.path.normpath(workdir))
  return service.Service(engine, worker, metrics, model_id, max_items=_MAX_ITEMS.value)


def _engine(run, kind_tool: str, workdir: str):
  """The engine that serves `kind_tool`, over the batch and length buckets the flags give
  (batch sizes a multiple of the mesh's data-parallel rows)."""
  from transformer_jax.serve import engines  # pylint: disable=import-outside-toplevel
  from transformer_jax.serve.programs import Buckets, ladder  # pylint: disable=import-outside-toplevel
  from transformer_jax.kinds.task import read_labels  # pylint: disable=import-outside-toplevel
  from transformer_jax.parallel import sharding  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel

  config = run.config
  data, fsdp, _ = sharding.mesh_shape(config, jax.device_count())
  multiple = data * fsdp
  batch = ladder(_MAX_BATCH.value, multiple=multiple)
  lengths = _ints(_LENGTH_BUCKETS.value, "length_buckets") if _LENGTH_BUCKETS.value else None
  if kind_tool == "transcribe":
    buckets = engines.speech_buckets(run, _MAX_BATCH.value, multiple)
    return engines.Transcriber(run, Buckets(buckets.batch, lengths) if lengths else buckets)
  if kind_tool == "generate":
    return engines.Generator(
        run, Buckets(batch, lengths or ladder(config.max_predict_length, first=32, factor=2)))
  buckets = Buckets(batch, lengths or ladder(config.max_target_length, first=16, factor=2))
  if kind_tool == "translate":
    beams = _ints(_BEAM_SIZES.value, "beam_sizes") if _BEAM_SIZES.value else (1,)
    return engines.Translator(run, buckets, beams)
  return engines.Encoder(run, buckets, read_labels(workdir))


def _warm_up(engine, metrics) -> None:
  """Every program compiled before the server listens; how many and how long, said on
  stderr and in the metrics."""
  t0 = time.perf_counter()
  engine.warm_up(log=lambda line: print(line, file=sys.stderr, flush=True))
  seconds = time.perf_counter() - t0
  metrics.compiled_programs.set(len(engine.programs))
  metrics.warmup_seconds.set(seconds)
  buckets = engine.buckets
  print(f"warm-up: {len(engine.programs)} programs ({len(engine.profiles)} profiles x "
        f"{len(buckets.batch)} batch x {len(buckets.length)} length buckets) compiled in "
        f"{seconds:.1f}s", file=sys.stderr, flush=True)


def _kind_tool(workdir: str) -> str:
  """What the run's kind is served as: its decode tool, or "encode"; BadInput if nothing."""
  from transformer_jax import config as config_lib, kinds  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise tool_flags.BadInput(f"--workdir={workdir!r}: no config.json (not a train.py workdir)")
  config = config_lib.from_json(path)
  kind = kinds.get(config.model.kind)
  if kind.decode_tool in ("translate", "generate", "transcribe"):
    return kind.decode_tool
  if kind.uses_vocab and (kind.embeds or kind.uses_classes):
    return "encode"
  raise tool_flags.BadInput(f"--workdir={workdir!r} holds a {kind.name!r} model, which the "
                            "server does not serve (it serves text and speech kinds)")


def serve(service, host: str, port: int) -> None:
  """Serves until SIGINT / SIGTERM; then answers what is in flight and stops the batcher."""
  import uvicorn  # pylint: disable=import-outside-toplevel
  from transformer_jax.serve.app import create_app  # pylint: disable=import-outside-toplevel

  class Server(uvicorn.Server):
    def handle_exit(self, sig, frame):
      service.closing = True  # /health says so; the batcher still answers what it holds.
      super().handle_exit(sig, frame)
      # uvicorn raises a caught signal again once it has shut down (the process would die
      # of it before the batcher is closed): this server exits 0 after its own shutdown.
      getattr(self, "_captured_signals", []).clear()

  sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    raise tool_flags.BadInput(f"--host={host} --port={port}: cannot listen there ({e})") from e
  sock.listen(2048)  # connections wait in the backlog until the server accepts them.
  config = uvicorn.Config(create_app(service), log_level="warning", access_log=False,
                          timeout_keep_alive=30, backlog=2048)
  server = Server(config)
  bound = sock.getsockname()[1]
  print(f"serving {service.model_id} ({', '.join(service.engine.jobs)}) on "
        f"http://{host}:{bound}", flush=True)
  server.run(sockets=[sock])
  service.closing = True
  service.batcher.close()
  print("stopped: every request in flight was answered", file=sys.stderr, flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  with tool_flags.tool_main():
    _check_flags()
    service = build_service(_WORKDIR.value, _STEP.value)
    serve(service, _HOST.value, _PORT.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
