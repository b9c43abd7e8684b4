"""Atomic file writes: a temp file in the target folder, fsync, then rename over the target.

A crash or an interrupt leaves either the old file or the new one, never a half-written file.
Temp files are named ``.NAME.XXXXXXXX.tmp``; :func:`remove_stale_temps` deletes those an
interrupted write left behind. Written files get the mode the user's umask gives (as
``open()`` would), not the private 0600 of the temp file. A target that is a stream (a
character device such as ``/dev/null``, or a named pipe) is written directly, never replaced.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from hmfss.errors import HmfssError

# ".NAME." + 8 characters of tempfile's alphabet + ".tmp": what atomic_write creates
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def _umask_mode() -> int:
    """0666 minus the process umask: the mode ``open()`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def is_own_temp(name: str) -> bool:
    """Whether ``name`` has the shape of an :func:`atomic_write` temp file."""
    return _TEMP_NAME.match(name) is not None


def remove_stale_temps(folder: str | Path, older_than: float = 60.0) -> list[Path]:
    """Delete the temp files of interrupted atomic writes in ``folder`` (not recursive).

    Only names of hmfss's own pattern (``.NAME.XXXXXXXX.tmp``) untouched for ``older_than``
    seconds are removed, so that a write in progress by another hmfss process in the same
    folder is left alone (a folder with a single writer, such as a run directory, may pass 0).
    Call it when a command starts writing into a folder. Returns what it removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for path in folder.iterdir():
        if _is_stage(path) and now - path.stat().st_mtime >= older_than:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            continue
        if not is_own_temp(path.name) or path.is_symlink() or not path.is_file():
            continue
        if now - path.stat().st_mtime >= older_than:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def is_stream(path: Path) -> bool:
    """Whether ``path`` exists as a character device or a named pipe (written, not replaced)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_replaceable(path: Path) -> None:
    """Refuse a target that exists but is neither a regular file nor a stream (a folder, a
    block device, a socket): replacing it would destroy it."""
    if path.exists() and not path.is_file() and not is_stream(path):
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise HmfssError(f"cannot write {path}: it is {kind}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(handle)`` on a temp file in the same folder, fsync, rename over ``path``.

    A crash leaves either the old file or the new one, never a half-written file. An error of
    the file system (full, read-only, no such folder) is an :class:`HmfssError` naming ``path``.
    """
    path = Path(path)
    check_replaceable(path)
    if is_stream(path):
        with open(path, "wb") as handle:
            write(handle)
        return path
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise HmfssError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically (see :func:`atomic_write`)."""
    import torch  # kept out of module import: atomic.py is used by torch-free tools

    return atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(data))


_STAGE_PREFIX = ".staged."


def _is_stage(path: Path) -> bool:
    """A folder :func:`staged_folder` made (``.staged.XXXXXXXX.tmp``)."""
    return path.name.startswith(_STAGE_PREFIX) and is_own_temp(path.name) and path.is_dir() and not path.is_symlink()


@contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """A hidden temp folder inside ``folder`` to write into; when the block ends without an
    error its files move into ``folder`` (replacing same-named ones), after an error they are
    deleted (with ``folder`` itself if this made it and it is empty): a failed run leaves no
    partial set of outputs; a killed run's stage goes when the next one starts."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)  # a killed run's stage
    stage = Path(tempfile.mkdtemp(prefix=_STAGE_PREFIX, suffix=".tmp", dir=folder))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    for path in sorted(stage.iterdir()):
        os.replace(path, folder / path.name)
    stage.rmdir()
