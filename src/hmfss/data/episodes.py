"""Test episodes as a pure function of (split lists, fold, shots, seed, protocol, count).

Episodes are computed up front in the main process from a :class:`~hmfss.data.splits.SplitInfo`
(no image is read), so they never depend on data-loader workers or the batch size.

Protocols (how the original code bases drew test episodes, and our own):

* ``hsnet`` - the original HSNet / VAT / HSNet-HM test loaders: one NumPy ``RandomState(seed)``
  (seed 0 in the originals) drawn sequentially in loader order. "query-order" benchmarks
  (PASCAL, FSS-1000, folders): the i-th query is entry ``i mod N``; COCO: a class, then a
  query of that class. Each support is one uniform draw from the class's list, redrawn
  while it equals the query, repeated K times (duplicates between supports are possible).
  A uniform draw is ``choice(list, 1, replace=False)``, i.e. the first element of a
  permutation of the list's length - the same stream consumption as the originals.
* ``asnet`` - the same draws, but the generator is re-seeded with ``seed + i`` before the
  i-th episode (ASNet's loaders with seed 0).
* ``seeded`` - hmfss's own scheme: an independent generator per episode
  (``numpy.random.default_rng([seed, i])``), queries as in ``hsnet`` and K *distinct*
  supports different from the query (repeats only when the class has fewer than K other
  images). Default for custom folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from hmfss.errors import HmfssError
from hmfss.data.splits import SplitInfo

PROTOCOLS = ("hsnet", "asnet", "seeded")
MAX_NSHOT = 1000  # support images per episode
MAX_EPISODES = 1_000_000  # episodes of one list


@dataclass(frozen=True)
class Episode:
    """One test episode: query name, support names (K) and the dataset-global class id."""

    query: str
    supports: tuple[str, ...]
    class_id: int

    def to_dict(self) -> dict:
        return {"query": self.query, "supports": list(self.supports), "class_id": int(self.class_id)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def default_protocol(benchmark: str) -> str:
    return "seeded" if benchmark == "folder" else "hsnet"


def _legacy_pick(rng: np.random.RandomState, pool: list) -> object:
    """Same stream consumption and result as ``rng.choice(pool, 1, replace=False)[0]``."""
    return pool[int(rng.permutation(len(pool))[0])]


def _check_pools(info: SplitInfo, class_ids: Iterable[int]) -> None:
    for cid in class_ids:
        pool = info.classwise.get(cid, [])
        if len(set(pool)) < 2:
            raise HmfssError(
                f"class {cid} ({info.class_name(cid)}) has {len(set(pool))} image(s) in the {info.benchmark} "
                f"{info.split} list; an episode needs a query and a different support image"
            )


def _legacy_episode(rng: np.random.RandomState, info: SplitInfo, index: int, nshot: int) -> Episode:
    if info.sampling == "class-first":
        cid = int(_legacy_pick(rng, info.class_ids))
        pool = info.classwise[cid]
        query = _legacy_pick(rng, pool)
    else:
        query, cid = info.entries[index % len(info.entries)]
        pool = info.classwise[cid]
    supports: list[str] = []
    while len(supports) < nshot:
        name = _legacy_pick(rng, pool)
        if name != query:
            supports.append(name)
    return Episode(str(query), tuple(str(s) for s in supports), int(cid))


def _seeded_episode(seed: int, info: SplitInfo, index: int, nshot: int) -> Episode:
    rng = np.random.default_rng([seed, index])
    if info.sampling == "class-first":
        cid = int(info.class_ids[rng.integers(len(info.class_ids))])
        pool = info.classwise[cid]
        query = pool[rng.integers(len(pool))]
    else:
        query, cid = info.entries[index % len(info.entries)]
        pool = info.classwise[cid]
    candidates = [n for n in dict.fromkeys(pool) if n != query]
    take = min(nshot, len(candidates))
    picks = list(rng.choice(len(candidates), size=take, replace=False))
    if take < nshot:
        picks += list(rng.choice(len(candidates), size=nshot - take, replace=True))
    return Episode(str(query), tuple(candidates[int(i)] for i in picks), int(cid))


def make_episodes(info: SplitInfo, nshot: int = 1, episodes: int | None = None, seed: int = 0,
                  protocol: str = "hsnet") -> list[Episode]:
    """The episodes of a split: ``episodes`` (default: the benchmark's standard count) of them."""
    if protocol not in PROTOCOLS:
        raise HmfssError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not 1 <= nshot <= MAX_NSHOT:
        raise HmfssError(f"--nshot must be between 1 and {MAX_NSHOT}, got {nshot}")
    count = info.default_episodes if episodes is None else int(episodes)
    if not 1 <= count <= MAX_EPISODES:
        raise HmfssError(f"--episodes must be between 1 and {MAX_EPISODES} (the list is built in memory), got {count}")
    if not info.entries or not info.class_ids:
        raise HmfssError(f"the {info.benchmark} {info.split} split has no images")
    _check_pools(info, info.classes_in_use)
    if protocol == "hsnet":
        rng = np.random.RandomState(seed)
        return [_legacy_episode(rng, info, i, nshot) for i in range(count)]
    if protocol == "asnet":
        return [_legacy_episode(np.random.RandomState(seed + i), info, i, nshot) for i in range(count)]
    return [_seeded_episode(seed, info, i, nshot) for i in range(count)]


def write_jsonl(episodes: Iterable[Episode], stream) -> None:
    for episode in episodes:
        stream.write(episode.to_json() + "\n")


def read_jsonl(path) -> list[Episode]:
    """Episodes written by ``hmfss episodes`` (one JSON object per line)."""
    from pathlib import Path

    path = Path(path)
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise HmfssError(f"cannot read episode file {path}: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            out.append(Episode(str(obj["query"]), tuple(str(s) for s in obj["supports"]), int(obj["class_id"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise HmfssError(f"{path} line {number}: not an episode ({exc})") from None
    return out
