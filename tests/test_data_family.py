"""Data for the LM and text-classifier kinds: loaders, splits, streams, baselines
(the ViT's images: test_data_images.py)."""

import collections
import json
import math
import os
import random
import shutil

import numpy as np
import pytest

from transformer_jax.data import tokenizer as tok
from transformer_jax.data.splits import SPLITS, CorpusError, split_of
from transformer_jax.kinds.classification import labelled_text as lt
from transformer_jax.kinds.language_model import text as lm_text

from stream_checks import assert_process_split_invariant, assert_resumes, in_hash_order, split_config

WORDS = ("the file window data open close save print value list number system user "
         "error message option table index reads writes returns shows keeps").split()


def _sentence(rng):
  return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."


def _paragraphs(n, seed=0):
  rng = random.Random(seed)
  return [" ".join(_sentence(rng) for _ in range(rng.randint(1, 4))) for _ in range(n)]


DOCS = _paragraphs(40)


@pytest.fixture(scope="module")
def tokenizer():
  return tok.Tokenizer(tok.train_tokenizer(DOCS + _paragraphs(40, seed=1), vocab_size=400))


# --------------------------------------------------------------------------- LM text


def test_stdlib_tree_skips_tests_caches_and_site_packages(tmp_path):
  kept = {f"mod{i}.py": f"def f{i}():\n  return {i}\n" for i in range(40)}
  kept["pkg/sub.py"] = "x = 1\n"
  skipped = {"site-packages/a.py": "a", "__pycache__/b.py": "b", "test/c.py": "c",
             "pkg/tests/d.py": "d", "idlelib/e.py": "e", "encodings/f.py": "f",
             "empty.py": "  \n", "notes.txt": "not python"}
  for rel, text in {**kept, **skipped}.items():
    os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
    (tmp_path / rel).write_text(text, encoding="utf-8")
  config = split_config(source="python_stdlib", stdlib_dir=str(tmp_path))
  splits = lm_text.load_documents(config)
  assert splits == lm_text.load_documents(config)
  for name in SPLITS:
    for rel, text in kept.items():
      assert (text in splits.split(name)) == (split_of(rel, 0.2, 0.2) == name)
  assert sorted(sum((splits.split(n) for n in SPLITS), [])) == sorted(kept.values())
  # Training files stay sorted by path; validation and test are in hash order of the path.
  path_of = {text: rel for rel, text in kept.items()}
  assert [path_of[t] for t in splits.train] == sorted(path_of[t] for t in splits.train)
  for name in ("validation", "test"):
    assert in_hash_order([path_of[t] for t in splits.split(name)])


def test_text_files_split_into_paragraphs_deterministically(tmp_path):
  path = tmp_path / "a.txt"
  path.write_text("\n\n".join(DOCS[:20]) + "\n  \n\n" + "\n\n".join(DOCS[20:]) + "\n",
                  encoding="utf-8")
  splits = lm_text.load_documents(split_config(source="files", train_files=(str(path),)))
  assert splits == lm_text.load_documents(split_config(source="files", train_files=(str(path),)))
  sets = [set(splits.split(n)) for n in SPLITS]
  assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
  assert set().union(*sets) == set(DOCS)
  for name in SPLITS:
    assert all(split_of(d, 0.2, 0.2) == name for d in splits.split(name))
  # Training paragraphs keep their file order; validation and test are in hash order.
  assert splits.train == [d for d in DOCS if split_of(d, 0.2, 0.2) == "train"]
  assert in_hash_order(splits.validation) and in_hash_order(splits.test)
  # Given validation/test files are used whole, in hash order.
  other = tmp_path / "b.txt"
  other.write_text("\n\n".join(DOCS[:12]), encoding="utf-8")
  given = lm_text.load_documents(split_config(source="files", train_files=(str(path),),
                                         validation_files=(str(other),),
                                         test_files=(str(other),)))
  assert given.train == DOCS and sorted(given.test) == sorted(DOCS[:12])
  assert given.test == given.validation and in_hash_order(given.test)


