"""The bad-input contract of every CLI command, shared by the tables of bad inputs."""

from __future__ import annotations

import re
from pathlib import Path

from hmfss.cli.main import main


def snapshot(root: Path) -> dict:
    """Size and modification time of every file under ``root``."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(root).rglob("*")}


def assert_refused(argv: list[str], message: str, out: Path, capsys) -> None:
    """``hmfss ARGV`` exits 2 with exactly one stderr line matching ``message`` (a regular
    expression or a plain substring), no traceback, and nothing written under ``out``."""
    before = snapshot(out)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(message, lines[0]) or message in lines[0], lines[0]
    assert snapshot(out) == before, "an output file was written, changed or left behind"
