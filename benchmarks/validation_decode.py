"""Validation BLEU/chrF of a trained translation run under decoding choices (recipe tuning).

  python benchmarks/validation_decode.py --workdir=runs/base --variant=greedy \
      --variant=beam:1.0 --variant=avg:4

Each variant decodes the run's whole validation split (from its config.json; never the
test split) and prints sacrebleu's corpus BLEU and chrF:
  greedy      greedy decoding, the latest checkpoint
  beam:A      4 beams, length penalty alpha A, the latest checkpoint
  keep:A      beam:A keeping each source's placeholders (decoding.keep_placeholders)
  avg:K       greedy with the mean of the last K checkpoints' parameters
"""

import os
import time

import jax
import sacrebleu
from absl import app, flags

from transformer_jax import config as config_lib
from transformer_jax.checkpoint import params as checkpoint_params
from transformer_jax.kinds.translation import corpus as sources
from transformer_jax.metrics import scores as evaluation
from transformer_jax.tools import loaded_run as inference

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py workdir (translation).",
                               required=True)
_VARIANTS = flags.DEFINE_multi_string("variant", ["greedy"],
                                      "greedy | beam:ALPHA | keep:ALPHA | avg:K")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Sentences decoded together.")


def main(argv):
  del argv
  wd = _WORKDIR.value
  config = config_lib.from_json(os.path.join(wd, "config.json"))
  pairs = sources.load_corpus(config.data).validation
  src, ref = [s for s, _ in pairs], [t for _, t in pairs]
  steps = sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints")) if s.isdigit())
  for variant in _VARIANTS.value:
    name, _, arg = variant.partition(":")
    t0 = time.perf_counter()
    if name in ("beam", "keep"):
      run = inference.load_run(wd, tool="translate", batch_size=_BATCH.value, decoding={
          "method": "beam", "beam_size": 4, "alpha": float(arg),
          "keep_placeholders": name == "keep"})
      used = steps[-1:]
    elif name in ("greedy", "avg"):
      run = inference.load_run(wd, tool="translate", batch_size=_BATCH.value,
                               decoding={"method": "greedy"})
      used = steps[-int(arg or 1):]
      if len(used) > 1:
        with run.programs.context():
          each = [checkpoint_params.restore_params(wd, s, run.programs.abstract_state.params)[0]
                  for s in used]
        run.params = jax.tree.map(lambda *xs: sum(xs) / len(xs), *each)
    else:
      raise app.UsageError(f"--variant={variant!r}: greedy | beam:ALPHA | keep:ALPHA | avg:K")
    hyp = inference.translate_lines(run, src)
    bleu, chrf = sacrebleu.corpus_bleu(hyp, [ref]), sacrebleu.corpus_chrf(hyp, [ref])
    kept = evaluation.placeholder_match(hyp, ref)
    print(f"{variant:>10}  steps {used}  BLEU {bleu.score:.2f}  chrF {chrf.score:.2f}  "
          f"placeholders kept {kept:.1f}%  ({len(src)} sentences, "
          f"{time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
  app.run(main)
