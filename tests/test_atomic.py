"""Atomic writes: files get the umask's mode; stale temp files of hmfss's own naming go."""

import errno
import os
import stat
import threading
import time

import pytest

from hmfss.atomic import atomic_write, atomic_write_text, is_own_temp, remove_stale_temps
from hmfss.errors import HmfssError


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_file_takes_the_umask_mode(tmp_path, umask):
    before = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "hi")
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("hi")
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_stale_temps_of_our_naming_are_removed(tmp_path):
    ours = [".last.pt.k2j_9abc.tmp", ".best.pt.abcdefgh.tmp", ".x_mask.png.0123abcd.tmp"]
    theirs = [".last.pt.tmp", "last.pt.abcdefgh.tmp", ".a.ABCDEFGH.tmp", ".a.abc.tmp", "keep.pt", ".hidden"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()
    hour_ago = time.time() - 3600
    for path in tmp_path.iterdir():
        os.utime(path, (hour_ago, hour_ago))
    (tmp_path / ".fresh.pt.abcdefgh.tmp").write_text("being written by another process")
    theirs.append(".fresh.pt.abcdefgh.tmp")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs + [".dir.abcdefgh.tmp"])
    assert remove_stale_temps(tmp_path / "missing") == []
    assert [p.name for p in remove_stale_temps(tmp_path, older_than=0)] == [".fresh.pt.abcdefgh.tmp"]


def test_the_pattern_matches_what_atomic_write_creates(tmp_path, monkeypatch):
    seen = []
    import tempfile

    real = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        seen.append(os.path.basename(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    atomic_write_text(tmp_path / "history.jsonl", "{}")
    assert len(seen) == 1 and is_own_temp(seen[0])


def test_a_named_pipe_is_written_into_not_replaced(tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()))
    reader.start()
    atomic_write_text(pipe, "streamed\n")
    reader.join(timeout=10)
    assert received == ["streamed\n"]
    assert stat.S_ISFIFO(pipe.stat().st_mode)  # still the pipe, not a regular file renamed over it


def test_a_folder_is_never_replaced(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(HmfssError, match="cannot write .*/d: it is a folder"):
        atomic_write_text(tmp_path / "d", "x")
    assert (tmp_path / "d").is_dir()


def test_a_file_system_error_names_the_file_and_leaves_no_temp(tmp_path):
    (tmp_path / "r.json").write_text("old")

    def disk_full(handle):
        handle.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(HmfssError, match=f"cannot write .*/r.json: {os.strerror(errno.ENOSPC)}"):
        atomic_write(tmp_path / "r.json", disk_full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert (tmp_path / "r.json").read_text() == "old"


def test_a_staged_folder_moves_its_files_in_only_when_the_block_succeeds(tmp_path):
    from hmfss.atomic import staged_folder

    out = tmp_path / "vis"
    with staged_folder(out) as stage:
        (stage / "a.jpg").write_text("1")
        assert sorted(p.name for p in out.iterdir()) == [stage.name]  # nothing in place yet
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg"]
    with pytest.raises(RuntimeError):
        with staged_folder(out) as stage:
            (stage / "a.jpg").write_text("2")
            (stage / "b.jpg").write_text("2")
            raise RuntimeError("the third image is truncated")
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg"] and (out / "a.jpg").read_text() == "1"
    with pytest.raises(RuntimeError):  # a folder the failed block made goes too
        with staged_folder(tmp_path / "new" / "vis"):
            raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == []


def test_a_killed_runs_stage_is_removed_by_the_next(tmp_path):
    from hmfss.atomic import staged_folder

    left = tmp_path / ".staged.abcd1234.tmp"  # what a kill -9 leaves
    left.mkdir()
    (left / "x.jpg").write_text("half")
    os.utime(left, (time.time() - 3600,) * 2)
    with staged_folder(tmp_path) as stage:
        (stage / "y.jpg").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.jpg"]
