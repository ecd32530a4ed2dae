"""Trains, evaluates and checkpoints a Transformer; re-running resumes.

  python train.py --config=configs/base.py [--workdir=runs/base] [--config.num_train_steps=100]
"""

import time

_STARTED = time.monotonic()  # before the heavy imports: time/startup counts them.

import os  # noqa: E402
import sys  # noqa: E402

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "Where checkpoints, logs and the tokenizer go "
                               "(default: runs/<config file stem>).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported here so that --help and flag errors stay fast.
  from transformer_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from transformer_jax import trainer  # pylint: disable=import-outside-toplevel
  from transformer_jax.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
  from transformer_jax.data.sources import CorpusError  # pylint: disable=import-outside-toplevel
  from transformer_jax.data.tokenizer import TokenizerError  # pylint: disable=import-outside-toplevel

  config_path = flags.FLAGS["config"].config_filename
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(config_path))[0])
  logging.set_verbosity(logging.WARNING)
  print(f"workdir: {workdir}", flush=True)
  try:
    trainer.train_and_evaluate(_CONFIG.value, workdir, started=_STARTED)
  except (config_lib.ConfigError, CorpusError, TokenizerError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
