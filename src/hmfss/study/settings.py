"""Settings of a study and the training configuration of each of its runs.

A run is one (masking variant, seed). Everything but the masking and the seed is the demo's
(:func:`hmfss.demo.settings.train_config`): the same benchmark (generated once, data seed fixed),
model, recipe, budget, validation and test episodes, at the demo's nominal budget (no speed check).
The seed sets the head's initial weights and the order of the training episodes, so the runs of
one seed differ only in their masking.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hmfss.demo.settings import DemoSettings, train_config
from hmfss.demo.settings import check_settings as check_demo_settings
from hmfss.errors import HmfssError
from hmfss.inputs import check_seed
from hmfss.masking import STRATEGIES
from hmfss.training.config import TrainConfig

_DEMO = DemoSettings()

VARIANTS = ("fm", "im", "hm", "hm-add", "hm-reverse")  # the maskings a study may compare
BASELINE = "fm"  # paired differences are variant - FM
NAMES = {v: f"HSNet-{v.upper()}" for v in VARIANTS}
SHOTS = (1, 5)


@dataclass
class StudySettings:
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = ("fm", "im", "hm")
    # the demo's benchmark and budget (its nominal values)
    size: int = _DEMO.size
    classes: int = _DEMO.classes
    images_per_class: int = _DEMO.images_per_class
    data_seed: int = 0  # the benchmark's: the same data for every run
    test_ratio: float = _DEMO.test_ratio
    val_ratio: float = _DEMO.val_ratio
    bsz: int = _DEMO.bsz
    lr: float = _DEMO.lr
    epochs: int = _DEMO.epochs
    episodes_per_epoch: int = _DEMO.episodes_per_epoch
    val_episodes: int = _DEMO.val_episodes
    test_episodes: int = _DEMO.test_episodes
    test_episodes_5shot: int = _DEMO.test_episodes_5shot
    # convergence: training episodes until the validation mIoU first reaches each threshold
    val_thresholds: tuple[float, ...] = (10.0, 20.0, 30.0)
    # how it runs (the numbers do not depend on jobs; threads may change the last digits)
    jobs: int = 1
    threads: int = 1

    def demo(self) -> DemoSettings:
        """The demo's settings with this study's benchmark and budget (no speed check)."""
        return replace(_DEMO, size=self.size, classes=self.classes, images_per_class=self.images_per_class,
                       seed=self.data_seed, test_ratio=self.test_ratio, val_ratio=self.val_ratio, bsz=self.bsz,
                       lr=self.lr, epochs=self.epochs, episodes_per_epoch=self.episodes_per_epoch,
                       val_episodes=self.val_episodes, test_episodes=self.test_episodes,
                       test_episodes_5shot=self.test_episodes_5shot, calibrate=False, threads=self.threads)

    def design(self) -> dict[str, Any]:
        """The settings every run of a study folder must share (all but seeds, variants, thresholds,
        jobs and threads): a folder's runs are reused only under the same design."""
        skip = {"seeds", "variants", "val_thresholds", "jobs", "threads"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


# a study of seconds for the tests: the demo's QUICK sizes, 2 seeds x 2 maskings
QUICK = dict(size=32, classes=8, images_per_class=3, bsz=2, epochs=2, episodes_per_epoch=4, val_episodes=3,
             test_episodes=4, test_episodes_5shot=4, seeds=(0, 1), variants=("fm", "hm"), val_thresholds=(1.0,))


def check_settings(s: StudySettings) -> None:
    """One-line HmfssError for values a study cannot run with."""
    if not s.seeds:
        raise HmfssError("--seeds: give at least one seed")
    if len(set(s.seeds)) != len(s.seeds) or any(seed < 0 for seed in s.seeds):
        raise HmfssError(f"--seeds must be distinct non-negative integers, got {list(s.seeds)}")
    unknown = [v for v in s.variants if v not in VARIANTS or v not in STRATEGIES]
    if unknown:
        raise HmfssError(f"--variants: unknown masking {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if BASELINE not in s.variants or len(set(s.variants)) != len(s.variants) or len(s.variants) < 2:
        raise HmfssError(f"--variants must be distinct, include {BASELINE} (the baseline) and one more, "
                         f"got {list(s.variants)}")
    for name in ("size", "classes", "images_per_class", "jobs"):  # the other counts: the demo's check below
        if getattr(s, name) < 1:
            raise HmfssError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(s, name)}")
    if not s.val_thresholds or any(not 0.0 < t <= 100.0 for t in s.val_thresholds):
        raise HmfssError(f"--val-thresholds must be mIoU values in (0, 100], got {list(s.val_thresholds)}")
    for seed in s.seeds:
        check_seed(seed, "--seeds")
    check_demo_settings(s.demo())  # the training and test counts, threads, the benchmark's size and ratios


def run_name(variant: str, seed: int) -> str:
    return f"hsnet-{variant}-seed{seed}"


def run_config(out: Path, s: StudySettings, variant: str, seed: int) -> TrainConfig:
    """The demo's training configuration with masking ``variant``, seed ``seed`` and its own run folder."""
    cfg = train_config(out, s.demo(), variant)
    return replace(cfg, seed=seed, logdir=str(out / "runs" / run_name(variant, seed)), progress=False)
