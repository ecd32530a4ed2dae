"""The run's workdir: checked and locked before anything is built; its config.json.

`prepare` fails with a ConfigError naming the path when the workdir cannot hold a
run (a file is in the way, it is not writable, the disk is full) and when another
run holds it. The lock is an `flock` on WORKDIR/.lock, held for the whole run: the
operating system drops it when its process ends, however it ends, so a killed run
never leaves a stale lock; the file only records who held it last.

`check_saved_config` refuses a workdir whose config.json is damaged or belongs to
another model kind; train.py writes its own config.json (`write_config`) only once
the run's state is restored or initialised, so a run that cannot use the workdir
leaves it as it was.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time

import ml_collections

from transformer_jax import config as config_lib
from transformer_jax.errors import ConfigError

LOCK_NAME = ".lock"
MIN_FREE_BYTES = 64 << 20  # below this a checkpoint save is sure to fail.


class Lock:
  """An exclusive hold on a workdir; `release` (or the process's end) lets it go."""

  def __init__(self, path: str, fd: int):
    self.path, self._fd = path, fd

  def release(self) -> None:
    if self._fd >= 0:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = -1


def check(workdir: str) -> None:
  """The workdir is (or can become) a writable folder on a disk with room."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir!r} is a file, not a folder")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir!r}: cannot create it: {e.strerror}") from e
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={workdir!r} is not writable")
  free = shutil.disk_usage(workdir).free
  if free < MIN_FREE_BYTES:
    raise ConfigError(f"--workdir={workdir!r}: the disk has {free / 2**20:.1f} MiB free; "
                      f"a run needs at least {MIN_FREE_BYTES >> 20} MiB for its checkpoints")


def lock(workdir: str) -> Lock:
  """Takes the workdir's lock, or raises ConfigError naming the run that holds it."""
  path = os.path.join(workdir, LOCK_NAME)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir!r}: cannot create {LOCK_NAME}: {e.strerror}") from e
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
    os.close(fd)
    raise ConfigError(f"--workdir={workdir!r} is in use by another run ({holder}); wait for "
                      "it to end, or give another --workdir") from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
  return Lock(path, fd)


def prepare(workdir: str, primary: bool = True) -> Lock | None:
  """Checks the workdir; the primary process locks it (the others share the run)."""
  check(workdir)
  return lock(workdir) if primary else None


def check_saved_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """A workdir's config.json must be readable and of this config's model kind."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  saved = config_lib.from_json(path)  # a damaged one: ConfigError naming it.
  if saved.model.kind != config.model.kind:
    raise ConfigError(
        f"--workdir={workdir!r} holds a {saved.model.kind!r} run ({path}), and this config "
        f"trains {config.model.kind!r}; give another --workdir")


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """WORKDIR/config.json: the run's full config, as the tools and `from_json` read it."""
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
