"""Translation as a language-model task: the decoder_lm on data.source='translation_pairs'
(kinds/language_model/prompts.py, pairs.py), from a tiny Llama folder through train.py and
the translate tool."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import hf_folders
from conftest import EN_DE, REPO, _run, excerpt, tiny_config, write_parallel_tsv
from transformer_jax import config as config_lib, kinds
from transformer_jax.data import hf_tokenizer
from transformer_jax.data.tokenizer import EOS_ID
from transformer_jax.kinds.language_model import pairs, prompts
from transformer_jax.metrics import objectives

TEMPLATE = "English: {source}\nGerman:"


def _texts():
  return [f"English: {en} ({i})\nGerman: {de} ({i})" for i in range(20) for en, de in EN_DE]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  return hf_folders.llama_folder(tmp_path_factory.mktemp("llama") / "llama", _texts())


def _encoder(folder):
  tok = hf_tokenizer.load(hf_tokenizer.PREFIX + folder)
  return tok, pairs.PromptedPairs(tok, TEMPLATE)


# ------------------------------------------------------------------------- data, no train.py


def test_a_prompted_batch_weighs_the_translations_and_their_eos_alone(llama):
  tok, enc = _encoder(llama)
  source_of = {de: en for en, de in EN_DE}
  stream = pairs.PairTrainStream(EN_DE, enc, global_batch_size=2, rows=[0, 1], max_length=64,
                                 seed=0, num_packing_bins=2)
  batch = next(stream)
  assert set(batch) == {"targets", "targets_segment_ids", "targets_positions",
                        prompts.WEIGHTS}
  seen = 0
  for row in range(2):
    ids, w, seg = (batch[k][row] for k in ("targets", prompts.WEIGHTS, "targets_segment_ids"))
    assert (w[seg == 0] == 0).all()  # padding weighs nothing.
    for s in set(seg.tolist()) - {0}:
      doc_ids, doc_w = ids[seg == s], w[seg == s]
      target = tok.decode(doc_ids[doc_w > 0])  # decode stops at EOS: the EOS is weighed ...
      assert doc_ids[doc_w > 0][-1] == EOS_ID and (doc_w[-1], doc_ids[-1]) == (1, EOS_ID)
      assert target.startswith(" ") and target.strip() in source_of
      # ... and the unweighted rest is exactly the prompt a translation is decoded from.
      prompt = enc.prompt(source_of[target.strip()])
      assert doc_ids[doc_w == 0].tolist() == prompt.tolist()
      assert tok.decode(prompt) == TEMPLATE.replace("{source}", source_of[target.strip()])
      seen += 1
  assert seen >= 2
  # The objective counts the weighted tokens, not every real one.
  logits = jnp.zeros(batch["targets"].shape + (tok.vocab_size,))
  sums = objectives.next_token_objective(logits, batch, 0.0)
  assert float(sums["weight_sum"]) == batch[prompts.WEIGHTS].sum() < (batch["targets"] > 0).sum()
  del batch[prompts.WEIGHTS]
  plain = objectives.next_token_objective(logits, batch, 0.0)
  assert float(plain["weight_sum"]) == (batch["targets"] > 0).sum()


def test_translations_are_the_continuations_cut_at_a_newline_in_the_sources_order(llama):
  tok, enc = _encoder(llama)
  answer = tok.encode(" Datei\nEnglish: x", add_eos=False)
  sources = ["Open a new window", "File not found", "Close the window and save the document"]
  widths = []

  def decode_batch(inputs, n):  # a decoder that answers every prompt alike.
    widths.append(inputs.shape[1])
    out = np.zeros((inputs.shape[0], 48), np.int32)
    for row in range(inputs.shape[0]):
      prompt = inputs[row][inputs[row] > 0]
      if len(prompt):
        done = np.concatenate([prompt, answer, [EOS_ID]])[:48]
        out[row, :len(done)] = done
    return out

  out = pairs.translate(sources, enc, tok, batch_size=2, max_length=48,
                        decode_batch=decode_batch)
  assert out == ["Datei"] * 3
  assert all(w % pairs.PROMPT_BUCKET == 0 and w <= 48 for w in widths)
  assert pairs.newline_ids(tok) and all("\n" in tok.decode([i]) for i in pairs.newline_ids(tok))
  with pytest.raises(config_lib.ConfigError, match="config.max_predict_length=8: leaves no room"):
    pairs.translate(sources, enc, tok, batch_size=2, max_length=8, decode_batch=decode_batch)


@pytest.mark.parametrize("field,value,message", [
    ("data.prompt_template", "English: text\nGerman:", "must hold {source} exactly once"),
    ("data.prompt_template", "{source} {source}", "must hold {source} exactly once"),
    ("data.prompt_template", " {source}\n", "must hold text beside {source}"),
    ("data.pair_source", "tts", "config.data.pair_source='tts': must be one of"),
    ("data.train_files", (), "data.pair_source='files' needs at least one file"),
])
def test_bad_prompted_fields_are_named(field, value, message):
  c = tiny_config(**{"model.kind": "decoder_lm", "data.source": prompts.SOURCE,
                     "data.pair_source": "files", "data.train_files": ("x.tsv",),
                     "decoding.method": "greedy"})
  kinds.validate(c, 8)
  node = c
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError) as e:
    kinds.validate(c, 8)
  assert f"config.{field}=" in str(e.value) and message in str(e.value)


def test_only_a_prompted_run_has_weights_and_scores():
  kind = kinds.get("decoder_lm")
  c = tiny_config(**{"model.kind": "decoder_lm", "data.source": "python_stdlib"})
  assert prompts.WEIGHTS not in kind.batch_shapes(c, 4)
  assert kind.prompt_template(c) == "" and "bleu" not in kind.eval_metrics(c)
  c.data.source, c.num_eval_bleu_examples = prompts.SOURCE, 4
  assert kind.batch_shapes(c, 4)[prompts.WEIGHTS].dtype == jnp.float32
  assert kind.prompt_template(c) == c.data.prompt_template
  assert kind.eval_metrics(c) == ("loss", "perplexity", "accuracy", "bleu", "chrf",
                                  "placeholders")


# ------------------------------------------------------------------------- train.py and tools


def _args(folder, tsv, workdir, *extra):
  return ["train.py", f"--config={REPO}/configs/lm.py", f"--workdir={workdir}",
          f"--config.init_from.hf={folder}", f"--config.data.source={prompts.SOURCE}",
          "--config.data.pair_source=files", f"--config.data.train_files=('{tsv}',)",
          "--config.max_target_length=64", "--config.max_predict_length=64",
          "--config.per_device_batch_size=1", "--config.num_train_steps=6",
          "--config.log_every_steps=3", "--config.eval_every_steps=3",
          "--config.checkpoint_every_steps=3", "--config.warmup_steps=2",
          "--config.num_eval_steps=2", "--config.learning_rate=1e-2",
          "--config.num_eval_bleu_examples=4", "--config.num_predict_examples=6",
          "--config.decoding.method=greedy", *extra]


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def prompted_run(llama, tmp_path_factory):
  """A Llama folder tuned on prompted pairs for 6 steps by train.py (8 devices, 8 rows)."""
  tmp = tmp_path_factory.mktemp("prompted")
  tsv = write_parallel_tsv(tmp / "pairs.tsv", repeats=20)
  workdir = str(tmp / "run")
  proc = _run(_args(llama, tsv, workdir))
  assert proc.returncode == 0, excerpt(proc.stderr)
  return workdir, tsv, proc.stdout


def test_final_test_scores_translations_as_the_translation_kind_does(prompted_run):
  workdir, _, out = prompted_run
  records = _records(workdir)
  test = next(r for r in records if "test/bleu" in r)
  for key in ("test/bleu", "test/chrf", "test/placeholders", "test/loss", "test/perplexity"):
    assert np.isfinite(test[key]), key
  assert any("eval/bleu" in r and "eval/chrf" in r for r in records)
  assert [r["train/loss"] for r in records if "train/loss" in r]
  assert "sentences, greedy" in out and "of the translations given their prompts" in out
  examples = next(r for r in records if "examples" in r)["examples"]
  assert examples and set(examples[0]) == {"source", "reference", "prediction"}


def test_translate_tool_prints_one_line_per_input_line(prompted_run):
  workdir, _, _ = prompted_run
  lines = "Open a new window (3)\n\nFile not found (7)\n"
  proc = _run(["-m", "transformer_jax.translate", f"--workdir={workdir}"], stdin=lines)
  assert proc.returncode == 0, excerpt(proc.stderr)
  out = proc.stdout.split("\n")
  assert len(out) == 4 and out[1] == "" and out[3] == "", proc.stdout  # 3 lines, 1 blank.
  assert "translated 3 lines with step 6 (greedy)" in proc.stderr
  gen = _run(["-m", "transformer_jax.generate", f"--workdir={workdir}",
              "--prompt=English: File not found\nGerman:"])
  assert gen.returncode == 0, excerpt(gen.stderr)
  assert gen.stdout.startswith("English: File not found\\nGerman:")


def test_translate_tool_refuses_a_language_model_without_a_template(tmp_path):
  c = config_lib.default_config()
  c.model.kind, c.data.source, c.decoding.method = "decoder_lm", "python_stdlib", "greedy"
  (tmp_path / "config.json").write_text(c.to_json_best_effort())
  proc = _run(["-m", "transformer_jax.translate", f"--workdir={tmp_path}"], stdin="x\n")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "trained on prompted translation pairs (config.data.prompt_template)" in proc.stderr


def test_a_bad_template_is_one_error_line_before_anything_is_built(llama, tmp_path):
  tsv = write_parallel_tsv(tmp_path / "pairs.tsv")
  workdir = tmp_path / "run"
  proc = _run(_args(llama, tsv, workdir, "--config.data.prompt_template=Translate: {src}"))
  assert proc.returncode == 2
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert errors == ["error: config.data.prompt_template='Translate: {src}': must hold "
                    "{source} exactly once (where each source sentence goes), e.g. "
                    "'English: {source}\\nGerman:'"], proc.stderr[-2000:]
  assert "Model (" not in proc.stdout and not os.path.exists(workdir)


def test_zero_steps_test_and_save_the_starting_weights(llama, tmp_path):
  """The zero-shot figures: num_train_steps=0 evaluates, saves (step 0) and tests the
  pretrained weights; the same command again finds the run complete."""
  tsv = write_parallel_tsv(tmp_path / "pairs.tsv", repeats=20)
  workdir = str(tmp_path / "run")
  proc = _run(_args(llama, tsv, workdir, "--config.num_train_steps=0"))
  assert proc.returncode == 0, excerpt(proc.stderr)
  records = _records(workdir)
  assert not any("train/loss" in r for r in records)
  assert any("eval/bleu" in r for r in records)
  assert any("test/bleu" in r and "test/chrf" in r for r in records)
  assert [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()] == ["0"]
  again = _run(_args(llama, tsv, workdir, "--config.num_train_steps=0"))
  assert again.returncode == 0, excerpt(again.stderr)
  assert "is complete at step 0" in again.stdout
