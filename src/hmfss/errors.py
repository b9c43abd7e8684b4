"""User-facing errors.

Everything a user can get wrong (a missing file, a mask of the wrong size, a checkpoint that
does not fit the model) raises :class:`HmfssError` with a one-line message naming the file or
value. The CLI prints that line and exits with status 2; library callers can catch it.
"""

from __future__ import annotations


class HmfssError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
