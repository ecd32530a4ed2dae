"""Corpus harvesting from real gettext catalogs, file readers, deterministic splits and
the loading skeleton that every kind shares."""

import hashlib
import json
import os
import random
import types

import numpy as np
import pytest

from transformer_jax.data import splits
from transformer_jax.kinds.classification import images, labelled_text
from transformer_jax.kinds.language_model import text as lm_text
from transformer_jax.kinds.translation import corpus as sources

from conftest import EN_DE, write_mo


def _locale_tree(root, catalogs):
  for rel, entries in catalogs.items():
    write_mo(os.path.join(root, rel), entries)
  return str(root)


def test_harvest_reads_dedupes_and_drops_empty(tmp_path):
  root = _locale_tree(tmp_path, {
      "de/LC_MESSAGES/a.mo": {"Open": "Öffnen", "Close": "Schließen", "Empty": "",
                              "Multi\nline  text": "Mehr-\nzeiliger Text"},
      "de/LC_MESSAGES/b.mo": {"Open": "Öffnen", "Close": "Zumachen", "Save": "Speichern"},
      "de_CH/LC_MESSAGES/c.mo": {"Close": "Schliessen", "Quit": "Beenden"},
      "fr/LC_MESSAGES/a.mo": {"Open": "Ouvrir"},
  })
  pairs = dict(sources.harvest_gettext([root], "en", "de"))
  assert pairs["Open"] == "Öffnen"
  assert pairs["Save"] == "Speichern" and pairs["Quit"] == "Beenden"
  assert "Empty" not in pairs and "" not in pairs
  assert pairs["Multi line text"] == "Mehr- zeiliger Text"  # whitespace collapsed.
  # Three different translations of "Close", once each: the smallest string wins,
  # whatever the order in which the catalogs were read.
  assert pairs["Close"] == "Schliessen"
  assert "Ouvrir" not in pairs.values()


def test_harvest_skips_unreadable_catalog(tmp_path):
  root = _locale_tree(tmp_path, {"de/LC_MESSAGES/good.mo": {"Open": "Öffnen"}})
  with open(os.path.join(root, "de/LC_MESSAGES/broken.mo"), "wb") as f:
    f.write(b"not a catalog at all")
  assert sources.harvest_gettext([root], "en", "de") == [("Open", "Öffnen")]


def test_no_catalogs_says_what_to_do(tmp_path):
  with pytest.raises(sources.CorpusError) as e:
    sources.harvest_gettext([str(tmp_path)], "en", "xx")
  assert "config.data.locale_dirs" in str(e.value)
  assert "data.source=files" in str(e.value)


def test_splits_are_deterministic_and_disjoint():
  pairs = [(f"message number {i}", f"Nachricht Nummer {i}") for i in range(3000)]
  a = sources.split_pairs(pairs, 0.1, 0.1)
  shuffled = list(pairs)
  random.Random(0).shuffle(shuffled)
  b = sources.split_pairs(shuffled, 0.1, 0.1)
  assert a == b
  train, val, test = ({s for s, _ in a.split(n)} for n in splits.SPLITS)
  assert not (train & val) and not (train & test) and not (val & test)
  assert len(train) + len(val) + len(test) == 3000
  assert 200 < len(val) < 400 and 200 < len(test) < 400
  # An example's split depends on its source text alone.
  assert splits.split_of("message number 7", 0.1, 0.1) == splits.split_of(
      "message number 7", 0.1, 0.1)
  # Train stays sorted (it decides the training batches); validation and test are in
  # hash order, so their first examples are not the alphabetically first.
  assert a.train == sorted(a.train)
  for name in ("validation", "test"):
    got = a.split(name)
    assert got == splits.hash_order(sorted(got), key=lambda pair: pair[0])
    assert got != sorted(got)


def _sha(text):
  return hashlib.sha256(text.encode("utf-8")).digest()


def test_hash_order_is_by_hash_and_ignores_the_input_order():
  words = [f"word {i}" for i in range(50)]
  ordered = splits.hash_order(words, key=str)
  assert ordered == sorted(words, key=_sha)
  shuffled = list(words)
  random.Random(1).shuffle(shuffled)
  assert splits.hash_order(shuffled, key=str) == ordered
  assert ordered != sorted(words)
  items = [("b", 1), ("a", 2), ("b", 0)]  # equal keys keep their input order.
  assert [i for _, i in splits.hash_order(items, key=lambda x: x[0])] in ([2, 1, 0], [1, 0, 2])


def test_split_by_hash_keeps_train_order_and_hash_orders_eval_splits():
  items = [f"example {i}" for i in range(400)]
  random.Random(2).shuffle(items)
  out = splits.split_by_hash(items, str, 0.2, 0.2)
  assert out["train"] == [x for x in items if splits.split_of(x, 0.2, 0.2) == "train"]
  for name in ("validation", "test"):
    assert out[name] == sorted((x for x in items if splits.split_of(x, 0.2, 0.2) == name),
                               key=_sha)
    assert len(out[name]) > 40


def _data_config(**fields):
  base = {"source": "files", "validation_fraction": 0.2, "test_fraction": 0.2,
          "train_files": (), "validation_files": (), "test_files": ()}
  base.update(fields)
  return types.SimpleNamespace(**base)


def _tsv(path, pairs):
  path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
  return str(path)


