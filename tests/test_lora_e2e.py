"""LoRA through `python train.py` on a small BERT folder: adapter-only checkpoints, an exact
resume, a base that changed refused, and the run back out (--merge, and PEFT's folder
that `peft` loads onto the transformers model with our outputs)."""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

import hf_folders
from conftest import excerpt, skip_without
from test_finetune_hf import ARGS, REPO, WORDS, _data, _last_record, _run, lm_args
from test_resume import _checkpoints, _losses

LORA = ["--config.lora.rank=4", "--config.lora.alpha=8", "--config.learning_rate=1e-2",
        "--config.lora.train_also=('^head/',)", "--config.log_every_steps=1",
        "--config.lr_schedule=constant"]


def _train(workdir, folder, tmp, *extra):
  return _run(["train.py", f"--config={REPO}/configs/classify.py", f"--workdir={workdir}",
               f"--config.init_from.hf={folder}", *ARGS, *_data(tmp), *LORA, *extra])


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("lora")
  folder = hf_folders.bert_folder(tmp / "bert", WORDS)
  workdir = str(tmp / "run")
  proc = _train(workdir, folder, tmp)
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  return tmp, folder, workdir, proc.stdout.decode()


def _ids(folder):
  from transformer_jax.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  tok = hf_tokenizer.load(f"hf:{folder}")
  ids = np.zeros((3, 10), np.int32)
  for i, text in enumerate(["Permission denied number 3", "Zugriff verweigert",
                            "Open a new window number 7"]):
    row = tok.encode(text)
    ids[i, :len(row)] = row
  return ids


def _ours(workdir, ids):
  from transformer_jax.tools import loaded_run as inference  # pylint: disable=import-outside-toplevel
  run = inference.load_run(workdir, tool=None)
  model = run.programs.kind.model(run.programs.model_config.replace(deterministic=True))
  return np.asarray(model.apply({"params": run.programs.merged(run.params)}, ids))


def test_an_adapter_run_learns_and_saves_adapters_only(adapted):
  tmp, folder, workdir, out = adapted
  assert "trainable parameters (LoRA rank 4) + " in out and " frozen;" in out
  assert "frozen base (config.lora): " in out
  test = _last_record(workdir)
  assert test["test/accuracy"] > test["test/majority_accuracy"] + 0.2, test
  step = _checkpoints(workdir)[-1]
  from transformer_jax.checkpoint import params  # pylint: disable=import-outside-toplevel
  base = params.run_metadata(workdir, step)["adapters"]["base"]
  assert base["source"] == str(folder) and len(base["fingerprint"]) == 16
  saved = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
              os.walk(os.path.join(workdir, "checkpoints", str(step))) for f in fs)
  weights = os.path.getsize(os.path.join(folder, "model.safetensors"))
  # Full fine-tuning saves the weights and two Adam moments (3x the folder's weights); this
  # run, rank-4 adapters on 32-wide kernels + the head and their moments: under a quarter.
  assert saved < 0.25 * 3 * weights, (saved, weights)


def test_a_stopped_adapter_run_resumes_with_the_same_losses(adapted, tmp_path):
  tmp, folder, workdir, _ = adapted
  again = str(tmp_path / "run")
  proc = _train(again, folder, tmp, "--config.num_train_steps=20")  # stops at step 20 ...
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  proc = _train(again, folder, tmp)  # ... and goes on to 40, as the straight run did.
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  assert "Resuming from checkpoint at step 20" in proc.stdout.decode()
  assert _losses(again) == _losses(workdir)


def test_a_changed_base_is_refused_on_resume_and_nothing_is_lost(adapted, tmp_path):
  tmp, folder, workdir, _ = adapted
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  other = hf_folders.bert_folder(tmp_path / "bert", WORDS, seed=1)
  before = _checkpoints(copy)
  proc = _train(copy, other, tmp, "--config.num_train_steps=60")
  err = proc.stderr.decode()
  assert proc.returncode == 2, excerpt(err)
  line = next(l for l in err.splitlines() if l.startswith("error:"))
  assert "fingerprint" in line and "config.init_from" in line, line
  assert _checkpoints(copy) == before


def test_merged_export_equals_the_unmerged_forward(adapted, tmp_path):
  tmp, folder, workdir, _ = adapted
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}",
               f"--output={tmp_path / 'plain'}"])
  assert proc.returncode == 2 and b"--merge" in proc.stderr and b"--format=peft" in proc.stderr
  out = tmp_path / "merged"
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}", f"--output={out}",
               "--merge"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  from transformer_jax import pretrained  # pylint: disable=import-outside-toplevel
  ids = _ids(folder)
  model, params, _ = pretrained.load_hf(str(out))
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, ids)),
                             _ours(workdir, ids), atol=1e-5)


