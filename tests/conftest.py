"""Test set-up: 8 simulated CPU devices (set before jax is imported) and shared helpers."""

import os

# Tests compile hundreds of small programs and run each a few times: LLVM's optimisation
# passes (the backend's level 2) cost more than they save there (tests/test_speech_model.py
# 113 s -> 80 s; the whole suite about a tenth, BUILD_NOTES). The programs' HLO, and so
# what they compute, is the same at either level; an XLA_FLAGS that sets the level wins.
_USER_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _USER_FLAGS:
  _USER_FLAGS += " --xla_backend_optimization_level=0"


def device_env(devices: int) -> dict[str, str]:
  """This environment with `devices` simulated CPU devices (for subprocesses)."""
  return {**os.environ, "XLA_FLAGS": (
      f"{_USER_FLAGS} --xla_force_host_platform_device_count={devices}").strip()}


os.environ["XLA_FLAGS"] = device_env(8)["XLA_FLAGS"]
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The caches (compiled programs, the CPU's matmul rate) of this test session, in a
# fresh folder: train.py subprocesses inherit it.
import tempfile  # noqa: E402
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="transformer_jax_tests_")

import json  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from transformer_jax.config import default_config  # noqa: E402


def write_mo(path, entries, charset="UTF-8"):
  """Writes a real GNU gettext .mo catalog with `entries` {msgid: msgstr}."""
  entries = dict(entries)
  entries[""] = f"Content-Type: text/plain; charset={charset}\n"
  keys = sorted(entries)
  ids = [k.encode(charset) for k in keys]
  strs = [entries[k].encode(charset) for k in keys]
  n = len(keys)
  header_size = 7 * 4
  orig_table = header_size
  trans_table = orig_table + 8 * n
  data_start = trans_table + 8 * n
  blob, orig_entries, trans_entries = b"", [], []
  for s in ids:
    orig_entries.append((len(s), data_start + len(blob)))
    blob += s + b"\0"
  for s in strs:
    trans_entries.append((len(s), data_start + len(blob)))
    blob += s + b"\0"
  out = struct.pack("<7I", 0x950412DE, 0, n, orig_table, trans_table, 0, 0)
  for length, offset in orig_entries + trans_entries:
    out += struct.pack("<2I", length, offset)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(out + blob)


EN_DE = [
    ("File not found", "Datei nicht gefunden"),
    ("Cannot open file %s", "Datei %s kann nicht geöffnet werden"),
    ("Permission denied", "Zugriff verweigert"),
    ("Out of memory", "Speicher erschöpft"),
    ("Invalid argument", "Ungültiges Argument"),
    ("No such directory", "Verzeichnis existiert nicht"),
    ("Save the document", "Das Dokument speichern"),
    ("Open a new window", "Ein neues Fenster öffnen"),
    ("Close the window", "Das Fenster schließen"),
    ("The file %s was saved", "Die Datei %s wurde gespeichert"),
    ("Copy %d files", "%d Dateien kopieren"),
    ("Delete the selected file", "Die ausgewählte Datei löschen"),
    ("Print the document", "Das Dokument drucken"),
    ("Show hidden files", "Versteckte Dateien anzeigen"),
    ("Connection refused", "Verbindung abgelehnt"),
    ("Unknown option", "Unbekannte Option"),
]


def write_parallel_tsv(path, repeats=12):
  """A small real TSV corpus (variants of EN_DE) for end-to-end runs."""
  with open(path, "w", encoding="utf-8") as f:
    for r in range(repeats):
      for en, de in EN_DE:
        f.write(f"{en} ({r})\t{de} ({r})\n")
  return str(path)


def tiny_config(**overrides):
  """A config whose model and batches are small enough for unit tests."""
  c = default_config()
  c.num_train_steps = 6
  c.log_every_steps = 2
  c.eval_every_steps = 3
  c.checkpoint_every_steps = 3
  c.per_device_batch_size = 2
  c.max_target_length = 16
  c.max_predict_length = 16
  c.num_predict_examples = 8
  c.warmup_steps = 2
  c.model.emb_dim = 32
  c.model.num_heads = 2
  c.model.qkv_dim = 32
  c.model.mlp_dim = 64
  c.model.num_encoder_layers = 1
  c.model.num_decoder_layers = 1
  c.data.vocab_size = 400
  c.data.num_packing_bins = 4
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


@pytest.fixture
def tsv_corpus(tmp_path):
  return write_parallel_tsv(tmp_path / "corpus.tsv")


def excerpt(stderr: str) -> str:
  """The start and the end of a failed subprocess's stderr (an abort's reason comes first,
  its thread dump last)."""
  if len(stderr) <= 6000:
    return stderr
  return stderr[:2500] + "\n[...]\n" + stderr[-3500:]


def skip_without(reason: str):
  """pytest.skip(reason), or a failure where the run must not skip it (.ci/run sets
  TRANSFORMER_JAX_REQUIRE_REFERENCE: CI must run the parity tests)."""
  if os.environ.get("TRANSFORMER_JAX_REQUIRE_REFERENCE"):
    pytest.fail(f"required by TRANSFORMER_JAX_REQUIRE_REFERENCE, but {reason}")
  pytest.skip(reason)


# ------------------------------------------------------------ train.py as users run it

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    # float32 (as configs/base.py): these runs compare losses and scores across
    # device layouts, processes and tools.
    "--config.model.dtype=float32",
    "--config.model.emb_dim=32", "--config.model.num_heads=2", "--config.model.qkv_dim=32",
    "--config.model.mlp_dim=64", "--config.model.num_encoder_layers=1",
    "--config.model.num_decoder_layers=1", "--config.per_device_batch_size=2",
    "--config.max_target_length=32", "--config.max_predict_length=16",
    "--config.num_predict_examples=20", "--config.num_eval_steps=2",
    "--config.data.vocab_size=1000", "--config.data.num_packing_bins=4",
    "--config.log_every_steps=3", "--config.eval_every_steps=4",
    "--config.checkpoint_every_steps=4", "--config.warmup_steps=2",
    "--config.num_train_steps=8", "--config.learning_rate=0.01",
]


def _run(args, stdin=None, timeout=600):
  return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True,
                        timeout=timeout, env=dict(os.environ), cwd=REPO)


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def train_tiny(workdir, tsv, *extra):
  """train.py on configs/base.py with the TINY model, on the parallel TSV file `tsv`."""
  return _run(["train.py", f"--config={REPO}/configs/base.py", f"--workdir={workdir}", *TINY,
               "--config.data.source=files", f"--config.data.train_files=('{tsv}',)", *extra])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """A tiny encoder-decoder run trained by train.py, decoding with beam search (shared by
  the tools' and the report's tests)."""
  tmp = tmp_path_factory.mktemp("translate")
  tsv = write_parallel_tsv(tmp / "corpus.tsv", repeats=40)
  workdir = str(tmp / "run")
  proc = train_tiny(workdir, tsv, "--config.num_eval_bleu_examples=8",
                    "--config.decoding.method=beam", "--config.decoding.beam_size=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "beam 2, alpha 1.0" in proc.stdout
  return workdir
