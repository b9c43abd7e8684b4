"""User-facing errors.

Everything a user can get wrong (a missing file, a mask of the wrong size, a checkpoint that
does not fit the model) raises :class:`HmfssError` with a one-line message naming the file or
value. The CLI prints that line and exits with status 2; library callers can catch it. An
input too large for the machine's memory fails in PyTorch's allocator; :func:`out_of_memory`
turns that error into one line for the CLI and the web app.
"""

from __future__ import annotations

import re


class HmfssError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


_REQUEST = re.compile(r"(?:tried to allocate|unable to allocate) (\d+ bytes|[\d.]+ ?[KMGTPE]i?B)", re.IGNORECASE)
# what PyTorch's CPU allocators (Linux, Windows), CUDA, cuBLAS and shared memory say when memory runs out
_OUT_OF_MEMORY = ("can't allocate memory", "not enough memory", "out of memory", "ALLOC_FAILED",
                  "Cannot allocate memory")


def _size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


def out_of_memory(exc: BaseException) -> str | None:
    """One line for a failed memory allocation (PyTorch's CPU or GPU allocator, NumPy's,
    Python's), naming the size asked for where the allocator said it; None for other errors.
    Such a failure is no bug: the input was too large for this machine."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or isinstance(exc, RuntimeError) and any(words in text for words in _OUT_OF_MEMORY)):
        return None
    found = _REQUEST.search(text)
    if found is None:
        return "out of memory"
    size = found.group(1)
    if size.endswith(" bytes"):
        size = _size(int(size.split()[0]))
    return f"out of memory (could not allocate {size})"
