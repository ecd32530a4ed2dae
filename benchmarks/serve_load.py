"""The model server under load: requests/s and latency at 1, 4, 16 and 64 concurrent
clients, against the translate tool, and the server's memory over many requests.

  python benchmarks/serve_load.py --workdir=runs/base [--levels=1,4,16,64]
      [--requests=400] [--seconds=60] [--memory_requests=10000] [--max_batch=16]

Starts `python -m transformer_jax.serve` on 127.0.0.1 (any free port) for the run, takes
the run's test split sentences, and at each level sends one sentence per request from that
many client threads (each its own keep-alive connection), `--requests` in all or for
`--seconds`, whichever ends first. Level 1 is the same requests sent one at a time through
the same server. Prints requests/s, p50 and p99 latency per level, the gain over one
client, and the translate tool's sentences/s on the same sentences (its own batches of the
run's batch size; load and compile not counted). It checks that the server's translations
of the first 100 sentences equal the tool's. With --memory_requests, it then sends that many
requests at 16 clients and prints the server's resident memory every tenth of the way.
The load never leaves this machine.
"""

import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A translation run's workdir.", required=True)
_LEVELS = flags.DEFINE_list("levels", ["1", "4", "16", "64"], "Concurrent clients.")
_REQUESTS = flags.DEFINE_integer("requests", 400, "Requests per level at most.")
_SECONDS = flags.DEFINE_float("seconds", 60.0, "Seconds per level at most.")
_MEMORY = flags.DEFINE_integer("memory_requests", 0, "Requests of the memory check (0: none).")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 16, "The server's --max_batch.")
_MAX_WAIT = flags.DEFINE_float("max_wait_ms", 10.0, "The server's --max_wait_ms.")
_CHECK = flags.DEFINE_integer("check", 100, "Sentences whose translations must equal the tool's.")