def test_lm_loader_errors_name_the_problem(tmp_path):
  with pytest.raises(CorpusError, match="missing.txt"):
    lm_text.load_documents(split_config(source="files",
                                        train_files=(str(tmp_path / "missing.txt"),)))


def _lm_stream(tokenizer, rows, global_batch_size=4, max_length=16, seed=0):
  return lm_text.LMTrainStream(DOCS, tokenizer, global_batch_size=global_batch_size, rows=rows,
                               max_length=max_length, seed=seed, num_packing_bins=2)


def _segments(batch):
  """Every (row's) packed segment as a tuple of token ids."""
  out = []
  for ids, seg in zip(batch["targets"], batch["targets_segment_ids"]):
    out.extend(tuple(ids[seg == s].tolist()) for s in sorted(set(seg.tolist()) - {0}))
  return out


def _all_chunks(tokenizer, docs, max_length):
  return [tuple(c.tolist()) for d in docs
          for c in lm_text.chunks(tokenizer.encode(d), max_length)]


def test_lm_rows_are_packed_chunks_with_segments_and_positions(tokenizer):
  batch = next(_lm_stream(tokenizer, range(4)))
  assert set(batch) == set(lm_text.LM_KEYS)
  for k in lm_text.LM_KEYS:
    assert batch[k].shape == (4, 16) and batch[k].dtype == np.int32
  ids, seg, pos = (batch[k] for k in lm_text.LM_KEYS)
  assert ((ids > 0) == (seg > 0)).all()  # padding is exactly segment 0.
  for row in range(4):
    segments = set(seg[row].tolist()) - {0}
    assert segments == set(range(1, len(segments) + 1))
    for s in segments:
      p = pos[row][seg[row] == s]
      np.testing.assert_array_equal(p, np.arange(len(p)))  # positions restart.
    assert (pos[row][seg[row] == 0] == 0).all()


