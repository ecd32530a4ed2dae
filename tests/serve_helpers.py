"""A real `python -m transformer_jax.serve` process for the tests, and plain HTTP to it."""

import http.client
import json
import re
import subprocess
import sys
import threading
import time

from conftest import REPO, device_env


class Server:
  """The server on a free port of 127.0.0.1, one simulated device; its log kept."""

  def __init__(self, workdir, *flags, env=None):
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "transformer_jax.serve", f"--workdir={workdir}", "--port=0",
         *flags], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**device_env(1), **(env or {})})
    self.log: list[str] = []
    line = self.proc.stdout.readline()
    threading.Thread(target=self._drain, daemon=True).start()
    match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
    if not match:
      self.proc.wait(60)
      raise AssertionError(f"the server did not start: {line}\n{''.join(self.log)[-4000:]}")
    self.port = int(match.group(1))
    self.url = f"http://127.0.0.1:{self.port}"

  def _drain(self):
    for line in self.proc.stderr:
      self.log.append(line)

  def logged(self, text: str, seconds: float = 30.0) -> bool:
    """Whether a log line holds text, waiting for the reader thread up to `seconds`.

    The server flushes a line before it answers, but this process reads the pipe in its
    own thread: a line may land here a moment after the answer did.
    """
    deadline = time.monotonic() + seconds
    while True:
      if any(text in line for line in list(self.log)):
        return True
      if time.monotonic() > deadline:
        return False
      time.sleep(0.05)

  def request(self, method: str, path: str, body=None, headers=None):
    """(status, headers, parsed JSON or text) of one request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
    if isinstance(body, (dict, list)):
      body = json.dumps(body)
    conn.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read().decode()
    conn.close()
    try:
      data = json.loads(data)
    except json.JSONDecodeError:
      pass
    return response.status, dict(response.getheaders()), data

  def post(self, path: str, body):
    return self.request("POST", path, body)

  def stop(self):
    if self.proc.poll() is None:
      self.proc.terminate()
      self.proc.wait(120)


def parallel(fn, items):
  """fn(item) for every item, each in its own thread, started together; results in order."""
  out = [None] * len(items)

  def one(i):
    out[i] = fn(items[i])
  threads = [threading.Thread(target=one, args=(i,)) for i in range(len(items))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return out

