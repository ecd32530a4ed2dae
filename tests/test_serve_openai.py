"""The server as OpenAI's own Python client meets it (`base_url` pointed at a real server
process): completions and chat (plain and streamed) from a decoder LM fine-tuned from a
Llama folder with a chat template, embeddings and /v1/classify from a BERT-style
classifier, transcriptions (a WAV upload) from a speech run; each against what the
run's own tools give, and a bad request of each raised by the client as a 400."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from serve_helpers import Server
from test_speech_e2e import _args as speech_args, _word_wav, speech_files  # noqa: F401  pylint: disable=unused-import
from test_tasks_e2e import _train

import hf_folders
from conftest import EN_DE, REPO, excerpt

openai = pytest.importorskip("openai")


def _fit(args, what):
  proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=600, env=dict(os.environ))
  assert proc.returncode == 0, f"{what}: {excerpt(proc.stderr)}"


STEPS = ["--config.num_train_steps=2", "--config.log_every_steps=1",
         "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2",
         "--config.warmup_steps=1", "--config.num_eval_steps=1",
         "--config.per_device_batch_size=2", "--config.train_budget_seconds=0"]


def _client(server):
  return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def lm_server(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("serve_lm")
  texts = [f"{en}. {de}.\n{en} ({i}) -> {de} ({i})" for i in range(30) for en, de in EN_DE]
  folder = hf_folders.llama_folder(tmp / "llama", texts)
  (tmp / "text.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
  workdir = str(tmp / "run")
  _fit(["train.py", f"--config={REPO}/configs/lm.py", f"--workdir={workdir}",
        f"--config.init_from.hf={folder}", "--config.data.source=files",
        f"--config.data.train_files=('{tmp / 'text.txt'}',)", "--config.max_target_length=32",
        "--config.max_predict_length=64", *STEPS], "the LM run")
  server = Server(workdir, "--max_batch=2", "--length_buckets=64")
  yield server, workdir
  server.stop()


def test_completions_greedy_equal_the_run_and_streams_give_the_same_text(lm_server):
  server, workdir = lm_server
  client = _client(server)
  answer = client.completions.create(model="run", prompt=["File not", "Open a"], max_tokens=8,
                                     temperature=0)
  assert [c.index for c in answer.choices] == [0, 1]
  from transformer_jax.tools import loaded_run, pretrained_lm  # pylint: disable=import-outside-toplevel
  run = loaded_run.load_run(workdir, tool="generate", decoding={"method": "greedy"})
  stops = {0, 1, *pretrained_lm.chat_template_of(run.tokenizer.folder, run.tokenizer).stop_ids}
  for choice, (prompt_ids, ids) in zip(answer.choices,
                                       loaded_run.generate_ids(run, ["File not", "Open a"])):
    new = [int(t) for t in ids[len(prompt_ids):len(prompt_ids) + 8]]
    cut = next((k for k, t in enumerate(new) if t in stops), len(new))
    assert choice.text == run.tokenizer.decode(np.asarray(new[:cut], np.int32))
    assert choice.finish_reason == ("stop" if cut < 8 else "length")
  assert answer.usage.completion_tokens <= 16 and answer.usage.prompt_tokens > 0
  stream = client.completions.create(model="run", prompt="File not", max_tokens=8,
                                     temperature=0, stream=True)
  pieces = [c.choices[0].text for c in stream if c.choices]
  assert "".join(pieces) == answer.choices[0].text and len(pieces) >= 2


def test_chat_renders_the_template_and_streams(lm_server):
  server, _ = lm_server
  client = _client(server)
  messages = [{"role": "system", "content": "Translate."},
              {"role": "user", "content": "File not found"}]
  reply = client.chat.completions.create(model="run", messages=messages, max_tokens=6,
                                         temperature=0)
  assert reply.choices[0].message.role == "assistant"
  assert reply.choices[0].finish_reason in ("stop", "length")
  chunks = list(client.chat.completions.create(model="run", messages=messages, max_tokens=6,
                                               temperature=0, stream=True))
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert text == reply.choices[0].message.content
  sampled = client.chat.completions.create(model="run", messages=messages, max_tokens=6,
                                           temperature=1.5, top_p=0.9)
  assert sampled.usage.completion_tokens <= 6
  with pytest.raises(openai.BadRequestError, match="'n'"):
    client.chat.completions.create(model="run", messages=messages, n=2)
  with pytest.raises(openai.BadRequestError, match="out of range"):
    client.completions.create(model="run", prompt="File", max_tokens=500)
  assert client.models.list().data[0].id == "run"


@pytest.fixture(scope="module")
def encoder_server(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("serve_encoder")
  words = sorted({w.strip(".,%").lower() for pair in EN_DE for s in pair for w in s.split()})
  folder = hf_folders.bert_folder(tmp / "bert", words)
  data = tmp / "labelled.tsv"
  with open(data, "w", encoding="utf-8") as f:
    for _ in range(6):
      for en, de in EN_DE:
        f.write(f"{en}\tenglish\n{de}\tgerman\n")
  workdir = str(tmp / "run")
  _fit(["train.py", f"--config={REPO}/configs/classify.py", f"--workdir={workdir}",
        f"--config.init_from.hf={folder}", "--config.data.source=files",
        f"--config.data.train_files=('{data}',)", "--config.max_target_length=16",
        "--config.data.min_class_examples=2", *STEPS], "the classifier run")
  server = Server(workdir, "--max_batch=4", "--length_buckets=16")
  yield server, workdir
  server.stop()


def test_embeddings_equal_the_embed_tool(encoder_server):
  server, workdir = encoder_server
  texts = [en for en, _ in EN_DE[:3]]
  client = _client(server)
  got = client.embeddings.create(model="run", input=texts)  # the client asks for base64.
  floats = client.embeddings.create(model="run", input=texts, encoding_format="float")
  from transformer_jax import embed  # pylint: disable=import-outside-toplevel
  model, params, tok, length = embed.load_encoder(workdir)
  want = embed.embed(model, params, tok, texts, 16)
  for answer in (got, floats):
    vectors = np.asarray([d.embedding for d in answer.data], np.float32)
    np.testing.assert_allclose(vectors, want, atol=1e-5)
  assert got.usage.prompt_tokens > 0
  with pytest.raises(openai.BadRequestError, match="dimensions"):
    client.embeddings.create(model="run", input=texts, dimensions=8)


def test_classify_gives_labels_and_probabilities(encoder_server):
  server, _ = encoder_server
  status, _, body = server.post("/v1/classify", {"text": ["File not found", "Datei löschen"]})
  assert status == 200, body
  for result in body["results"]:
    assert sorted(result["probabilities"]) == ["english", "german"]
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)


@pytest.fixture(scope="module")
def speech_server(tmp_path_factory, speech_files):  # noqa: F811
  workdir = tmp_path_factory.mktemp("serve_speech") / "run"
  proc = _train("speech.py", speech_args(speech_files, workdir, 40))  # it says words.
  assert proc.returncode == 0, excerpt(proc.stderr)
  server = Server(str(workdir), "--max_batch=2")
  yield server, str(workdir), speech_files
  server.stop()


def test_transcriptions_of_a_wav_upload_equal_the_transcribe_tool(speech_server, tmp_path):
  server, workdir, folder = speech_server
  client = _client(server)
  paths = [folder / "u000.wav", folder / "u001.wav"]
  texts = [client.audio.transcriptions.create(model="run", file=open(p, "rb")).text  # pylint: disable=consider-using-with
           for p in paths]
  from transformer_jax.kinds.speech import splits  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import loaded_run  # pylint: disable=import-outside-toplevel
  run = loaded_run.load_run(workdir, tool="transcribe")
  assert texts == loaded_run.transcribe_audio(run, [splits.read_audio(str(p)) for p in paths])
  plain = client.audio.transcriptions.create(model="run", file=open(paths[0], "rb"),  # pylint: disable=consider-using-with
                                             response_format="text")
  assert plain.strip() == texts[0]
  with pytest.raises(openai.BadRequestError, match="not a readable PCM WAV"):
    client.audio.transcriptions.create(model="run", file=("notes.mp3", io.BytesIO(b"ID3" * 50)))
  long = tmp_path / "long.wav"
  _word_wav(long, "alpha", 3.0, 16000)
  with pytest.raises(openai.BadRequestError, match="at most"):
    client.audio.transcriptions.create(model="run", file=open(long, "rb"))  # pylint: disable=consider-using-with
  assert server.request("GET", "/health")[0] == 200
