"""Training episodes and the held-out validation split, as pure functions of their seeds.

The training episodes of epoch ``e`` depend only on (split, seed, e, count): every epoch
draws a fresh seeded permutation of the training queries (COCO: a class, then a query of
that class) with one support of the same class. The augmentation of each episode is seeded
by (seed, epoch, position in the epoch), so a resumed run sees the same images.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hmfss.data.episodes import Episode
from hmfss.data.splits import SplitInfo
from hmfss.errors import HmfssError


def heldout_split(info: SplitInfo, ratio: float, seed: int) -> tuple[SplitInfo, SplitInfo]:
    """Split the training classes of ``info`` into (train, held-out) infos, seeded."""
    ids = info.classes_in_use
    if len(ids) < 2:
        raise HmfssError(f"--val-split heldout needs at least 2 training classes, {info.benchmark} has {len(ids)}")
    count = min(len(ids) - 1, max(1, int(round(ratio * len(ids)))))
    order = np.random.RandomState(seed).permutation(len(ids))
    held = sorted(ids[i] for i in order[:count])
    keep = sorted(set(ids) - set(held))
    train = _class_subset(info, keep, "trn", info.default_episodes)
    if train.sampling != "class-first":
        train = replace(train, default_episodes=len(train.entries))
    val_entries = [e for e in info.entries if e[1] in set(held)]
    val = _class_subset(info, held, "heldout", 1000 if info.sampling == "class-first" else min(1000, len(val_entries)))
    return train, val


def _class_subset(info: SplitInfo, classes: list[int], split: str, default_episodes: int) -> SplitInfo:
    """``info`` restricted to ``classes`` (class-first splits keep every entry: they sample classes)."""
    chosen = set(classes)
    class_first = info.sampling == "class-first"
    return replace(
        info, split=split, class_ids=[c for c in info.class_ids if c in chosen] if class_first else classes,
        entries=[(n, c) for n, c in info.entries if class_first or c in chosen],
        classwise={c: v for c, v in info.classwise.items() if c in chosen},
        default_episodes=default_episodes,
    )


def training_episodes(info: SplitInfo, seed: int, epoch: int, count: int) -> list[Episode]:
    """The training episodes of one epoch: a pure function of (split, seed, epoch, count).

    Query-order benchmarks: a fresh permutation of all training (query, class) entries,
    repeated as needed to reach ``count``. COCO-style class-first sampling: a uniform class,
    then a uniform query of that class. One support of the same class, different from the query.
    """
    rng = np.random.default_rng([int(seed), int(epoch), 2])
    out = []
    if info.sampling == "class-first":
        classes = list(info.class_ids)
        for _ in range(count):
            cid = classes[int(rng.integers(len(classes)))]
            pool = info.classwise[cid]
            query = pool[int(rng.integers(len(pool)))]
            out.append(Episode(str(query), (_support(rng, pool, query),), int(cid)))
        return out
    entries = list(info.entries)
    while len(out) < count:
        for j in rng.permutation(len(entries)):
            query, cid = entries[int(j)]
            out.append(Episode(str(query), (_support(rng, info.classwise[cid], query),), int(cid)))
            if len(out) == count:
                break
    return out


def augmentation_seeds(seed: int, epoch: int, count: int) -> list[int]:
    """Per-episode seeds of the training augmentation of one epoch (a pure function)."""
    return [int(v) for v in np.random.SeedSequence([int(seed), int(epoch), 3]).generate_state(count, np.uint32)]


def _support(rng: np.random.Generator, pool: list[str], query: str) -> str:
    """One uniform draw from the class's images other than the query."""
    others = [n for n in pool if n != query]
    if not others:
        raise HmfssError(f"class of {query!r} has no other image to use as support")
    return str(others[int(rng.integers(len(others)))])
