"""One run of a study: train (or resume) one (variant, seed), evaluate its best checkpoint on the
held-out test classes, write ``runs/<name>/result.json``.

A run whose result.json exists is done and never trained again; one interrupted during training
resumes from its ``last.pt`` (:mod:`hmfss.training.loop`: it ends with the weights an
uninterrupted run would have), one interrupted before its first checkpoint starts again. Once
result.json is written the run's ``last.pt`` is removed (``best.pt`` stays, for ``hmfss predict``).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from hmfss.atomic import atomic_write_text
from hmfss.demo.steps import heldout_episode_sets, heldout_results
from hmfss.study.aggregate import cumulative_episodes
from hmfss.study.settings import StudySettings, run_config, run_name
from hmfss.training.loop import train

RESULT = "result.json"


def say(message: str) -> None:
    print(f"[study] {message}", file=sys.stderr, flush=True)


def result_path(out: Path, variant: str, seed: int) -> Path:
    return out / "runs" / run_name(variant, seed) / RESULT


def load_result(out: Path, variant: str, seed: int) -> dict[str, Any] | None:
    """The result.json of a finished run, None if it has none yet."""
    path = result_path(out, variant, seed)
    return json.loads(path.read_text()) if path.is_file() else None


def execute(out: Path, s: StudySettings, variant: str, seed: int) -> dict[str, Any]:
    """Train (or resume), evaluate and record one run; a finished run is only read back."""
    done = load_result(out, variant, seed)
    if done is not None:
        return done
    cfg = run_config(out, s, variant, seed)
    run_dir = Path(cfg.logdir)
    resume = (run_dir / "config.yaml").is_file() or (run_dir / "last.pt").is_file()
    say(f"{run_name(variant, seed)}: " + ("resuming" if (run_dir / "last.pt").is_file() else "training"))
    tick = time.perf_counter()
    result = train(cfg, resume=resume, console=False)
    trained = time.perf_counter() - tick
    data = out / "data"
    episode_sets = heldout_episode_sets(data, s.demo())
    tests = heldout_results(data, run_dir / "best.pt", episode_sets, s.size)
    history = result.history
    record = {
        "variant": variant, "seed": seed, "best_val_miou": result.best_miou, "best_epoch": result.best_epoch,
        "curve": {"episodes": cumulative_episodes(history), "val_miou": [row["val_miou"] for row in history],
                  "train_loss": [row["train_loss"] for row in history]},
        **tests,
        # timings are not results: they differ from run to run (and cover only the last part of a resumed run)
        "seconds": {"train": trained, "test": time.perf_counter() - tick - trained}, "resumed": resume,
        "threads": torch.get_num_threads(),
    }
    atomic_write_text(result_path(out, variant, seed), json.dumps(record, indent=1) + "\n")
    (run_dir / "last.pt").unlink(missing_ok=True)  # only needed to resume: done now (2/3 of the run's bytes)
    say(f"{run_name(variant, seed)}: test mIoU {tests['test_1shot']['miou']:.2f} 1-shot, "
        f"{tests['test_5shot']['miou']:.2f} 5-shot ({trained:.0f} s training)")
    return record


def work(task: tuple[Path, StudySettings, str, int]) -> tuple[str, int, str | None]:
    """Pool entry: run one task with the study's torch threads; (variant, seed, traceback or None)."""
    out, s, variant, seed = task
    torch.set_num_threads(s.threads)
    try:
        execute(out, s, variant, seed)
    except Exception:  # noqa: BLE001 - reported by the parent, the other runs go on
        return variant, seed, traceback.format_exc()
    return variant, seed, None
