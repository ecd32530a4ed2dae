"""What the tasks say about the data they leave out."""

import re

from transformer_jax.kinds.translation import pipeline
from transformer_jax.kinds.translation.task import TranslationTask

from conftest import tiny_config, write_parallel_tsv


def test_translation_says_how_many_eval_pairs_are_too_long(tmp_path, capsys):
  tsv = write_parallel_tsv(tmp_path / "corpus.tsv", repeats=30)
  c = tiny_config(**{"data.source": "files", "data.train_files": (tsv,),
                     "max_target_length": 16, "num_eval_bleu_examples": 6,
                     "num_predict_examples": -1})
  task = TranslationTask(c, str(tmp_path), is_writer=True)
  out = capsys.readouterr().out
  validation = task.corpus.validation
  dropped = pipeline.count_too_long(validation, task.tokenizer, 16)
  assert 0 < dropped < len(validation)
  assert (f"note: validation: {dropped} of {len(validation)} pairs are longer than "
          "max_target_length=16 tokens: left out of eval/loss") in out
  assert re.search(r"note: validation \(eval/bleu\): \d of 6 sources are longer than "
                   r"max_target_length=16 tokens: cut to that length before decoding", out)
  assert "note: test (test/bleu): " in out

  quiet = TranslationTask(tiny_config(**{"data.source": "files", "data.train_files": (tsv,),
                                         "max_target_length": 64}), str(tmp_path), True)
  assert quiet is not None and "note:" not in capsys.readouterr().out
