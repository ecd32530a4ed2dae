"""glibc's malloc on transparent huge pages, for the processes that train.

XLA's CPU runtime allocates a train step's temporaries through malloc anew every
step; glibc serves big blocks as fresh mmaps and unmaps them on free, so each step
of the base model touches about 240 MB of new 4 KiB pages: some 60,000 minor page
faults per step, a fifth of the process's CPU time spent in the kernel. With the
glibc tunable `glibc.malloc.hugetlb=1` (glibc 2.35 and later; older ones ignore
it) malloc asks for transparent huge pages (madvise), which the kernel fills
2 MiB at a time: 13x fewer faults and a 1.2-1.3x faster base train step on a
2-core AVX-512 CPU (BUILD_NOTES.md, "Page faults").

glibc reads its tunables once, when the process starts, so `reexec()` starts the
same command again (same PID, same arguments and interpreter options) with the
tunable added to GLIBC_TUNABLES. It does nothing where the tunable is set
already, off glibc Linux, where the kernel's transparent huge pages are
`never`, or with TRANSFORMER_JAX_HUGEPAGES=0 in the environment.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "TRANSFORMER_JAX_HUGEPAGES"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def wanted() -> bool:
  """Whether `reexec()` would restart this process."""
  if os.environ.get(OPT_OUT, "1") == "0" or not sys.platform.startswith("linux"):
    return False
  if "glibc.malloc.hugetlb" in os.environ.get("GLIBC_TUNABLES", ""):
    return False  # set already (by an earlier reexec, or by the user).
  if platform.libc_ver()[0] != "glibc":
    return False
  try:
    with open(THP, encoding="ascii") as f:
      return "[never]" not in f.read()
  except OSError:
    return False


def active() -> bool:
  """Whether this process started with the tunable set (by `reexec()` or by the user)."""
  return TUNABLE in os.environ.get("GLIBC_TUNABLES", "").split(":")


def reexec() -> None:
  """Restarts this process with malloc on transparent huge pages (see above); returns
  where it does not."""
  if not wanted():
    return
  tunables = os.environ.get("GLIBC_TUNABLES")
  os.environ["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, sys.orig_argv)
