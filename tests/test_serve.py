"""The model server as a client meets it: a real `python -m transformer_jax.serve` process
on 127.0.0.1 serving the session's tiny translation run, over plain HTTP.

Translations equal the translate tool's, concurrent requests share batches, every bad
request gets its 4xx and one line while the server goes on serving, a full queue answers
429 with Retry-After, a request that fails in the model fails alone, /metrics parses as
Prometheus text, and SIGTERM answers what is in flight before the process exits 0."""

import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import Server, parallel

from conftest import EN_DE

FAULT = "Print the document"


@pytest.fixture(scope="module")
def server(trained_run):
  s = Server(trained_run, "--max_batch=4", "--max_wait_ms=50", "--length_buckets=32",
             "--beam_sizes=1,2", "--max_queue=8", "--max_items=8",
             env={"TRANSFORMER_JAX_SERVE_FAULT": FAULT})
  yield s
  s.stop()


def _metrics(server) -> dict:
  status, _, text = server.request("GET", "/metrics")
  assert status == 200
  out = {}
  for family in text_string_to_metric_families(text):
    for sample in family.samples:
      out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
  return out


def test_translations_equal_the_tool_and_empty_lines_stay_empty(server, trained_run):
  from transformer_jax.tools import loaded_run  # pylint: disable=import-outside-toplevel
  texts = [en for en, _ in EN_DE[:6]] + [""]
  status, _, body = server.post("/v1/translate", {"text": texts})
  assert status == 200, body
  run = loaded_run.load_run(trained_run, tool="translate")
  assert body["translations"] == loaded_run.translate_lines(run, texts)
  assert body["translations"][-1] == ""
  status, _, greedy = server.post("/v1/translate", {"text": texts[:2], "beam_size": 1})
  assert status == 200 and len(greedy["translations"]) == 2
  status, _, health = server.request("GET", "/health")
  assert status == 200 and health["jobs"] == ["translate"]
  assert health["limits"]["beam_sizes"] == [1, 2]
  assert health["limits"]["compiled_programs"] == 4  # 2 beam sizes x (1, 4 rows) x 32 tokens.


def test_concurrent_requests_are_decoded_together(server):
  before = _metrics(server)
  texts = [en for en, _ in EN_DE[:8]]
  answers = parallel(lambda t: server.post("/v1/translate", {"text": [t]}), texts)
  assert all(status == 200 for status, _, _ in answers)
  after = _metrics(server)
  key = ("transformer_jax_batch_rows_count", ())
  rows = ("transformer_jax_batch_rows_sum", ())
  batches = after[key] - before.get(key, 0)
  assert after[rows] - before.get(rows, 0) == 8
  assert batches < 8, f"8 concurrent requests ran in {batches} batches"


@pytest.mark.parametrize("method,path,body,status,message", [
    ("POST", "/v1/translate", '{"text": ["File not found"', 400, "not valid JSON"),
    ("POST", "/v1/translate", '["File not found"]', 400, "must be a JSON object"),
    ("POST", "/v1/translate", {"txt": ["File not found"]}, 400, "unknown field 'txt'"),
    ("POST", "/v1/translate", {"text": [3]}, 400, "field 'text' must be a string or a list"),
    ("POST", "/v1/translate", {"text": ["a"] * 9}, 400, "at most 8 in one request"),
    ("POST", "/v1/translate", {"text": ["x " * 40]}, 400, "this server takes at most 32"),
    ("POST", "/v1/translate", {"text": ["File"], "beam_size": 3}, 400, "'beam_size'=3"),
    ("POST", "/v1/completions", {"prompt": "File"}, 404, "does not generate"),
    ("POST", "/v1/audio/transcriptions", b"RIFF", 404, "does not transcribe"),
    ("GET", "/v1/translate", None, 405, "GET is not allowed"),
    ("GET", "/v2/nothing", None, 404, "no route GET /v2/nothing"),
])
def test_bad_requests_get_a_4xx_and_one_line(server, method, path, body, status, message):
  got, _, answer = server.request(method, path, body)
  assert got == status, answer
  text = answer["error"]["message"]
  assert message in text and "\n" not in text, text
  assert server.post("/v1/translate", {"text": ["File not found"]})[0] == 200


def test_a_request_that_fails_in_the_model_fails_alone(server):
  texts = [en for en, _ in EN_DE[:3]] + [FAULT]
  answers = parallel(lambda t: server.post("/v1/translate", {"text": [t]}), texts)
  statuses = [a[0] for a in answers]
  assert statuses == [200, 200, 200, 500], answers
  assert "failed on this request" in answers[-1][2]["error"]["message"]
  assert server.logged("failed in the model"), server.log[-20:]


def test_a_full_queue_answers_429_with_retry_after(server):
  answers = parallel(lambda _: server.post("/v1/translate", {"text": ["Open a new window"] * 4}),
                     list(range(12)))
  statuses = sorted(a[0] for a in answers)
  assert statuses.count(200) >= 2 and 429 in statuses, statuses
  refused = next(a for a in answers if a[0] == 429)
  assert int(refused[1]["retry-after"]) >= 1
  assert "--max_queue=8" in refused[2]["error"]["message"]


def test_metrics_count_requests_by_status(server):
  def count(metrics, status):
    return metrics.get(("transformer_jax_requests_total",
                        (("endpoint", "translate"), ("status", status))), 0)
  before = _metrics(server)
  assert server.post("/v1/translate", {"text": ["Open a new window"]})[0] == 200
  assert server.post("/v1/translate", {"txt": []})[0] == 400
  assert server.post("/v1/translate", "{")[0] == 400
  after = _metrics(server)
  assert (count(after, "200") - count(before, "200"), count(after, "400") - count(before, "400")) \
      == (1, 2)
  assert after[("transformer_jax_compiled_programs", ())] == 4
  assert after[("transformer_jax_queue_seconds_count", ())] > before.get(
      ("transformer_jax_queue_seconds_count", ()), 0)
  assert after[("transformer_jax_request_seconds_count", (("endpoint", "translate"),))] >= 3
  assert after[("process_resident_memory_bytes", ())] > 0


def test_sigterm_answers_requests_in_flight_then_exits_cleanly(server):
  """Last: it stops the module's server."""
  def ask(text):
    return server.post("/v1/translate", {"text": [text]})
  results = []
  import threading  # pylint: disable=import-outside-toplevel
  threads = [threading.Thread(target=lambda t=t: results.append(ask(t)))
             for t, _ in EN_DE[:4]]
  for t in threads:
    t.start()
  time.sleep(0.02)
  server.proc.send_signal(signal.SIGTERM)
  for t in threads:
    t.join()
  assert server.proc.wait(60) == 0
  assert [r[0] for r in results] == [200] * 4, results
  assert server.logged("every request in flight was answered"), server.log[-20:]
