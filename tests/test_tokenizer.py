"""sentencepiece: round trip, placeholders kept whole, trained once then loaded."""

import inspect
import os

import numpy as np
import pytest

from conftest import EN_DE
from transformer_jax.data import tokenizer as tok


def _texts():
  return [s for pair in EN_DE * 4 for s in pair] + [f"Line %{i}$s of %d" for i in range(1, 4)]


def test_placeholders_found_by_frequency():
  found = tok.placeholders(["%s and %s", "%1$d items, %s", "100%% done %(name)s {0}"] * 5,
                           min_count=5, max_symbols=10)
  assert found[0] == "%s"
  assert {"%1$d", "%%", "%(name)s", "{0}"} <= set(found)


def test_round_trip_and_placeholders_stay_whole(tmp_path):
  texts = _texts()
  proto = tok.train_tokenizer(texts, vocab_size=400, seed_symbols=["%s", "%d"])
  t = tok.Tokenizer(proto)
  for text in texts + ["Ünïcödé never seen ß"]:
    ids = t.encode(text)
    assert ids[-1] == tok.EOS_ID and ids.dtype == np.int32
    assert tok.PAD_ID not in ids
    assert t.decode(ids) == text
  assert "%s" in t.pieces("Cannot open file %s")
  # Decoding stops at EOS and ignores padding.
  ids = t.encode("File not found")
  padded = np.concatenate([ids, [tok.PAD_ID, 5, 6]])
  assert t.decode(padded) == "File not found"


def test_load_or_train_writes_once_then_loads(tmp_path):
  path = str(tmp_path / "sub" / "tokenizer.model")
  calls = []

  def texts():
    calls.append(1)
    return _texts()

  a = tok.load_or_train(path, texts, 400, is_writer=True)
  assert os.path.exists(path) and calls == [1]
  b = tok.load_or_train(path, texts, 400, is_writer=False)
  assert calls == [1]  # loaded, not retrained.
  assert a.vocab_size == b.vocab_size
  assert list(a.encode("Print the document")) == list(b.encode("Print the document"))


def test_too_small_vocabulary_names_the_field():
  texts = [chr(0x4E00 + i) * 3 for i in range(400)]  # 400 distinct characters.
  with pytest.raises(tok.TokenizerError, match="config.data.vocab_size=300"):
    tok.train_tokenizer(texts, vocab_size=300, character_coverage=1.0)


def test_keep_whitespace_round_trips_code_layout():
  lines = [line for line in inspect.getsource(os).splitlines() if line.strip()]
  code = "def f(x):\n    if x:\n        return  1\n\n    return 2\n"
  kept = tok.Tokenizer(tok.train_tokenizer(lines, 600, keep_whitespace=True))
  assert kept.decode(kept.encode(code)) == code
  assert "\n" in kept.pieces(code)
  plain = tok.Tokenizer(tok.train_tokenizer(lines, 600))
  assert plain.decode(plain.encode(code)) == "def f(x): if x: return 1 return 2"


def test_a_char_model_has_one_piece_per_character():
  texts = ["press the pound key", "your call is important to us", "goodbye"] * 5
  t = tok.Tokenizer(tok.train_tokenizer(texts, vocab_size=512, model_type="char"))
  alphabet = set("".join(texts).replace(" ", ""))
  assert t.vocab_size == 3 + 1 + len(alphabet)  # pad, eos, unk, the word boundary, letters.
  ids = t.encode("press any key")
  assert len(ids) == len("press any key") + 1 + 1  # a leading boundary, then EOS.
  assert t.decode(t.encode("goodbye to us")) == "goodbye to us"
  assert tok.UNK_ID in t.encode("zebra")  # no byte fallback: an unseen letter is unknown.
  with pytest.raises(tok.TokenizerError, match="tokenizer_type='bpe'"):
    tok.train_tokenizer(texts, vocab_size=512, model_type="bpe")
