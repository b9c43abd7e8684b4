"""Settings of the demo, and the training configuration it gives each of its two models."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from hmfss.data.synthetic import SyntheticParams, check_params
from hmfss.errors import HmfssError
from hmfss.inputs import MAX_THREADS, check_at_most, check_seed
from hmfss.training.config import TrainConfig


@dataclass
class DemoSettings:
    classes: int = 100
    images_per_class: int = 10
    size: int = 96  # generated image size = network input size
    seed: int = 0
    test_ratio: float = 0.3
    val_ratio: float = 0.1
    bsz: int = 8
    lr: float = 1e-3
    epochs: int = 6
    episodes_per_epoch: int = 400  # nominal; the speed check lowers it on slow or busy machines
    val_episodes: int = 60
    test_episodes: int = 300  # 1-shot: every test image once as query
    test_episodes_5shot: int = 150  # 5-shot costs ~5x more per episode
    # both models need ~1000 episodes to leave the initial all-background phase; below ~2000
    # the comparison would only say which one left it first
    min_episodes_per_epoch: int = 320
    budget_minutes: float = 6.5
    calibrate: bool = True
    threads: int = 2
    examples: int = 6


# a run of seconds for the tests: tiny benchmark, a few episodes, no speed check
QUICK = dict(classes=8, images_per_class=3, size=32, bsz=2, epochs=2, episodes_per_epoch=4, val_episodes=3,
             test_episodes=4, test_episodes_5shot=4, calibrate=False, examples=2)

MASKINGS = ("fm", "hm")
NAMES = {"fm": "HSNet-FM", "hm": "HSNet-HM"}


def synthetic_params(s: DemoSettings) -> SyntheticParams:
    """The synthetic benchmark of ``s`` (seed ``s.seed``)."""
    return SyntheticParams(classes=s.classes, images_per_class=s.images_per_class, size=s.size, seed=s.seed,
                           test_ratio=s.test_ratio, val_ratio=s.val_ratio)


def check_settings(s: DemoSettings) -> None:
    """One-line HmfssError for settings the demo cannot run with, before anything is written."""
    check_params(synthetic_params(s))
    for name in ("bsz", "epochs", "episodes_per_epoch", "val_episodes", "test_episodes", "test_episodes_5shot",
                 "threads", "examples"):
        if getattr(s, name) < 1:
            raise HmfssError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(s, name)}")
    check_at_most(s.threads, "--threads", MAX_THREADS)
    check_seed(s.seed, "--seed")
    if not (math.isfinite(s.budget_minutes) and s.budget_minutes > 0):
        raise HmfssError(f"--budget-minutes must be a positive number, got {s.budget_minutes}")


def train_config(out: Path, s: DemoSettings, masking: str) -> TrainConfig:
    """The training run of the model with ``masking`` (same seed, data and budget for both)."""
    data = out / "data"
    return TrainConfig(
        benchmark="fss", datapath=str(data), splits=str(data / "splits"), img_size=s.size,
        arch="hsnet", backbone="efficientnet-lite0", backbone_weights="imagenet", masking=masking,
        lr=s.lr, bsz=s.bsz, epochs=s.epochs, episodes_per_epoch=s.episodes_per_epoch, seed=s.seed,
        val_split="val", val_episodes=s.val_episodes, val_seed=0, val_protocol="seeded",
        logdir=str(out / "runs" / f"hsnet-{masking}"), workers=0, device="cpu", amp=False,
        tensorboard=True, progress=True,
    )