def _start(workdir: str) -> tuple[subprocess.Popen, int]:
  proc = subprocess.Popen(
      [sys.executable, "-m", "transformer_jax.serve", f"--workdir={workdir}", "--port=0",
       f"--max_batch={_MAX_BATCH.value}", f"--max_wait_ms={_MAX_WAIT.value}",
       "--max_queue=4096"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  line = proc.stdout.readline()
  match = re.search(r"http://[^:]+:(\d+)", line)
  if not match:
    proc.kill()
    raise SystemExit(f"the server did not start: {line}{proc.stderr.read()[-3000:]}")
  lines = []

  def drain():  # the server's log, kept (a full pipe would stall it).
    for l in proc.stderr:
      lines.append(l)
  threading.Thread(target=drain, daemon=True).start()
  time.sleep(0.5)
  print("".join(l for l in lines if l.startswith("warm-up")).strip(), flush=True)
  return proc, int(match.group(1))


def _post(conn: http.client.HTTPConnection, path: str, body: dict) -> dict:
  conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
  response = conn.getresponse()
  data = response.read()
  if response.status != 200:
    raise RuntimeError(f"{response.status}: {data[:300]!r}")
  return json.loads(data)


def _level(port: int, sentences: list[str], clients: int, requests: int,
           seconds: float) -> tuple[int, float, list[float]]:
  """(requests answered, seconds, latencies) with `clients` threads in a closed loop."""
  latencies, lock = [], threading.Lock()
  counter = iter(range(requests))
  deadline = time.perf_counter() + seconds

  def client():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for n in counter:
      if time.perf_counter() > deadline:
        break
      t0 = time.perf_counter()
      _post(conn, "/v1/translate", {"text": [sentences[n % len(sentences)]]})
      with lock:
        latencies.append(time.perf_counter() - t0)
    conn.close()
  threads = [threading.Thread(target=client) for _ in range(clients)]
  t0 = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return len(latencies), time.perf_counter() - t0, latencies


def _metric(port: int, name: str) -> float:
  """One unlabelled sample of the server's /metrics."""
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
  conn.request("GET", "/metrics")
  text = conn.getresponse().read().decode()
  conn.close()
  return float(re.search(rf"^{name} (\S+)", text, re.M).group(1))


def _rss(port: int) -> float:
  return _metric(port, "process_resident_memory_bytes") / 2**20


def _batches(port: int) -> tuple[float, float]:
  """(batches run, rows decoded in them) so far."""
  return (_metric(port, "transformer_jax_batch_rows_count"),
          _metric(port, "transformer_jax_batch_rows_sum"))


def _tool(workdir: str, sentences: list[str]) -> tuple[list[str], float]:
  path = os.path.join("/tmp", f"serve_load_{os.getpid()}.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(sentences) + "\n")
  proc = subprocess.run([sys.executable, "-m", "transformer_jax.translate",
                         f"--workdir={workdir}", f"--input={path}"],
                        capture_output=True, text=True, check=True)
  os.remove(path)
  seconds = float(re.search(r" in ([\d.]+)s", proc.stderr).group(1))
  return proc.stdout.rstrip("\n").split("\n"), seconds


def main(argv):
  del argv
  from transformer_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from transformer_jax.kinds.translation import corpus  # pylint: disable=import-outside-toplevel
  config = config_lib.from_json(os.path.join(_WORKDIR.value, "config.json"))
  from transformer_jax.data.hf_tokenizer import open_tokenizer  # pylint: disable=import-outside-toplevel
  from transformer_jax.kinds.task import tokenizer_path  # pylint: disable=import-outside-toplevel
  tokenizer = open_tokenizer(tokenizer_path(config, _WORKDIR.value))
  test = [s for s, _ in corpus.load_corpus(config.data).test]
  # The server refuses a source past config.max_target_length tokens (the tool cuts it).
  sentences = [s for s in test if len(tokenizer.encode(s)) <= config.max_target_length]
  print(f"{len(test) - len(sentences)} of {len(test)} test sentences are longer than "
        f"{config.max_target_length} tokens: left out", flush=True)
  print(f"{len(sentences)} test sentences; server --max_batch={_MAX_BATCH.value} "
        f"--max_wait_ms={_MAX_WAIT.value}", flush=True)
  proc, port = _start(_WORKDIR.value)
  try:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    check = sentences[:_CHECK.value]
    served = [_post(conn, "/v1/translate", {"text": [s]})["translations"][0] for s in check]
    tool, _ = _tool(_WORKDIR.value, check)
    same = sum(a == b for a, b in zip(served, tool))
    print(f"the server's translations equal the tool's for {same} of {len(check)} sentences")
    rates = {}
    for clients in [int(c) for c in _LEVELS.value]:
      batches_before, rows_before = _batches(port)
      n, seconds, lat = _level(port, sentences, clients, _REQUESTS.value, _SECONDS.value)
      batches, rows = (a - b for a, b in zip(_batches(port), (batches_before, rows_before)))
      lat.sort()
      rates[clients] = n / seconds
      print(f"{clients:3d} clients: {n:5d} requests in {seconds:6.1f}s = {n / seconds:6.2f} "
            f"req/s, p50 {1000 * statistics.median(lat):7.1f} ms, "
            f"p99 {1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]:7.1f} ms"
            + (f", {n / seconds / rates[1]:.1f}x one client" if 1 in rates else "")
            + f", {rows / max(batches, 1):.1f} rows per batch", flush=True)
    _, tool_seconds = _tool(_WORKDIR.value, sentences[:_REQUESTS.value])
    print(f"translate tool: {min(_REQUESTS.value, len(sentences))} sentences in "
          f"{tool_seconds:.1f}s = {min(_REQUESTS.value, len(sentences)) / tool_seconds:.2f} "
          f"sentences/s (batches of the run's {config.per_device_batch_size} x devices)")
    if _MEMORY.value:
      step = max(1, _MEMORY.value // 10)
      print(f"memory: {_rss(port):.0f} MiB resident before", flush=True)
      for k in range(10):
        _level(port, sentences, 16, step, 1e9)
        print(f"memory after {(k + 1) * step} requests: {_rss(port):.0f} MiB", flush=True)
  finally:
    proc.terminate()
    proc.wait(60)


if __name__ == "__main__":
  app.run(main)
