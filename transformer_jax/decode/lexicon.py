"""Lexicon-aware beam search for letter models: words outside a word list cost a penalty.

A letter model (data.tokenizer_type=char) spells; one wrong letter makes a wrong
word. With `decoding.oov_penalty` > 0 the beam knows the words of the training
transcripts (WORKDIR/lexicon.txt, written by the speech task) as a letter trie:
a hypothesis pays the penalty once for each word that leaves the trie (a letter
no listed word has there, or a word boundary or EOS inside a word that is not
listed), and nothing for listed words. A large penalty confines the beam to the
list; a moderate one lets a clearly heard new word through (the closed and open
vocabulary of lexicon-based decoders such as flashlight's, with its unknown-word
score).

The trie is two tables over its states (the root, one state per word prefix, and
a last state "inside an unlisted word") and the model's vocabulary: the next
state and the penalty of each token. `step_fn` wraps a beam step that returns
log-scores; its cache carries each beam's state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.data.tokenizer import EOS_ID
from transformer_jax.models.config import padded_vocab_size

FILE = "lexicon.txt"
ROOT = 0


class Tables(NamedTuple):
  """next_state [S, V] int32 and penalty [S, V] float32 (0 or -oov_penalty); the last
  state is "inside an unlisted word"."""
  next_state: np.ndarray
  penalty: np.ndarray


def write_words(workdir: str, words: Iterable[str]) -> None:
  """WORKDIR/lexicon.txt: one word per line, sorted (for the transcribe tool)."""
  path = os.path.join(workdir, FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write("".join(f"{w}\n" for w in sorted(set(words))))
  os.replace(path + ".tmp", path)


def read_words(workdir: str) -> list[str]:
  path = os.path.join(workdir, FILE)
  try:
    with open(path, encoding="utf-8") as f:
      return [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise FileNotFoundError(f"{path}: {e.strerror} (decoding.oov_penalty needs the run's word "
                            "list; set it to 0)") from e


def build(words: Iterable[str], letter_ids, boundary_id: int, eos_id: int, vocab_size: int,
          oov_penalty: float) -> Tables:
  """The trie of `words` over token ids; `letter_ids(word)` gives a word's letter ids
  (no boundary), `boundary_id` separates words."""
  children: list[dict[int, int]] = [{}]
  final = [True]  # the root: an empty word between boundaries costs nothing.
  for word in words:
    node = ROOT
    for token in letter_ids(word):
      if token not in children[node]:
        children[node][token] = len(children)
        children.append({})
        final.append(False)
      node = children[node][token]
    final[node] = True
  off = len(children)
  next_state = np.full((off + 1, vocab_size), off, np.int32)
  penalty = np.full((off + 1, vocab_size), -oov_penalty, np.float32)
  for node, kids in enumerate(children):
    for token, child in kids.items():
      next_state[node, token], penalty[node, token] = child, 0.0
    for token in (boundary_id, eos_id):
      next_state[node, token] = ROOT
      penalty[node, token] = 0.0 if final[node] else -oov_penalty
  # Inside an unlisted word (already paid for): letters stay, a boundary or EOS leaves.
  penalty[off] = 0.0
  next_state[off, [boundary_id, eos_id]] = ROOT
  return Tables(next_state, penalty)


def for_tokenizer(words: Iterable[str], tokenizer, eos_id: int, vocab_size: int,
                  oov_penalty: float) -> Tables:
  """`build` for a sentencepiece letter model: each word's ids after its boundary piece."""
  boundary = tokenizer.encode("a", add_eos=False)[0]

  def letter_ids(word):
    ids = list(tokenizer.encode(word, add_eos=False))
    return ids[1:] if ids and ids[0] == boundary else ids
  return build(words, letter_ids, boundary, eos_id, vocab_size, oov_penalty)


def decode_kwargs(config, tokenizer, words: Callable[[], Iterable[str]]) -> dict:
  """What beam search takes for config.decoding.oov_penalty: the trie of `words()` (read
  only when the penalty applies), or nothing."""
  penalty = config.decoding.oov_penalty
  if penalty <= 0 or config.decoding.method != "beam":
    return {}
  vocab_size = padded_vocab_size(max(tokenizer.vocab_size, 1))
  return {"lexicon": for_tokenizer(words(), tokenizer, EOS_ID, vocab_size, penalty)}


def step_fn(inner, tables: Tables):
  """A beam step adding the trie's penalties to `inner`'s log-scores; the cache becomes
  (inner cache, state [N]): each beam's trie state after the token it is fed."""
  next_state, penalty = jnp.asarray(tables.next_state), jnp.asarray(tables.penalty)

  def step(tokens_N, i, cache):
    inner_cache, state_N = cache
    state_N = jnp.where(i == 0, ROOT, next_state[state_N, tokens_N])
    scores_NV, inner_cache = inner(tokens_N, i, inner_cache)
    return scores_NV + penalty[state_N], (inner_cache, state_N)

  return step


def log_scores(step, mask_logits):
  """A decoder step's logits as log-probabilities (for wrapping in `step_fn`)."""
  def wrapped(tokens_N, i, cache):
    logits_NV, cache = step(tokens_N, i, cache)
    return jax.nn.log_softmax(mask_logits(logits_NV.astype(jnp.float32)), axis=-1), cache
  return wrapped
