"""Trains, evaluates and checkpoints a Transformer; re-running resumes.

  python train.py --config=configs/base.py [--workdir=runs/base] [--config.num_train_steps=100]
"""

import time

_STARTED = time.monotonic()  # before the heavy imports: time/startup counts them.

import os  # noqa: E402

from transformer_jax.train import hugepages  # noqa: E402 (standard library only)

# Before anything heavy: with malloc on transparent huge pages the train step takes 13x
# fewer page faults (hugepages.py). Starts this command again, once, where it helps.
hugepages.reexec()

# numpy's BLAS runs inside the input pipeline's threads (speech: the log-mel filter
# bank), beside XLA's own compute threads; its own thread pool would only spin against
# them (on 2 busy cores a [200, 201] x [201, 80] product took 8 ms instead of 0.1 ms).
# Set before numpy loads; a value in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

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
  from transformer_jax.errors import USER_ERRORS  # pylint: disable=import-outside-toplevel
  from transformer_jax.tools import cli  # pylint: disable=import-outside-toplevel
  from transformer_jax.train import loop as trainer  # pylint: disable=import-outside-toplevel

  config_path = flags.FLAGS["config"].config_filename
  if not os.path.isfile(config_path.split(":", 1)[0]):
    cli.exit_with_error(f"--config={config_path}: no such file")
  try:
    config = _CONFIG.value
  except Exception as e:  # pylint: disable=broad-except
    cli.exit_with_error(f"--config={config_path}: cannot load it: {type(e).__name__}: "
             f"{str(e).splitlines()[-1] if str(e) else ''}")
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(config_path))[0])
  logging.set_verbosity(logging.WARNING)
  cli.quiet_orbax()
  print(f"workdir: {workdir}", flush=True)
  try:
    trainer.train_and_evaluate(config, workdir, started=_STARTED)
  except USER_ERRORS as e:
    cli.exit_with_error(str(e), hard=True)


if __name__ == "__main__":
  from transformer_jax.tools import cli  # noqa: E402 (light: absl only)
  app.run(main, flags_parser=cli.parse_flags)
