"""Translation quality with sacrebleu, on detokenized text."""

from __future__ import annotations

from collections.abc import Sequence

import sacrebleu


def translation_scores(hypotheses: Sequence[str], references: Sequence[str],
                       with_signatures: bool = False):
  """Corpus BLEU (13a tokenization) and chrF of hypotheses against one reference each.

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
  }
  if with_signatures:
    return scores, {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
  return scores
