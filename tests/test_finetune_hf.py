"""Fine-tuning from a Hugging Face folder through `python train.py`, then the run back out:
export_hf (a folder transformers loads with the same outputs) and embed."""

import importlib.util
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import hf_folders
from conftest import EN_DE, excerpt, skip_without

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = sorted({w.strip(".,%").lower() for pair in EN_DE for s in pair for w in s.split()}
               | {"number", "nummer"} | {str(i) for i in range(40)})
ARGS = ["--config.per_device_batch_size=2", "--config.num_train_steps=40",
        "--config.log_every_steps=10", "--config.eval_every_steps=20",
        "--config.checkpoint_every_steps=20", "--config.warmup_steps=5",
        "--config.num_eval_steps=2", "--config.learning_rate=1e-3",
        "--config.max_target_length=16", "--config.data.min_class_examples=5",
        "--config.model.pooling=cls"]


def _run(args, stdin=None, timeout=600):
  return subprocess.run([sys.executable, *args], input=stdin, capture_output=True,
                        timeout=timeout, env=dict(os.environ), cwd=REPO)


def _last_record(workdir):
  """metrics.jsonl's last line: the test figures (and the time split)."""
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f][-1]


def _data(tmp_path):
  path = tmp_path / "labelled.tsv"
  with open(path, "w", encoding="utf-8") as f:
    for i in range(40):
      for en, de in EN_DE:
        f.write(f"{en} number {i}\tenglish\n{de} Nummer {i}\tgerman\n")
  return ["--config.data.source=files", f"--config.data.train_files=('{path}',)"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("finetune")
  folder = hf_folders.bert_folder(tmp / "bert", WORDS)
  workdir = str(tmp / "run")
  proc = _run(["train.py", f"--config={REPO}/configs/classify.py", f"--workdir={workdir}",
               f"--config.init_from.hf={folder}", *ARGS, *_data(tmp)])
  out = proc.stdout.decode()
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  return folder, workdir, out


def test_finetuning_starts_from_the_folder_and_learns(finetuned):
  folder, workdir, out = finetuned
  assert f"tokenizer: hf:{folder}" in out
  # Every BERT tensor (pooler included) is taken; only the head starts fresh.
  line = next(l for l in out.splitlines() if l.startswith("Initialised"))
  assert line.startswith("Initialised 39 of 41 ") and line.endswith("fresh: head/bias, head/kernel"), line
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    saved = json.load(f)["model"]
  assert (saved["emb_dim"], saved["norm_position"], saved["class_vector"]) == (32, "post", False)
  test = _last_record(workdir)
  assert test["test/accuracy"] > test["test/majority_accuracy"] + 0.2, test


def test_export_hf_gives_a_folder_transformers_loads_with_the_same_logits(finetuned, tmp_path):
  folder, workdir, _ = finetuned
  out = tmp_path / "exported"
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}", f"--output={out}"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  config = json.loads((out / "config.json").read_text())
  assert config["architectures"] == ["BertForSequenceClassification"]
  assert sorted(config["id2label"].values()) == ["english", "german"]
  assert {"tokenizer.json", "model.safetensors"} <= set(os.listdir(out))
  from transformer_jax import pretrained
  from transformer_jax.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
  run = inference.load_run(workdir, tool=None)
  tok = hf_tokenizer.load(f"hf:{out}")
  ids = np.zeros((2, 10), np.int32)
  for i, text in enumerate(["Permission denied number 3", "Zugriff verweigert"]):
    row = tok.encode(text)
    ids[i, :len(row)] = row
  model = run.programs.kind.model(run.programs.model_config.replace(deterministic=True))
  ours = np.asarray(model.apply({"params": run.params}, ids))
  model2, params2, _ = pretrained.load_hf(str(out))  # and back: the same logits.
  np.testing.assert_allclose(np.asarray(model2.apply({"params": params2}, ids)), ours, atol=1e-6)
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
    skip_without("torch and transformers are not installed (pip install -e '.[hf-reference]')")
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  ref, info = transformers.BertForSequenceClassification.from_pretrained(
      str(out), output_loading_info=True)
  assert not any(info.values()), info  # nothing missing, unexpected or mismatched.
  with torch.no_grad():
    theirs = ref.eval()(input_ids=torch.tensor(ids, dtype=torch.long),
                        attention_mask=torch.tensor(ids > 0, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_embed_tool_reads_a_folder_and_a_finetuned_workdir(finetuned):
  folder, workdir, _ = finetuned
  for source in (folder, workdir):
    proc = _run(["-m", "transformer_jax.embed", f"--hf={source}"],
                stdin=b"Permission denied\nDatei nicht gefunden\n")
    assert proc.returncode == 0, excerpt(proc.stderr.decode())
    vectors = np.load(io.BytesIO(proc.stdout))
    assert vectors.shape == (2, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
  proc = _run(["-m", "transformer_jax.embed", f"--hf={REPO}"], stdin=b"x\n")
  assert proc.returncode == 2 and b"config.json" in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.parametrize("damage, message", [
    ({"drop_tensor": "encoder.layer.0.attention.self.key.weight"},
     "tensor 'encoder.layer.0.attention.self.key.weight' is missing"),
    ({"type_vocab_size": 3}, "tensor 'embeddings.token_type_embeddings.weight' has shape (2, 32)"),
    ({"model_type": "t5"}, "model_type='t5' is not supported"),
    ({"vocab_size": 20}, "the tokenizer has"),
])
def test_a_broken_folder_stops_train_py_before_anything_is_trained(tmp_path, damage, message):
  folder = hf_folders.bert_folder(tmp_path / "bert", WORDS)
  hf_folders.break_folder(folder, **damage)
  workdir = tmp_path / "run"
  proc = _run(["train.py", f"--config={REPO}/configs/classify.py", f"--workdir={workdir}",
               f"--config.init_from.hf={folder}", *ARGS, *_data(tmp_path)])
  err = proc.stderr.decode()
  assert proc.returncode == 2, excerpt(err)
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and message in lines[0] and "config.init_from.hf" in lines[0], err[-2000:]
  assert "Traceback" not in err
  assert not (workdir / "checkpoints").exists()


# --------------------------------------------------------------------------- GPT-2


def _lm_texts():
  return [f"{en}. {de}.\n{en} ({i}) -> {de} ({i})" for i in range(30) for en, de in EN_DE]


def lm_args(folder, text_file, steps: int, log_every: int, every: int, *extra) -> list[str]:
  """train.py's arguments: configs/lm.py fine-tuned from the GPT-2 `folder` on `text_file`,
  logging every `log_every` steps, evaluating and saving every `every`."""
  return ["train.py", f"--config={REPO}/configs/lm.py", f"--config.init_from.hf={folder}",
          "--config.data.source=files", f"--config.data.train_files=('{text_file}',)",
          "--config.max_target_length=32", "--config.max_predict_length=24",
          "--config.per_device_batch_size=2", f"--config.num_train_steps={steps}",
          f"--config.log_every_steps={log_every}",
          f"--config.eval_every_steps={every}", f"--config.checkpoint_every_steps={every}",
          "--config.warmup_steps=5", "--config.num_eval_steps=2",
          "--config.learning_rate=1e-2", *extra]


@pytest.fixture(scope="module")
def finetuned_lm(tmp_path_factory):
  """A GPT-2-style folder (byte-level BPE: id 0 is an ordinary token) fine-tuned by train.py."""
  tmp = tmp_path_factory.mktemp("finetune_lm")
  texts = _lm_texts()
  folder = hf_folders.gpt2_folder(tmp / "gpt2", texts)
  (tmp / "text.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
  workdir = str(tmp / "run")
  proc = _run(lm_args(folder, tmp / "text.txt", 100, 20, 50, f"--workdir={workdir}"))
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  return folder, workdir, proc.stdout.decode()


def test_gpt2_finetuning_moves_ids_past_padding_and_learns(finetuned_lm):
  folder, workdir, out = finetuned_lm
  # 320 byte-level ids + <|endoftext|>, moved up by 2 (padding 0, EOS 1 first).
  assert f"tokenizer: hf:{folder} (323 ids)" in out
  line = next(l for l in out.splitlines() if l.startswith("Initialised"))
  assert line.startswith("Initialised 36 of 36 "), line
  test = _last_record(workdir)
  assert test["test/perplexity"] < 0.5 * test["test/unigram_perplexity"], test
  proc = _run(["-m", "transformer_jax.generate", f"--workdir={workdir}", "--prompt=File not"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  assert proc.stdout.decode().startswith("File not")


def test_gpt2_run_exports_with_its_own_ids_and_transformers_agrees(finetuned_lm, tmp_path):
  folder, workdir, _ = finetuned_lm
  out = tmp_path / "exported"
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}", f"--output={out}"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  config = json.loads((out / "config.json").read_text())
  assert config["architectures"] == ["GPT2LMHeadModel"] and config["vocab_size"] == 321
  from transformer_jax import pretrained
  from transformer_jax.models.decoder_lm import DecoderLM  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
  run = inference.load_run(workdir, tool=None)
  model = DecoderLM(run.programs.model_config.replace(deterministic=True))
  theirs_ids = np.array([[5, 17, 40, 2, 0, 99, 250, 310]], np.int32)  # the folder's own ids.
  ours = np.asarray(model.apply({"params": run.params}, theirs_ids + 2, method=DecoderLM.logits))
  ours = np.array(ours[..., 2:323])  # back to the folder's ids ...
  ours[..., 320] = np.asarray(model.apply({"params": run.params}, theirs_ids + 2,
                                          method=DecoderLM.logits))[..., 1]  # ... EOS included.
  model2, params2, _ = pretrained.load_hf(str(out))
  back = np.asarray(model2.apply({"params": params2}, theirs_ids, method=DecoderLM.logits))
  np.testing.assert_allclose(back[..., :321], ours, atol=1e-5)
  if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
    skip_without("torch and transformers are not installed (pip install -e '.[hf-reference]')")
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  ref, info = transformers.GPT2LMHeadModel.from_pretrained(str(out), output_loading_info=True)
  assert not any(info.values()), info
  with torch.no_grad():
    logits = ref.eval()(torch.tensor(theirs_ids, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(logits, ours, atol=1e-4)
