"""Process settings every engine process applies first (CLI, server, training worker).

Notes
- glibc hands out blocks over 32 MiB with `mmap` and gives them back on `free`, so
  each model pass that allocates big tensors (logits, activation chunks) faults its
  pages in afresh: `saescope eval` spent a quarter of its time in the kernel
  (3.3M minor page faults for 16k tokens). Raising the mmap and trim thresholds to
  1 GiB keeps such blocks in the heap for reuse (0.7M faults, a quarter of the system
  time). Freed memory stays with the process, which the workspace's budget already
  assumes; nothing else changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
REUSE_BELOW = 1 << 30


def keep_big_blocks() -> bool:
    """Keep freed blocks up to `REUSE_BELOW` bytes for reuse (glibc only; elsewhere a
    no-op). True when applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, REUSE_BELOW)) and bool(mallopt(_M_TRIM_THRESHOLD, REUSE_BELOW))
