"""``hmfss study``: the demo's comparison repeated over seeds.

1. generate the synthetic benchmark once (``out/data``; the data seed is the same for every run);
2. train and test every (variant, seed) (:mod:`hmfss.study.runs`), ``jobs`` processes at a time
   with ``threads`` torch threads each; finished runs are kept, so a rerun resumes;
3. aggregate over seeds (:mod:`hmfss.study.aggregate`), write ``summary.json`` and ``report.md``
   with its figures (:mod:`hmfss.study.report`).

A study folder is marked by ``study.json``, which records the settings its runs share; a rerun
with other settings of that kind is refused, more seeds or variants extend the study.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from hmfss.atomic import atomic_write_text
from hmfss.demo.steps import generate_benchmark
from hmfss.errors import HmfssError
from hmfss.evaluation.timing import cpu_model
from hmfss.study.aggregate import summarise
from hmfss.study.report import draw_figures, write_report
from hmfss.study.runs import load_result, say, work
from hmfss.study.settings import BASELINE, SHOTS, StudySettings, check_settings, run_name

MARKER = "study.json"


def run_study(out: Path, s: StudySettings, command: str | None = None) -> Path:
    """Run (or resume) the study into ``out``; returns the path of ``report.md``."""
    check_settings(s)
    start = time.perf_counter()
    marker = _prepare_out(out, s)
    if not marker.get("data_ready"):
        say(f"generating the synthetic benchmark ({s.classes} classes x {s.images_per_class} images, {s.size}px)")
        shutil.rmtree(out / "data", ignore_errors=True)
        generate_benchmark(out / "data", s.demo())
        marker["data_ready"] = True
        _write_marker(out, marker)
    tasks = [(v, seed) for seed in s.seeds for v in s.variants if load_result(out, v, seed) is None]
    total = len(s.seeds) * len(s.variants)
    say(f"{total - len(tasks)} of {total} runs already done; {len(tasks)} to run "
        f"({s.jobs} process(es) x {s.threads} thread(s))")
    failed = _run_all(out, s, tasks)
    if failed:
        raise HmfssError(f"{len(failed)} of {len(tasks)} runs failed ({', '.join(run_name(v, k) for v, k in failed)}; "
                         f"see above); finished runs are kept: rerun the same command to resume")
    results = {(v, seed): load_result(out, v, seed) for seed in s.seeds for v in s.variants}
    summary = summarise(results, s.variants, s.seeds, s.val_thresholds, BASELINE, SHOTS)
    summary["findings"]["size"] = s.size
    summary["settings"] = asdict(s)
    summary["command"] = command
    summary["machine"] = machine(s)
    summary["timing"] = {"wall_seconds": time.perf_counter() - start, "runs_trained_now": len(tasks),
                         "run_seconds": {run_name(v, k): r["seconds"] for (v, k), r in results.items()}}
    draw_figures(out, summary)
    report = write_report(out / "report.md", summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    marker["status"] = "done"
    _write_marker(out, marker)
    return report


def _run_all(out: Path, s: StudySettings, tasks: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Run ``tasks``; returns those that failed (after printing why). Every other run goes on."""
    failed = []
    if s.jobs == 1 or len(tasks) <= 1:
        before = torch.get_num_threads()
        torch.set_num_threads(s.threads)
        try:
            outcomes = [work((out, s, v, seed)) for v, seed in tasks]
        finally:
            torch.set_num_threads(before)
    else:
        # spawned workers read the environment when they start torch: idle OpenMP threads should sleep
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(s.jobs, len(tasks))) as pool:
            outcomes = list(pool.imap_unordered(work, [(out, s, v, seed) for v, seed in tasks]))
            pool.close()
            pool.join()
    for variant, seed, error in outcomes:
        if error is not None:
            say(f"{run_name(variant, seed)} failed:\n{error.rstrip()}")
            failed.append((variant, seed))
    return failed


def _prepare_out(out: Path, s: StudySettings) -> dict[str, Any]:
    """Refuse a foreign non-empty folder or a study with another design; the folder's marker."""
    if out.exists() and not out.is_dir():
        raise HmfssError(f"--out {out} exists and is not a folder")
    path = out / MARKER
    if out.is_dir() and any(out.iterdir()) and not path.is_file():
        raise HmfssError(f"--out {out} is not empty and holds no earlier study; choose another folder")
    marker: dict[str, Any] = {"design": s.design()}
    if path.is_file():
        try:
            marker = json.loads(path.read_text())
            before = marker["design"]
        except (ValueError, KeyError, TypeError, OSError):
            raise HmfssError(f"{path} is not the marker of a study; choose another folder") from None
        changed = [k for k, v in s.design().items() if before.get(k) != v]
        if changed:
            k = changed[0]
            raise HmfssError(f"--out {out} holds a study with {k.replace('_', '-')} {before.get(k)}, not "
                             f"{s.design()[k]}: its runs cannot be reused; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    marker["status"] = "running"
    _write_marker(out, marker)
    return marker


def _write_marker(out: Path, marker: dict[str, Any]) -> None:
    atomic_write_text(out / MARKER, json.dumps(marker, indent=1) + "\n")


def machine(s: StudySettings) -> dict[str, Any]:
    """What the numbers were computed on (the same seeds give the same numbers on the same kind)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "jobs": s.jobs, "threads_per_job": s.threads,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
