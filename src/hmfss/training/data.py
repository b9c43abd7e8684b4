"""The data of a training run: training split, validation split and episodes, reader, loaders."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader

from hmfss.data.dataset import EpisodeDataset, collate_episodes
from hmfss.data.episodes import Episode, default_protocol, make_episodes
from hmfss.data.readers import Reader, make_reader
from hmfss.data.sampling import heldout_split
from hmfss.data.splits import SplitInfo, load_split
from hmfss.training.config import TrainConfig
from hmfss.training.distributed import worker_init


@dataclass
class DataSetup:
    train_info: SplitInfo
    val_info: SplitInfo
    reader: Reader
    val_episodes: list[Episode]
    val_description: str  # for the log: what model selection is done on


def setup_data(cfg: TrainConfig) -> DataSetup:
    """Load the splits, pick the validation classes and draw the validation episodes."""
    train = _load_split(cfg, "trn")
    if cfg.val_split == "heldout":
        train, val = heldout_split(train, cfg.heldout_ratio, cfg.heldout_seed)
        names = ", ".join(val.class_name(c) for c in val.classes_in_use)
        description = (f"held-out training classes ({cfg.heldout_ratio:g} of them, seed {cfg.heldout_seed}, "
                       f"removed from training): {names}")
        protocol = cfg.val_protocol or "seeded"
    else:
        val = _load_split(cfg, cfg.val_split)
        description = _validation_description(cfg, val)
        protocol = cfg.val_protocol or default_protocol(cfg.benchmark)
    val_episodes = make_episodes(val, 1, cfg.val_episodes, cfg.val_seed, protocol)
    description += f"; {len(val_episodes)} 1-shot episodes, protocol {protocol}, seed {cfg.val_seed}"
    reader = _reader(cfg, train, val)
    if cfg.img_size:
        reader.draft = (cfg.img_size, cfg.img_size)  # huge JPEGs decoded at a reduced scale; masks stay full size
    return DataSetup(train, val, reader, val_episodes, description)


def _load_split(cfg: TrainConfig, split: str) -> SplitInfo:
    return load_split(cfg.benchmark, cfg.splits, cfg.fold, split, datapath=cfg.datapath,
                      classes_file=cfg.classes, test_ratio=cfg.test_ratio, split_seed=cfg.split_seed)


def _validation_description(cfg: TrainConfig, val: SplitInfo) -> str:
    if cfg.benchmark in ("pascal", "coco"):
        return (f"{cfg.benchmark} fold {cfg.fold} {cfg.val_split} list = the fold's TEST classes and "
                f"episodes (model selection on the test episodes, as the original HSNet; use "
                f"--val-split heldout for a validation split of the training classes)")
    if cfg.benchmark == "fss":
        return (f"FSS {cfg.val_split} classes ({len(val.class_ids)}, disjoint from the training classes)"
                + (" = the TEST classes" if cfg.val_split == "test" else ""))
    return f"folder test classes ({len(val.class_ids)}; model selection on the test classes)"


def _reader(cfg: TrainConfig, train: SplitInfo, val: SplitInfo) -> Reader:
    """The benchmark's reader; a folder reader gets the mask paths of both splits."""
    if cfg.benchmark != "folder":
        return make_reader(cfg.benchmark, cfg.datapath, train)
    masks = {**train.extra.get("masks", {}), **val.extra.get("masks", {})}
    return make_reader(cfg.benchmark, cfg.datapath, replace(val, extra={**val.extra, "masks": masks}))


def epoch_loader(dataset: EpisodeDataset, batch_size: int, workers: int, seed: int, pin_memory: bool = False) -> DataLoader:
    """Batches of training episodes in list order; ``seed`` seeds the workers' RNGs.
    ``pin_memory`` (for CUDA) lets the step's host-to-device copies run asynchronously."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_episodes, worker_init_fn=worker_init if workers else None,
                      generator=gen, persistent_workers=False, pin_memory=pin_memory)


def timed_batches(loader: Iterable[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], float]]:
    """(batch, seconds the step waited for it) for every batch of ``loader``: the time spent
    getting the next batch, which is the loader's work where it cannot keep ahead of the step."""
    batches = iter(loader)
    while True:
        tick = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        yield batch, time.perf_counter() - tick
