"""The demo's time budget: a short speed check, then the episode counts that fit the budget.

:func:`calibrate` times the training step of :mod:`hmfss.training.step` and the 1- / 5-shot
prediction on one batch of each model; :func:`plan` lowers the training episodes per epoch
(equally for both models) so that the predicted total fits ``budget_minutes``;
:func:`fit_test` lowers the test episodes when training ran slower than measured.
Timings are seconds per episode, keyed ``train_fm``, ``eval1_hm``, ``eval5_fm``, ...
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from hmfss.data.dataset import EpisodeDataset, collate_episodes
from hmfss.data.episodes import make_episodes
from hmfss.data.readers import make_reader
from hmfss.data.splits import load_split
from hmfss.demo.settings import MASKINGS, DemoSettings, train_config
from hmfss.training.config import resolve_recipe
from hmfss.training.loop import model_from_config
from hmfss.training.optim import build_optimizer
from hmfss.training.precision import grad_scaler
from hmfss.training.step import StepParts, train_step

OVERHEAD = 1.15  # data loading, logging, checkpoints, report


def _best_time(call: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after the first (a shape's first call sets kernels up)."""
    samples = []
    for _ in range(repeats):
        tick = time.perf_counter()
        call()
        samples.append(time.perf_counter() - tick)
    return min(samples[1:])


def calibrate(out: Path, s: DemoSettings) -> dict[str, float]:
    """Seconds per training episode (FM, HM) and per 1-/5-shot test episode, measured on a few batches."""
    data = out / "data"
    info = load_split("fss", data / "splits", split="trn", datapath=data)
    reader = make_reader("fss", data, info)
    episodes = make_episodes(info, 5, s.bsz, seed=1, protocol="seeded")
    batch = collate_episodes([EpisodeDataset(reader, episodes, s.size)[i] for i in range(len(episodes))])
    cpu = torch.device("cpu")
    timings: dict[str, float] = {}
    for masking in MASKINGS:
        torch.manual_seed(0)
        cfg = resolve_recipe(train_config(out, s, masking))
        model = model_from_config(cfg)
        model.train()
        parts = StepParts(model, model, build_optimizer(model, cfg), grad_scaler(cpu, False), cpu)
        timings[f"train_{masking}"] = _best_time(partial(train_step, parts, batch), 3) / s.bsz
        model.eval()
        q, sup, m = batch["query_img"], batch["support_imgs"], batch["support_masks"]
        with torch.no_grad():
            for shots in (1, 5):
                predict = partial(model.predict_mask, q, sup[:, :shots], m[:, :shots], allow_empty_support=True)
                timings[f"eval{shots}_{masking}"] = _best_time(predict, 2) / s.bsz
    return timings


def plan(s: DemoSettings, timings: dict[str, float], spent: float) -> tuple[DemoSettings, float]:
    """Largest episodes_per_epoch (<= the nominal one) whose predicted total fits the budget;
    returns the settings and the predicted total in seconds."""
    budget = s.budget_minutes * 60.0
    # HM does strictly more work than FM: a noisy measurement must not make it look cheaper
    t = dict(timings)
    for key in ("train", "eval1", "eval5"):
        t[f"{key}_hm"] = max(t[f"{key}_hm"], t[f"{key}_fm"])
    val = s.epochs * s.val_episodes * (t["eval1_fm"] + t["eval1_hm"])
    per_episode = s.epochs * (t["train_fm"] + t["train_hm"])
    fixed = OVERHEAD * (val + evaluation_seconds(s, t)) + 10.0
    room = budget - spent - fixed
    episodes = int(room / (OVERHEAD * per_episode)) if per_episode > 0 else s.episodes_per_epoch
    episodes = max(s.min_episodes_per_epoch, min(s.episodes_per_epoch, episodes))
    episodes -= episodes % s.bsz or 0
    episodes = max(episodes, s.bsz)
    predicted = spent + fixed + OVERHEAD * per_episode * episodes
    return replace(s, episodes_per_epoch=episodes), predicted


def evaluation_seconds(s: DemoSettings, t: dict[str, float]) -> float:
    """Predicted seconds of the 1- and 5-shot test evaluation of both models."""
    return sum(count * (t[f"eval{k}_fm"] + max(t[f"eval{k}_hm"], t[f"eval{k}_fm"]))
               for k, count in ((1, s.test_episodes), (5, s.test_episodes_5shot)))


def training_slowdown(s: DemoSettings, timings: dict[str, float], train_seconds: float) -> float:
    """How many times slower (at least 1) the two trainings ran than the speed check predicted."""
    predicted = sum(s.epochs * (s.episodes_per_epoch * max(timings["train_fm"], timings[f"train_{m}"])
                                + s.val_episodes * max(timings["eval1_fm"], timings[f"eval1_{m}"]))
                    for m in MASKINGS)
    return max(1.0, train_seconds / max(predicted, 1e-6))


def fit_test(s: DemoSettings, timings: dict[str, float], slowdown: float, left: float) -> DemoSettings:
    """Fewer test episodes (the same for both models) when training ran slower than measured
    and the full evaluation would not finish within ``left`` seconds."""
    if not timings:
        return s
    need = OVERHEAD * slowdown * evaluation_seconds(s, timings)
    if need <= left:
        return s
    scale = max(left, 0.0) / need
    return replace(s, test_episodes=max(60, int(s.test_episodes * scale)),
                   test_episodes_5shot=max(30, int(s.test_episodes_5shot * scale)))