def test_peft_loads_the_adapters_onto_the_transformers_model_with_our_outputs(adapted, tmp_path):
  tmp, folder, workdir, _ = adapted
  out = tmp_path / "peft"
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}", f"--output={out}",
               "--format=peft"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  config = json.loads((out / "adapter_config.json").read_text())
  assert config["r"] == 4 and config["lora_alpha"] == 8 and config["task_type"] == "SEQ_CLS"
  assert len(config["target_modules"]) == 2 * 6 and config["modules_to_save"] == ["classifier"]
  for name in ("torch", "transformers", "peft"):
    if importlib.util.find_spec(name) is None:
      skip_without(f"{name} is not installed (pip install -e '.[hf-reference]')")
  import peft  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  labels = json.loads(open(os.path.join(workdir, "labels.json"), encoding="utf-8").read())
  base = transformers.BertForSequenceClassification.from_pretrained(
      str(folder), num_labels=len(labels))
  model = peft.PeftModel.from_pretrained(base, str(out)).eval()
  ids = _ids(folder)
  with torch.no_grad():
    theirs = model(input_ids=torch.tensor(ids, dtype=torch.long),
                   attention_mask=torch.tensor(ids > 0, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(theirs, _ours(workdir, ids), atol=1e-4)


def test_the_embed_tool_reads_an_adapter_run_and_the_compress_tool_says_no(adapted, tmp_path):
  tmp, folder, workdir, _ = adapted
  proc = _run(["-m", "transformer_jax.embed", f"--hf={workdir}"], stdin=b"Permission denied\n")
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  proc = _run(["-m", "transformer_jax.compress", "quantize", f"--workdir={workdir}",
               f"--output={tmp_path / 'q'}"])
  err = proc.stderr.decode()
  assert proc.returncode == 2 and "adapter run" in err and "--merge" in err, excerpt(err)
  assert not (tmp_path / "q").exists()


def test_a_peft_folder_starts_a_run_with_the_same_outputs(adapted, tmp_path):
  """config.init_from.adapter: the exported adapters (and the head) read back onto a fresh
  state built with another seed give the run's outputs."""
  import jax  # pylint: disable=import-outside-toplevel
  from transformer_jax import config as config_lib, pretrained  # pylint: disable=import-outside-toplevel
  from transformer_jax.data import hf_tokenizer  # pylint: disable=import-outside-toplevel
  from transformer_jax.parallel import sharding  # pylint: disable=import-outside-toplevel
  from transformer_jax.train import programs, restore  # pylint: disable=import-outside-toplevel
  tmp, folder, workdir, _ = adapted
  out = tmp_path / "peft"
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}", f"--output={out}",
               "--format=peft"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  config = config_lib.from_json(os.path.join(workdir, "config.json"))
  config.init_from.adapter = str(out)
  config.seed = 7
  labels = json.loads(open(os.path.join(workdir, "labels.json"), encoding="utf-8").read())
  progs = programs.build(config, sharding.make_mesh(config),
                         hf_tokenizer.load(config.data.tokenizer_path).vocab_size, len(labels))
  with progs.context():
    state, _ = restore.adapter_base(config, progs, jax.random.key(7),
                                    pretrained.apply_to_config(config))
  model = progs.kind.model(progs.model_config.replace(deterministic=True))
  ids = _ids(folder)
  ours = np.asarray(model.apply({"params": progs.merged(progs.model_params(state))}, ids))
  np.testing.assert_allclose(ours, _ours(workdir, ids), atol=1e-5)
  config.lora.rank = 8
  with pytest.raises(Exception, match=r"adapter_config.json: r=4, but this run has 8"):
    progs = programs.build(config, sharding.make_mesh(config), progs.model_config.vocab_size,
                           len(labels))
    with progs.context():
      restore.adapter_base(config, progs, jax.random.key(7), pretrained.apply_to_config(config))


def test_a_gpt2_adapter_run_generates_and_exports_merged_and_as_peft(tmp_path):
  """GPT-2's c_attn holds query, key and value: the PEFT export makes one rank-3r pair
  of the three (rank_pattern), which peft applies as our merge does."""
  from test_finetune_hf import _lm_texts  # pylint: disable=import-outside-toplevel
  texts = _lm_texts()
  folder = hf_folders.gpt2_folder(tmp_path / "gpt2", texts)
  (tmp_path / "text.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
  workdir = str(tmp_path / "run")
  proc = _run(lm_args(folder, tmp_path / "text.txt", 30, 10, 30, f"--workdir={workdir}",
                      "--config.lora.rank=4"))
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  assert "trainable parameters (LoRA rank 4)" in proc.stdout.decode()
  proc = _run(["-m", "transformer_jax.generate", f"--workdir={workdir}", "--prompt=File not"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  assert proc.stdout.decode().startswith("File not")
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}",
               f"--output={tmp_path / 'peft'}", "--format=peft"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  adapter = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
  assert adapter["task_type"] == "CAUSAL_LM" and adapter["fan_in_fan_out"] is True
  fused = [m for m in adapter["target_modules"] if m.endswith("c_attn")]
  assert fused and adapter["rank_pattern"] == {m: 12 for m in fused}
  assert adapter["alpha_pattern"] == {m: 48.0 for m in fused}  # 3 x alpha 16: alpha / r kept.
  proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}",
               f"--output={tmp_path / 'merged'}", "--merge"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  config = json.loads((tmp_path / "merged" / "config.json").read_text())
  assert config["architectures"] == ["GPT2LMHeadModel"]
  for name in ("torch", "transformers", "peft"):
    if importlib.util.find_spec(name) is None:
      skip_without(f"{name} is not installed (pip install -e '.[hf-reference]')")
  import peft  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  ids = torch.tensor([[5, 17, 40, 2, 0, 99, 250, 310]], dtype=torch.long)  # the folder's ids.
  merged = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "merged")).eval()
  base = transformers.GPT2LMHeadModel.from_pretrained(folder)
  adapted = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
  with torch.no_grad():
    want, got = merged(ids).logits.numpy(), adapted(ids).logits.numpy()
    plain = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()(ids).logits.numpy()
  assert np.abs(want - plain).max() > 1e-3  # the adapters changed the model ...
  np.testing.assert_allclose(got, want, atol=1e-4)  # ... and peft applies them as we do.