def test_load_corpus_from_files_orders_given_eval_files_by_hash(tmp_path):
  pairs = [(f"message number {i}", f"Nachricht Nummer {i}") for i in range(60)]
  train = _tsv(tmp_path / "train.tsv", pairs[:40])
  held_out = _tsv(tmp_path / "held_out.tsv", pairs[40:])
  corpus = sources.load_corpus(_data_config(train_files=(train,), validation_files=(held_out,),
                                            test_files=(held_out,)))
  assert corpus.train == sorted(pairs[:40])
  assert corpus.validation == corpus.test == sorted(pairs[40:], key=lambda p: _sha(p[0]))
  carved = sources.load_corpus(_data_config(train_files=(train,)))
  assert carved.train == sorted(carved.train)
  assert carved.validation == sorted(carved.validation, key=lambda p: _sha(p[0]))


def _one_example_file(tmp_path, kind):
  """A training file of one example, for each kind's loader."""
  if kind == "images":
    np.savez(tmp_path / "one.npz", images=np.zeros((1, 4, 4), np.uint8), labels=np.zeros(1, int))
    return str(tmp_path / "one.npz")
  text = {"translation": "Open\tÖffnen\n", "lm": "A single paragraph.\n",
          "labelled": "just one text\tapple\n"}[kind]
  path = tmp_path / "one.txt"
  path.write_text(text, encoding="utf-8")
  return str(path)


# kind: (loader, what its splits hold, who reads the data and its built-in source, files hint)
LOADERS = {
    "translation": (sources.load_corpus, "pairs", "a translation model reads 'gettext'",
                    "TSV/JSONL files of parallel text"),
    "lm": (lm_text.load_documents, "documents", "a language model reads 'python_stdlib'",
           "plain text files"),
    "labelled": (labelled_text.load_labelled, "examples", "a text classifier reads 'debian'",
                 r"TSV \(text<TAB>label\)"),
    "images": (images.load_images, "images", "a ViT reads 'mnist'", ".npz files with 'images'"),
}


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_every_loader_names_the_field_in_its_errors(tmp_path, kind):
  """One skeleton (`splits.load_splits`) gives every kind the same errors."""
  load, noun, reader, hint = LOADERS[kind]
  with pytest.raises(sources.CorpusError,
                     match=f"config.data.train_files is empty; give one or more {hint}"):
    load(_data_config())
  with pytest.raises(sources.CorpusError,
                     match=f"config.data.source='nope': {reader} or 'files'"):
    load(_data_config(source="nope"))
  one = _one_example_file(tmp_path, kind)
  with pytest.raises(sources.CorpusError,
                     match=rf"the (train|validation|test) split has no {noun} \(config.data."
                     r"source='files'\); give more data or change validation_fraction/"):
    load(_data_config(train_files=(one,)))
  with pytest.raises(sources.CorpusError, match=rf"the test split has no {noun} .*"
                     r"give more data in config.data.test_files"):
    load(_data_config(train_files=(one,), validation_files=(one,)))


def test_tsv_and_jsonl_files(tmp_path):
  tsv = tmp_path / "a.tsv"
  tsv.write_text("Hello\tHallo\nBye\tTschüss\n\n", encoding="utf-8")
  jsonl = tmp_path / "b.jsonl"
  jsonl.write_text("\n".join(json.dumps({"source": s, "target": t}) for s, t in EN_DE[:3]),
                   encoding="utf-8")
  pairs = sources.read_parallel_files([str(tsv), str(jsonl)])
  assert ("Hello", "Hallo") in pairs and EN_DE[0] in pairs and len(pairs) == 5


def test_bad_lines_are_skipped_and_counted_naming_the_file_and_line(tmp_path, capsys):
  bad = tmp_path / "bad.tsv"
  bad.write_bytes(b"ok\tgut\nonly one field\n\xff\xfe\tnot utf-8\n\nja\tyes\n")
  assert sources.read_parallel_file(str(bad)) == [("ok", "gut"), ("ja", "yes")]
  note = capsys.readouterr().out
  assert f"note: {bad}: skipped 2 of 4 lines" in note
  assert "1 not UTF-8" in note and "1 not 2 tab-separated fields" in note
  assert "the first at line 2" in note
  # Nothing usable: an error naming the file.
  (tmp_path / "none.tsv").write_text("one\nfield\n", encoding="utf-8")
  with pytest.raises(sources.CorpusError, match=r"none.tsv: no usable parallel data line"):
    sources.read_parallel_file(str(tmp_path / "none.tsv"))
  (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
  with pytest.raises(sources.CorpusError, match=r"empty.tsv: .*the file is empty"):
    sources.read_parallel_file(str(tmp_path / "empty.tsv"))
  with pytest.raises(sources.CorpusError, match="not found"):
    sources.read_parallel_file(str(tmp_path / "missing.tsv"))


@pytest.mark.skipif(not sources.find_catalogs(["/usr/share/locale"], "de"),
                    reason="no German gettext catalogs installed")
def test_system_catalogs_give_a_real_corpus():
  pairs = sources.harvest_gettext(["/usr/share/locale"], "en", "de")
  assert len(pairs) > 1000
  assert len({s for s, _ in pairs}) == len(pairs)
  assert all(s and t for s, t in pairs)
