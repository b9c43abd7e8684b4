"""The run's per-epoch history files: ``history.jsonl`` (every key of a row) and
``history.csv`` (:data:`HISTORY_FIELDS`), written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from hmfss.atomic import atomic_write_text

HISTORY_FIELDS = ("epoch", "step", "train_loss", "train_miou", "train_fb_iou", "val_miou", "val_fb_iou",
                  "best_miou", "best_epoch", "lr", "episodes", "episodes_per_s", "epoch_seconds", "data_wait_seconds")


def history_texts(history: list[dict[str, Any]]) -> dict[str, str]:
    """Contents of history.jsonl (every key) and history.csv (:data:`HISTORY_FIELDS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_FIELDS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_FIELDS})
    return {"history.jsonl": "".join(json.dumps(row) + "\n" for row in history), "history.csv": buf.getvalue()}


def holds(path: Path, text: str) -> bool:
    """Whether the file ``path`` exists and holds exactly ``text``."""
    try:
        return path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """history.jsonl and history.csv (see :func:`history_texts`), atomically."""
    for name, text in history_texts(history).items():
        atomic_write_text(run_dir / name, text)
