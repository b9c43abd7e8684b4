import json

import numpy as np
import pytest
import torch
from helpers.tiny_data import make_coco, make_folder, make_fss, make_pascal

from hmfss.data.dataset import EpisodeDataset, episode_loader
from hmfss.data.episodes import Episode, make_episodes, read_jsonl, write_jsonl
from hmfss.data.readers import make_reader
from hmfss.data.splits import coco_split, folder_split, fss_split, pascal_split
from hmfss.errors import HmfssError

# First episodes of the ORIGINAL HSNet test loaders (NumPy seed 0, loader order), obtained by
# running juhongm999/hsnet @ 6b1bc12 data/{pascal,coco,fss}.py on the standard split lists.
PASCAL_F0_1SHOT = [
    {"query": "2007_000033", "supports": ["2010_001174"], "class_id": 0},
    {"query": "2007_000061", "supports": ["2007_005705"], "class_id": 3},
    {"query": "2007_000129", "supports": ["2008_003108"], "class_id": 1},
]
PASCAL_F0_1SHOT_LAST = {"query": "2011_000185", "supports": ["2007_007084"], "class_id": 2}
PASCAL_F0_5SHOT = [
    {"query": "2007_000033", "supports": ["2010_001174", "2007_001884", "2011_002515", "2010_000238", "2011_001114"], "class_id": 0},
    {"query": "2007_000061", "supports": ["2011_001589", "2008_001580", "2008_001260", "2011_001793", "2011_000234"], "class_id": 3},
]
COCO_F0_1SHOT = [
    {"query": "val2014/COCO_val2014_000000507081.jpg", "supports": ["val2014/COCO_val2014_000000486122.jpg"], "class_id": 72},
    {"query": "val2014/COCO_val2014_000000504005.jpg", "supports": ["val2014/COCO_val2014_000000570465.jpg"], "class_id": 44},
    {"query": "val2014/COCO_val2014_000000074951.jpg", "supports": ["val2014/COCO_val2014_000000041212.jpg"], "class_id": 32},
]
COCO_F0_1SHOT_LAST = {"query": "val2014/COCO_val2014_000000356094.jpg", "supports": ["val2014/COCO_val2014_000000484175.jpg"], "class_id": 0}
COCO_F3_5SHOT = [
    {"query": "val2014/COCO_val2014_000000295564.jpg", "supports": [
        "val2014/COCO_val2014_000000262631.jpg", "val2014/COCO_val2014_000000089258.jpg",
        "val2014/COCO_val2014_000000376478.jpg", "val2014/COCO_val2014_000000492816.jpg",
        "val2014/COCO_val2014_000000156626.jpg"], "class_id": 75},
]
FSS_1SHOT = [
    {"query": "abe's_flyingfish/1.jpg", "supports": ["abe's_flyingfish/3.jpg"], "class_id": 760},
    {"query": "abe's_flyingfish/10.jpg", "supports": ["abe's_flyingfish/4.jpg"], "class_id": 760},
    {"query": "abe's_flyingfish/2.jpg", "supports": ["abe's_flyingfish/3.jpg"], "class_id": 760},
]
FSS_1SHOT_LAST = {"query": "wooden_spoon/9.jpg", "supports": ["wooden_spoon/5.jpg"], "class_id": 999}


def dicts(episodes):
    return [e.to_dict() for e in episodes]


def test_real_pascal_episodes_match_the_original_loader(shared_reference):
    splits = shared_reference / "splits"
    eps = dicts(make_episodes(pascal_split(splits, 0), 1))
    assert len(eps) == 1000 and eps[:3] == PASCAL_F0_1SHOT and eps[-1] == PASCAL_F0_1SHOT_LAST
    assert dicts(make_episodes(pascal_split(splits, 0), 5, episodes=2)) == PASCAL_F0_5SHOT
    # query = entry i mod N (N = 346): episode 346 repeats the first query
    assert eps[346]["query"] == "2007_000033"


def test_real_coco_episodes_match_the_original_loader(shared_reference):
    splits = shared_reference / "splits"
    eps = dicts(make_episodes(coco_split(splits, 0), 1))
    assert eps[:3] == COCO_F0_1SHOT and eps[-1] == COCO_F0_1SHOT_LAST
    assert dicts(make_episodes(coco_split(splits, 3), 5, episodes=1)) == COCO_F3_5SHOT


def test_real_fss_episodes_match_the_original_loader(shared_reference):
    eps = dicts(make_episodes(fss_split(shared_reference / "splits", "test"), 1))
    assert len(eps) == 2400 and eps[:3] == FSS_1SHOT and eps[-1] == FSS_1SHOT_LAST


# ---- the original draw sequence, written out call by call on tiny lists ----------------------

def _legacy_supports(rng, pool, query, nshot):
    """The original draw loop: one np.random.choice per try, rejecting the query."""
    supports = []
    while True:
        s = rng.choice(pool, 1, replace=False)[0]
        if s != query:
            supports.append(str(s))
        if len(supports) == nshot:
            return supports


def legacy_query_order(entries, classwise, nshot, count, seed=0):
    """np.random.seed(seed); per episode: query = entry i mod N; K x (choice until != query)."""
    rng = np.random.RandomState(seed)
    out = []
    for i in range(count):
        query, cid = entries[i % len(entries)]
        supports = _legacy_supports(rng, classwise[cid], query, nshot)
        out.append({"query": query, "supports": supports, "class_id": cid})
    return out