@pytest.mark.long
def test_a_translation_adapter_run_on_another_runs_base_translates(tmp_path):
  """Encoder-decoder: a base run, an adapter run from it (config.init_from.workdir), and
  the translate tool reading the adapter run (its base rebuilt from the base run)."""
  from conftest import write_parallel_tsv  # pylint: disable=import-outside-toplevel
  from test_resume import _command  # pylint: disable=import-outside-toplevel
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=20)
  base, adapted = str(tmp_path / "base"), str(tmp_path / "adapted")
  for workdir, extra in ((base, []), (adapted, [f"--config.init_from.workdir={base}",
                                                "--config.lora.rank=4"])):
    args = _command(workdir, tsv, "--config.num_train_steps=4",
                    "--config.checkpoint_every_steps=4", *extra)
    proc = _run(args[1:])
    assert proc.returncode == 0, excerpt(proc.stderr.decode())
  assert "trainable parameters (LoRA rank 4)" in proc.stdout.decode()
  proc = _run(["-m", "transformer_jax.translate", f"--workdir={adapted}"],
              stdin=b"File not found\nPermission denied\n")
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  assert len(proc.stdout.decode().splitlines()) == 2


@pytest.mark.long
def test_a_llama_adapter_run_exports_as_peft_onto_llama(tmp_path):
  """Grouped-query attention and the gated MLP: one LoRA pair per projection (q, k, v, o,
  gate, up, down), which peft applies onto LlamaForCausalLM as our merge does."""
  from test_finetune_hf import _lm_texts  # pylint: disable=import-outside-toplevel
  texts = _lm_texts()
  folder = hf_folders.llama_folder(tmp_path / "llama", texts)
  (tmp_path / "text.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
  workdir = str(tmp_path / "run")
  proc = _run(lm_args(folder, tmp_path / "text.txt", 20, 10, 20, f"--workdir={workdir}",
                      "--config.lora.rank=4"))
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  # The run chats through its folder's template: one reply per prompt, the prompt not echoed.
  proc = _run(["-m", "transformer_jax.generate", f"--workdir={workdir}", "--chat",
               "--prompt=File not", "--prompt=hello"])
  assert proc.returncode == 0, excerpt(proc.stderr.decode())
  replies = proc.stdout.decode().split("\n")[:-1]
  assert len(replies) == 2 and not any("<|im_start|>" in r for r in replies)
  for out, flag in (("peft", "--format=peft"), ("merged", "--merge")):
    proc = _run(["-m", "transformer_jax.export_hf", f"--workdir={workdir}",
                 f"--output={tmp_path / out}", flag])
    assert proc.returncode == 0, excerpt(proc.stderr.decode())
  adapter = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
  assert adapter["fan_in_fan_out"] is False and not adapter["rank_pattern"]
  assert sorted({m.rpartition(".")[2] for m in adapter["target_modules"]}) == [
      "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
  config = json.loads((tmp_path / "merged" / "config.json").read_text())
  assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
  assert config["max_position_embeddings"] == 256  # the source's context, not our row length.
  for name in ("torch", "transformers", "peft"):
    if importlib.util.find_spec(name) is None:
      skip_without(f"{name} is not installed (pip install -e '.[hf-reference]')")
  import peft  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  ids = torch.tensor([[5, 17, 40, 2, 0, 99, 250, 310]], dtype=torch.long)  # the folder's ids.
  load = transformers.LlamaForCausalLM.from_pretrained
  with torch.no_grad():
    want = load(str(tmp_path / "merged")).eval()(ids).logits.numpy()
    got = peft.PeftModel.from_pretrained(load(folder), str(tmp_path / "peft")).eval()(
        ids).logits.numpy()
    plain = load(folder).eval()(ids).logits.numpy()
  assert np.abs(want - plain).max() > 1e-3  # the adapters changed the model ...
  np.testing.assert_allclose(got, want, atol=1e-4)  # ... and peft applies them as we do.
