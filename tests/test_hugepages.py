"""hugepages.reexec: train.py's restart with glibc's malloc on transparent huge pages.

Real child interpreters; the page faults are the kernel's own count (getrusage)."""

import os
import subprocess
import sys

import pytest

from transformer_jax.train import hugepages

SHOW = ("from transformer_jax.train import hugepages; hugepages.reexec(); import os; "
        "print(os.environ.get('GLIBC_TUNABLES'), hugepages.active())")
# 20 blocks of 64 MiB through malloc, each written and freed: the minor page faults taken.
FAULTS = """
import ctypes, resource
from transformer_jax.train import hugepages
hugepages.reexec()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
  p = libc.malloc(64 << 20)
  ctypes.memset(p, 1, 64 << 20)
  libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _child(code, **env):
  clean = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", hugepages.OPT_OUT)}
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120, env={**clean, **env})
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.strip()


def _available() -> bool:
  saved = {k: os.environ.pop(k) for k in ("GLIBC_TUNABLES", hugepages.OPT_OUT)
           if k in os.environ}
  try:
    return hugepages.wanted()
  finally:
    os.environ.update(saved)


needs_thp = pytest.mark.skipif(not _available(),
                               reason="not glibc Linux with transparent huge pages")


@needs_thp
def test_the_process_restarts_once_with_the_tunable_added_to_the_users_own():
  assert _child(SHOW) == f"{hugepages.TUNABLE} True"
  assert _child(SHOW, GLIBC_TUNABLES="glibc.malloc.check=0") == (
      f"glibc.malloc.check=0:{hugepages.TUNABLE} True")
  # Set already (the restarted process itself, or the user's choice): left alone.
  assert _child(SHOW, GLIBC_TUNABLES="glibc.malloc.hugetlb=0") == "glibc.malloc.hugetlb=0 False"
  assert _child(SHOW, **{hugepages.OPT_OUT: "0"}) == "None False"


@needs_thp
def test_big_blocks_then_take_a_tenth_of_the_page_faults_or_fewer():
  plain = int(_child(FAULTS, **{hugepages.OPT_OUT: "0"}))
  huge = int(_child(FAULTS))
  assert plain > 20 * (64 << 20) // 4096 // 2, plain  # 4 KiB pages: one fault each.
  assert huge * 10 < plain, (huge, plain)