def legacy_class_first(class_ids, classwise, nshot, count, seed=0):
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(count):
        cid = int(rng.choice(class_ids, 1, replace=False)[0])
        query = str(rng.choice(classwise[cid], 1, replace=False)[0])
        supports = _legacy_supports(rng, classwise[cid], query, nshot)
        out.append({"query": query, "supports": supports, "class_id": cid})
    return out


@pytest.mark.parametrize("nshot", [1, 3])
def test_hsnet_protocol_follows_the_original_draws(tmp_path, nshot):
    pascal = pascal_split(make_pascal(tmp_path / "p").splits, 0)
    assert dicts(make_episodes(pascal, nshot, 25)) == legacy_query_order(pascal.entries, pascal.classwise, nshot, 25)
    assert dicts(make_episodes(pascal, nshot, 9, seed=7)) == legacy_query_order(pascal.entries, pascal.classwise, nshot, 9, 7)
    coco = coco_split(make_coco(tmp_path / "c").splits, 0)
    assert dicts(make_episodes(coco, nshot, 30)) == legacy_class_first(coco.class_ids, coco.classwise, nshot, 30)
    fss = fss_split(make_fss(tmp_path / "f").splits)
    # FSS draws a number in range(1, 11): same stream as a draw from the 10 names in order 1..10
    rng = np.random.RandomState(0)
    expected = []
    for query, cid in fss.entries:
        cat, qn = query.split("/")
        supports = []
        while len(supports) < nshot:
            n = rng.choice(range(1, 11), 1, replace=False)[0]
            if f"{n}.jpg" != qn:
                supports.append(f"{cat}/{n}.jpg")
        expected.append({"query": query, "supports": supports, "class_id": cid})
    assert dicts(make_episodes(fss, nshot)) == expected


def test_protocols_are_deterministic_and_prefix_stable(tmp_path):
    info = pascal_split(make_pascal(tmp_path).splits, 0)
    for protocol in ("hsnet", "asnet", "seeded"):
        a = make_episodes(info, 2, 40, protocol=protocol)
        assert a == make_episodes(info, 2, 40, protocol=protocol)
        assert a[:15] == make_episodes(info, 2, 15, protocol=protocol)
        assert a != make_episodes(info, 2, 40, seed=1, protocol=protocol)
        assert [e.query for e in a] == [info.entries[i % 7][0] for i in range(40)]


def test_asnet_protocol_reseeds_every_episode(tmp_path):
    info = pascal_split(make_pascal(tmp_path).splits, 0)
    eps = make_episodes(info, 1, 12, protocol="asnet")
    for i in (0, 5, 11):
        rng = np.random.RandomState(i)
        query, cid = info.entries[i % len(info.entries)]
        while True:
            s = str(rng.choice(info.classwise[cid], 1, replace=False)[0])
            if s != query:
                break
        assert eps[i] == Episode(query, (s,), cid)


def test_seeded_protocol_draws_distinct_supports(tmp_path):
    info = pascal_split(make_pascal(tmp_path).splits, 0)
    for ep in make_episodes(info, 3, 30, protocol="seeded"):
        assert ep.query not in ep.supports
        # class 0 has 4 images (3 candidates per query), class 1 has 3 (2 candidates)
        assert len(set(ep.supports)) == (3 if ep.class_id == 0 else 2)
    # class 1 has only 2 other images: 3 shots must repeat one, never the query
    ep = make_episodes(info, 3, 30, protocol="seeded")[4]  # entry 4 = 2009_000001, class 1
    assert ep.class_id == 1 and ep.query not in ep.supports and len(set(ep.supports)) == 2


def test_episode_errors(tmp_path):
    info = pascal_split(make_pascal(tmp_path).splits, 0)
    info.classwise[1] = ["2009_000001"]
    info.entries = [("2009_000001", 1)]
    with pytest.raises(HmfssError, match=r"class 1 \(bicycle\) has 1 image"):
        make_episodes(info, 1)
    with pytest.raises(HmfssError, match="unknown protocol"):
        make_episodes(info, 1, protocol="magic")
    with pytest.raises(HmfssError, match="--nshot"):
        make_episodes(info, 0)


def test_jsonl_round_trip(tmp_path):
    info = fss_split(make_fss(tmp_path).splits)
    eps = make_episodes(info, 2)
    path = tmp_path / "eps.jsonl"
    with path.open("w") as handle:
        write_jsonl(eps, handle)
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["query", "supports", "class_id"]
    assert read_jsonl(path) == eps


def test_episodes_do_not_depend_on_loader_workers(tmp_path):
    data = make_folder(tmp_path)
    info = folder_split(data.datapath)
    episodes = make_episodes(info, 2, 9, protocol="seeded")
    dataset = EpisodeDataset(make_reader("folder", data.datapath, info), episodes, 32)

    def run(workers, bsz):
        names, masks = [], []
        for batch in episode_loader(dataset, bsz, workers):
            names += [(q, tuple(s)) for q, s in zip(batch["query_name"], batch["support_names"])]
            masks.append(batch["support_masks"])
        return names, torch.cat(masks)

    names0, masks0 = run(0, 1)
    names2, masks2 = run(2, 4)
    assert names0 == names2 == [(e.query, e.supports) for e in episodes]
    assert torch.equal(masks0, masks2)
