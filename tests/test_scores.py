"""Scores: sacrebleu BLEU/chrF with signatures; classifier accuracy, precision, recall, F1."""

import numpy as np
import pytest

from transformer_jax.metrics import objectives, scores as evaluation, summaries


def test_translation_scores_and_signatures():
  hyps = ["Die Datei wurde gespeichert", "Zugriff verweigert"]
  refs = ["Die Datei wurde gespeichert", "Zugriff abgelehnt"]
  scores, sigs = evaluation.translation_scores(hyps, refs, with_signatures=True)
  assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
  assert "tok:13a" in sigs["bleu"] and "nrefs:1" in sigs["chrf"]
  assert evaluation.translation_scores(refs, refs)["bleu"] == pytest.approx(100.0)
  with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
    evaluation.translation_scores(hyps, refs[:1])


def test_classification_scores_by_hand():
  # true \ predicted: class 0: 3 right, 1 as class 1; class 1: 2 right; class 2: 1 as class 0.
  confusion = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 0]])
  s = evaluation.classification_scores(confusion, ["a", "b", "c"])
  assert s["accuracy"] == pytest.approx(5 / 7)
  p = [3 / 4, 2 / 3, 0.0]
  r = [3 / 4, 1.0, 0.0]
  f1 = [2 * a * b / (a + b) if a + b else 0.0 for a, b in zip(p, r)]
  assert s["precision"] == pytest.approx(np.mean(p))
  assert s["recall"] == pytest.approx(np.mean(r))
  assert s["f1"] == pytest.approx(np.mean(f1))
  assert [c["support"] for c in s["per_class"]] == [4, 2, 1]
  assert s["per_class"][1] == {"label": "b", "support": 2, "precision": pytest.approx(2 / 3),
                               "recall": 1.0, "f1": pytest.approx(0.8)}
  # A class absent from the split does not count in the macro average.
  absent = evaluation.classification_scores(np.array([[2, 0], [0, 0]]))
  assert absent["f1"] == 1.0 and absent["recall"] == 1.0


def test_confusion_from_logits_skips_padding_rows():
  logits = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
  labels = np.array([0, 2, 2, -1])  # the last row is padding
  m = objectives.classification_metrics(logits, labels, with_confusion=True)
  np.testing.assert_array_equal(m["confusion_sum"], [[1, 0, 0], [0, 0, 0], [0, 1, 1]])
  assert float(m["weight_sum"]) == 3 and float(m["correct_sum"]) == 2
  summary = summaries.summarize(m)
  assert summary["accuracy"] == pytest.approx(2 / 3)
  assert summary["f1"] == pytest.approx(evaluation.classification_scores(
      m["confusion_sum"])["f1"])


def test_placeholder_match_counts_sentences_that_keep_their_placeholders_exactly():
  refs = ["Datei %s nicht gefunden", "%d von %d Dateien", "Kein Platzhalter", "{name} fehlt"]
  hyps = ["Datei %s fehlt", "%d Dateien", "egal %s", "{name} fehlt %s"]
  # Of the 3 references with placeholders, only the first keeps them exactly
  # (the second lost a %d, the fourth gained a %s).
  assert evaluation.placeholder_match(hyps, refs) == pytest.approx(100 / 3)
  assert evaluation.placeholder_match(["x"], ["kein"]) == 100.0
  scores = evaluation.translation_scores(hyps, refs)
  assert scores["placeholders"] == pytest.approx(100 / 3)


def test_word_and_character_error_rates_by_hand():
  # "open the file" -> "open a file": 1 substitution; "close it" -> "close it now": 1
  # insertion: 2 errors over 5 reference words. Characters (spaces included): the -> a is
  # 1 substitution + 2 deletions, " now" 4 insertions: 7 over 13 + 8 = 21.
  scores = evaluation.transcription_scores(["Open a file.", "close it, NOW"],
                                           ["open the file", "Close it."])
  assert scores["wer"] == pytest.approx(40.0)
  assert scores["cer"] == pytest.approx(100 * 7 / 21)
  assert evaluation.transcription_scores(["a b"], ["a b"]) == {"wer": 0.0, "cer": 0.0}
  with pytest.raises(ValueError, match=r"reference 1 \('\.\.\.'\) has no words"):
    evaluation.transcription_scores(["a", "b"], ["a", "..."])
  with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
    evaluation.transcription_scores(["a", "b"], ["a"])
