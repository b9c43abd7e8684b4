"""Steps of the demo that ``hmfss study`` repeats: the benchmark, the test episodes, and the
evaluation of a checkpoint on them by object size (the study runs them per seed and masking)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hmfss.checkpoint import load_model
from hmfss.data.dataset import EpisodeDataset, episode_loader
from hmfss.data.episodes import Episode, make_episodes
from hmfss.data.readers import make_reader
from hmfss.data.splits import load_split
from hmfss.data.synthetic import generate
from hmfss.demo.settings import DemoSettings, synthetic_params
from hmfss.evaluation.evaluate import evaluate
from hmfss.evaluation.metrics import SegmentationMeter


@contextmanager
def timed(stages: dict[str, float], name: str) -> Iterator[None]:
    """Record the seconds the ``with`` block took as ``stages[name]``."""
    tick = time.perf_counter()
    yield
    stages[name] = time.perf_counter() - tick


def generate_benchmark(data: Path, s: DemoSettings) -> dict[str, Any]:
    """The synthetic benchmark of ``s`` (seed ``s.seed``) written to ``data``; its metadata."""
    return generate(data, synthetic_params(s))


def heldout_episodes(data: Path, shots: int, count: int) -> list[Episode]:
    """``count`` seeded ``shots``-shot episodes of the test classes (seed 0: the same for every model)."""
    info = load_split("fss", data / "splits", split="test", datapath=data)
    every = make_episodes(info, shots, max(count, len(info.entries)), seed=0, protocol="seeded")
    if count >= len(every):
        return every
    # fewer episodes than test images: queries spread evenly over the classes (query-order lists)
    return [every[i * len(every) // count] for i in range(count)]


def heldout_episode_sets(data: Path, s: DemoSettings) -> dict[int, list[Episode]]:
    """The 1-shot and 5-shot test episodes of ``s`` ({shots: episodes})."""
    return {1: heldout_episodes(data, 1, s.test_episodes), 5: heldout_episodes(data, 5, s.test_episodes_5shot)}


def heldout_results(data: Path, checkpoint: Path, episode_sets: dict[int, list[Episode]], size: int) -> dict[str, Any]:
    """``test_1shot`` / ``test_5shot`` entries (mIoU, FB-IoU, episodes, size buckets) of one checkpoint."""
    info = load_split("fss", data / "splits", split="test", datapath=data)
    model = load_model(checkpoint)
    entries = {}
    for shots, episodes in episode_sets.items():
        meter = SegmentationMeter(info.class_ids, info.n_classes, info.class_names)
        loader = episode_loader(EpisodeDataset(make_reader("fss", data, info), episodes, size), batch_size=8)
        summary = evaluate(model, loader, meter, progress=sys.stderr.isatty(), total=len(episodes))
        entries[f"test_{shots}shot"] = {"miou": summary["miou"], "fb_iou": summary["fb_iou"],
                                        "episodes": summary["evaluated"], "buckets": summary["buckets"]}
    return entries
