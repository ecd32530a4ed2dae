"""Corpus harvesting from real gettext catalogs, file readers and deterministic splits."""

import json
import os
import random

import pytest

from conftest import EN_DE, write_mo
from transformer_jax.data import sources


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
  train, val, test = ({s for s, _ in a.split(n)} for n in sources.SPLITS)
  assert not (train & val) and not (train & test) and not (val & test)
  assert len(train) + len(val) + len(test) == 3000
  assert 200 < len(val) < 400 and 200 < len(test) < 400
  # An example's split depends on its source text alone.
  assert sources.split_of("message number 7", 0.1, 0.1) == sources.split_of(
      "message number 7", 0.1, 0.1)


def test_tsv_and_jsonl_files(tmp_path):
  tsv = tmp_path / "a.tsv"
  tsv.write_text("Hello\tHallo\nBye\tTschüss\n\n", encoding="utf-8")
  jsonl = tmp_path / "b.jsonl"
  jsonl.write_text("\n".join(json.dumps({"source": s, "target": t}) for s, t in EN_DE[:3]),
                   encoding="utf-8")
  pairs = sources.read_parallel_files([str(tsv), str(jsonl)])
  assert ("Hello", "Hallo") in pairs and EN_DE[0] in pairs and len(pairs) == 5


def test_bad_files_name_the_file_and_line(tmp_path):
  bad = tmp_path / "bad.tsv"
  bad.write_text("ok\tgut\nonly one field\n", encoding="utf-8")
  with pytest.raises(sources.CorpusError, match=r"bad.tsv:2"):
    sources.read_parallel_file(str(bad))
  with pytest.raises(sources.CorpusError, match="not found"):
    sources.read_parallel_file(str(tmp_path / "missing.tsv"))


@pytest.mark.skipif(not sources.find_catalogs(["/usr/share/locale"], "de"),
                    reason="no German gettext catalogs installed")
def test_system_catalogs_give_a_real_corpus():
  pairs = sources.harvest_gettext(["/usr/share/locale"], "en", "de")
  assert len(pairs) > 1000
  assert len({s for s, _ in pairs}) == len(pairs)
  assert all(s and t for s, t in pairs)