def test_every_chunk_of_the_corpus_appears_in_the_stream(tokenizer):
  chunks = _all_chunks(tokenizer, DOCS, 16)
  assert max(len(c) for c in chunks) == 16 and len(chunks) > len(DOCS)  # docs get cut.
  stream = _lm_stream(tokenizer, range(4))
  seen = collections.Counter()
  for _ in range(2 * len(chunks) // 4 + 8):
    seen.update(_segments(next(stream)))
  assert set(chunks) <= set(seen)
  assert set(seen) <= set(chunks)  # nothing but real chunks.


def test_lm_eval_batches_hold_every_chunk_once(tokenizer):
  chunks = collections.Counter(_all_chunks(tokenizer, DOCS, 16))
  batches = lm_text.lm_eval_batches(DOCS, tokenizer, batch_size=8, max_length=16,
                                    num_packing_bins=4)
  assert all(b[k].shape == (8, 16) and b[k].dtype == np.int32
             for b in batches for k in lm_text.LM_KEYS)
  assert collections.Counter(s for b in batches for s in _segments(b)) == chunks
  real_rows = [b["targets_segment_ids"].max(axis=1) > 0 for b in batches]
  assert all(r.all() for r in real_rows[:-1])  # only the last batch has padding rows,
  last = real_rows[-1]
  assert last[0] and (np.sort(last)[::-1] == last).all()  # and they come last.
  per_process = [collections.Counter(
      s for b in lm_text.lm_eval_batches(DOCS, tokenizer, batch_size=8, max_length=16,
                                         num_packing_bins=4, process_index=p, process_count=2)
      for s in _segments(b)) for p in range(2)]
  assert per_process[0] + per_process[1] == chunks
  with pytest.raises(ValueError, match="process_index"):
    lm_text.lm_eval_batches(DOCS, tokenizer, batch_size=8, max_length=16, num_packing_bins=4,
                            process_index=2, process_count=2)


def test_lm_stream_resumes_and_ignores_the_process_split(tokenizer):
  assert_resumes(lambda: _lm_stream(tokenizer, range(4), seed=3), k=20, n=15)  # 2 epochs.
  assert_process_split_invariant(lambda rows: _lm_stream(tokenizer, rows), 4)
  a, b = next(_lm_stream(tokenizer, range(4))), next(_lm_stream(tokenizer, range(4), seed=1))
  assert not np.array_equal(a["targets"], b["targets"])


def test_unigram_perplexity(tokenizer):
  train, held_out = DOCS[:30], DOCS[30:]
  similar = lm_text.unigram_perplexity(train, held_out, tokenizer)
  unlike = lm_text.unigram_perplexity(train, ["Zebra quixotic jukebox 0987 xylophone!"],
                                      tokenizer)
  assert math.isfinite(similar) and 1 < similar < unlike
  # By hand: add-one counts over the vocabulary, EOS counted on both sides.
  vocab = tokenizer.vocab_size
  counts = np.bincount(np.concatenate([tokenizer.encode(d) for d in train]), minlength=vocab)
  ids = np.concatenate([tokenizer.encode(d) for d in held_out])
  log_p = np.log((counts[ids] + 1) / (counts.sum() + vocab))
  assert similar == pytest.approx(math.exp(-log_p.mean()), rel=1e-9)


# --------------------------------------------------------------------------- labelled text


def _labelled_examples(n=60):
  rng = random.Random(2)
  return [(f"{_sentence(rng)} {i}", ("apple", "banana", "cherry")[i % 3]) for i in range(n)]


def test_labelled_files_tsv_and_jsonl(tmp_path):
  examples = _labelled_examples()
  tsv = tmp_path / "a.tsv"
  tsv.write_text("".join(f"{t}\t{l}\n" for t, l in examples[:30]) + "\n", encoding="utf-8")
  jsonl = tmp_path / "b.jsonl"
  jsonl.write_text("\n".join(json.dumps({"text": t, "label": l}) for t, l in examples[30:]),
                   encoding="utf-8")
  config = split_config(source="files", train_files=(str(tsv), str(jsonl)))
  splits = lt.load_labelled(config)
  assert splits == lt.load_labelled(config)
  assert splits.labels == ["apple", "banana", "cherry"]
  texts = [{t for t, _ in splits.split(n)} for n in SPLITS]
  assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
  got = {(t, splits.labels[i]) for n in SPLITS for t, i in splits.split(n)}
  assert got == set(examples)
  for name in SPLITS:
    assert all(split_of(t, 0.2, 0.2) == name for t, _ in splits.split(name))
  assert splits.train == sorted(splits.train)  # train stays sorted by text,
  for name in ("validation", "test"):  # validation and test are in hash order.
    assert in_hash_order([t for t, _ in splits.split(name)])
  # Given validation/test files: labels from all splits, evaluation order by hash.
  given = lt.load_labelled(split_config(source="files", train_files=(str(tsv),),
                                   validation_files=(str(jsonl),), test_files=(str(jsonl),)))
  assert given.labels == ["apple", "banana", "cherry"]
  assert given.train == sorted((t, given.labels.index(l)) for t, l in examples[:30])
  assert given.test == given.validation and in_hash_order([t for t, _ in given.test])
  assert sorted(given.test) == sorted((t, given.labels.index(l)) for t, l in examples[30:])


def test_labelled_files_skip_bad_lines_and_name_the_first(tmp_path, capsys):
  bad = tmp_path / "bad.tsv"
  bad.write_text("good\tx\nno label here\n", encoding="utf-8")
  assert lt.read_labelled_file(str(bad)) == [("good", "x")]
  assert "skipped 1 of 2 lines" in capsys.readouterr().out
  bad_json = tmp_path / "bad.jsonl"
  bad_json.write_text('{"text": "a", "label": 3}\n{"text": "b"}\n[1]\n', encoding="utf-8")
  assert lt.read_labelled_file(str(bad_json)) == [("a", "3")]
  note = capsys.readouterr().out
  assert f"{bad_json}: skipped 2 of 3 lines" in note and "the first at line 2" in note
  (tmp_path / "none.jsonl").write_text('{"text": "b"}\n', encoding="utf-8")
  with pytest.raises(CorpusError, match=r"none.jsonl: no usable labelled data line"):
    lt.read_labelled_file(str(tmp_path / "none.jsonl"))


DUMP = """Package: foo
Version: 1.0
Section: contrib/utils
Description: Frobnicates   the widgets
 A long description
 .
 over two paragraphs.
Description-md5: 0123

Package: bar
Section: non-free-firmware/kernel
Description: Firmware blobs

Package: baz
Description: no section here
"""


def test_debian_stanzas_give_text_and_section_and_duplicates_keep_one_label():
  assert lt.debian_examples(DUMP) == [
      ("Frobnicates the widgets A long description over two paragraphs.", "utils"),
      ("Firmware blobs", "kernel")]
  got = lt.dedupe([("a", "x"), ("a", "y"), ("a", "y"), ("b", "z"), ("b", "w")])
  assert got == [("a", "y"), ("b", "w")]


def _classify_stream(tokenizer, examples, rows, seed=0):
  return lt.ClassifyTrainStream(examples, tokenizer, global_batch_size=4, rows=rows,
                                max_length=12, seed=seed)


def test_classify_stream_rows_and_state(tokenizer):
  examples = [(t, i % 3) for i, (t, _) in enumerate(_labelled_examples(20))]
  wanted = {(tuple(lt.encode(tokenizer, t, 12).tolist()), l) for t, l in examples}
  stream = _classify_stream(tokenizer, examples, range(4))
  for _ in range(12):  # over two epochs.
    batch = next(stream)
    assert set(batch) == {"inputs", "label"}
    assert batch["inputs"].shape == (4, 12) and batch["inputs"].dtype == np.int32
    assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
    assert all((tuple(x.tolist()), int(l)) in wanted
               for x, l in zip(batch["inputs"], batch["label"]))
  assert_resumes(lambda: _classify_stream(tokenizer, examples, range(4), seed=5), k=4, n=6)
  assert_process_split_invariant(lambda rows: _classify_stream(tokenizer, examples, rows), 4)


def test_classify_eval_batches_cover_every_example_once(tokenizer):
  examples = [(t, i % 3) for i, (t, _) in enumerate(_labelled_examples(11))]
  seen = []
  for p in range(2):
    batches = lt.classify_eval_batches(examples, tokenizer, batch_size=4, max_length=12,
                                       process_index=p, process_count=2)
    assert all(b["inputs"].shape == (4, 12) and b["label"].shape == (4,) for b in batches)
    last = batches[-1]
    pad = last["label"] == -1
    assert pad.sum() == 4 * len(batches) - len(examples[p::2])
    assert (last["inputs"][pad] == 0).all()
    seen += [(tuple(x.tolist()), int(l)) for b in batches
             for x, l in zip(b["inputs"], b["label"]) if l >= 0]
  assert sorted(seen) == sorted((tuple(lt.encode(tokenizer, t, 12).tolist()), l)
                                for t, l in examples)


def test_majority_baseline():
  assert lt.majority_baseline([0, 1, 1, 2], [1, 1, 0, 2, 2]) == pytest.approx(0.4)
  assert lt.majority_baseline([("a", 2), ("b", 1)], [("c", 1), ("d", 2)]) == 0.5  # tie: 1.
  with pytest.raises(ValueError):
    lt.majority_baseline([], [1])


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="apt-cache is not installed")
def test_debian_packages_give_a_real_corpus():
  try:
    splits = lt.load_labelled(split_config(source="debian", validation_fraction=0.03,
                                      test_fraction=0.03))
  except CorpusError as e:
    pytest.skip(f"no package lists: {e}")
  n = sum(len(splits.split(s)) for s in SPLITS)
  assert n > 1000 and len(splits.labels) > 10
  assert splits.labels == sorted(splits.labels)
  counts = collections.Counter(l for s in SPLITS for _, l in splits.split(s))
  assert min(counts.values()) >= lt.DEFAULT_MIN_CLASS_EXAMPLES
