"""Scores: translation quality with sacrebleu on detokenized text; transcription word and
character error rates with jiwer; classifier accuracy, precision, recall and F1 from a
confusion matrix."""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence

import jiwer
import numpy as np
import sacrebleu

from transformer_jax.data.tokenizer import PLACEHOLDER_RE


def normalize_transcript(text: str) -> str:
  """The form transcripts are scored in: lower case; letters, digits and apostrophes;
  everything else a space; single spaces."""
  text = text.lower().replace("&", " and ")
  text = re.sub(r"[^a-z0-9']+", " ", text)
  return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


def transcription_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
  """Corpus word and character error rates in % (jiwer: substitutions, deletions and
  insertions over the reference's words or characters, summed over all sentences), on
  normalized text. A reference that normalizes to nothing is an error (it has no
  words to get wrong)."""
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
  if not hypotheses:
    raise ValueError("no hypotheses to score")
  refs = [normalize_transcript(r) for r in references]
  hyps = [normalize_transcript(h) for h in hypotheses]
  empty = [i for i, r in enumerate(refs) if not r]
  if empty:
    raise ValueError(f"reference {empty[0]} ({references[empty[0]]!r}) has no words")
  return {"wer": 100.0 * jiwer.wer(refs, hyps), "cer": 100.0 * jiwer.cer(refs, hyps)}


def translation_scores(hypotheses: Sequence[str], references: Sequence[str],
                       with_signatures: bool = False):
  """Corpus BLEU (13a tokenization) and chrF of hypotheses against one reference each,
  and `placeholders`: the share (in %) of the sentences whose reference holds format
  placeholders (`%s`, `%1$d`, `{name}`, ...) that hold exactly the same ones (as a
  multiset) in the hypothesis; 100 when no reference holds any.

  With `with_signatures`, also returns sacrebleu's signature strings, for
  reproducible reporting.
  """
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
  if not hypotheses:
    raise ValueError("no hypotheses to score")
  bleu = sacrebleu.metrics.BLEU(tokenize="13a")
  chrf = sacrebleu.metrics.CHRF()
  refs = [list(references)]
  scores = {
      "bleu": bleu.corpus_score(list(hypotheses), refs).score,
      "chrf": chrf.corpus_score(list(hypotheses), refs).score,
      "placeholders": placeholder_match(hypotheses, references),
  }
  if with_signatures:
    return scores, {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
  return scores


def placeholder_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """% of the references with placeholders whose hypothesis has exactly the same ones."""
  wanted = [collections.Counter(PLACEHOLDER_RE.findall(r)) for r in references]
  pairs = [(h, w) for h, w in zip(hypotheses, wanted) if w]
  if not pairs:
    return 100.0
  same = sum(collections.Counter(PLACEHOLDER_RE.findall(h)) == w for h, w in pairs)
  return 100.0 * same / len(pairs)


def classification_scores(confusion, labels: Sequence[str] | None = None) -> dict:
  """Accuracy and precision / recall / F1, macro-averaged and per class.

  `confusion[t, p]` counts examples of true class t predicted as p. Macro
  averages run over the classes present in the evaluated split (support > 0);
  a class never predicted has precision 0. `per_class` lists, for every class,
  {label, support, precision, recall, f1}.
  """
  confusion = np.asarray(confusion, np.float64)
  if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
    raise ValueError(f"confusion matrix must be square, got shape {confusion.shape}")
  true_positive = np.diag(confusion)
  support = confusion.sum(axis=1)
  predicted = confusion.sum(axis=0)
  precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive),
                        where=predicted > 0)
  recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
  present = support > 0
  total = confusion.sum()
  names = list(labels) if labels is not None else [str(i) for i in range(len(support))]
  return {
      "accuracy": float(true_positive.sum() / total) if total else 0.0,
      "precision": float(precision[present].mean()) if present.any() else 0.0,
      "recall": float(recall[present].mean()) if present.any() else 0.0,
      "f1": float(f1[present].mean()) if present.any() else 0.0,
      "per_class": [{"label": names[i], "support": int(support[i]),
                     "precision": float(precision[i]), "recall": float(recall[i]),
                     "f1": float(f1[i])} for i in range(len(support))],
  }
