"""Keep freed memory in the process for reuse (CPU training).

glibc serves every allocation above 32 MB with a fresh ``mmap`` and returns it to the system
on free, so each training step page-faults its large activations and gradients in again
(hundreds of MB per step at 400 px). Told to use its heap for every size and to keep what is
freed, the allocator hands the same pages back on the next step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep and reuse freed memory (process-wide, from now on).

    Returns whether the setting is in effect (False off Linux/glibc, where it does nothing).
    The process's peak memory may grow somewhat (freed blocks are not returned).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
