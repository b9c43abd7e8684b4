"""The study's statistics on hand-made numbers (values worked out by hand in the comments)."""

import math

import pytest

from hmfss.study.aggregate import (
    convergence,
    cumulative_episodes,
    episodes_to_threshold,
    mean_curve,
    mean_sd,
    paired,
    smallest_bucket,
    summarise,
    t95,
)
from hmfss.study.report import verdict


def test_mean_and_sample_sd():
    s = mean_sd([1.0, 2.0, 3.0, 4.0, None])  # None: a value not known, left out
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["sd"] == pytest.approx(math.sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3))  # n - 1
    assert mean_sd([7.0]) == {"mean": 7.0, "sd": None, "n": 1}
    assert mean_sd([None]) == {"mean": None, "sd": None, "n": 0}


def test_t_quantiles():
    assert t95(2) == 4.303
    assert t95(30) == pytest.approx(2.0423, abs=2e-3)  # tables: 2.042
    assert t95(100000) == pytest.approx(1.95996, abs=1e-4)


def test_paired_differences_by_seed():
    a = {0: 10.0, 1: 12.0, 2: 9.0, 3: 5.0}
    b = {0: 8.0, 1: 13.0, 2: 9.0, 3: None, 4: 1.0}  # seed 3 unknown for b, seed 4 only in b: both left out
    d = paired(a, b)
    assert d["by_seed"] == {"0": 2.0, "1": -1.0, "2": 0.0}
    assert d["n"] == 3 and d["mean"] == pytest.approx(1 / 3)
    sd = math.sqrt(((2 - 1 / 3) ** 2 + (-1 - 1 / 3) ** 2 + (1 / 3) ** 2) / 2)  # = sqrt(42 / 18)
    assert d["sd"] == pytest.approx(sd) == pytest.approx(math.sqrt(42 / 18))
    half = 4.303 * sd / math.sqrt(3)
    assert d["interval"] == pytest.approx([1 / 3 - half, 1 / 3 + half])
    assert (d["a_better"], d["b_better"], d["ties"]) == (1, 1, 1)
    fewer = paired({0: 100, 1: 300}, {0: 200, 1: 200}, higher_is_better=False)  # e.g. episodes: fewer is better
    assert (fewer["a_better"], fewer["b_better"], fewer["mean"]) == (1, 1, 0.0)
    assert paired({0: 1.0}, {0: 0.5})["interval"] is None  # one seed: no spread


def test_episodes_to_threshold_and_convergence():
    episodes, val = [400, 800, 1200], [5.0, 12.0, 30.0]
    assert episodes_to_threshold(episodes, val, 10.0) == 800
    assert episodes_to_threshold(episodes, val, 12.0) == 800  # reaching it counts
    assert episodes_to_threshold(episodes, val, 30.5) is None  # never reached
    assert cumulative_episodes([{"episodes": 400}, {"episodes": 400}, {"episodes": 392}]) == [400, 800, 1192]
    curves = {0: (episodes, val), 1: (episodes, [11.0, 20.0, 25.0]), 2: (episodes, [1.0, 2.0, 3.0])}
    c = convergence(curves, 10.0)
    assert c["by_seed"] == {"0": 800, "1": 400, "2": None}
    assert (c["reached"], c["runs"], c["mean"]) == (2, 3, 600.0)  # mean over the runs that reached it
    assert "n" not in c
    assert c["sd"] == pytest.approx(math.sqrt(2 * 200 ** 2))


def test_mean_curve():
    m = mean_curve([([1, 2], [10.0, 20.0]), ([1, 2], [14.0, 20.0])])
    assert m["episodes"] == [1, 2] and m["mean"] == [12.0, 20.0]
    assert m["sd"] == [pytest.approx(math.sqrt(8.0)), 0.0]
    with pytest.raises(ValueError):
        mean_curve([([1, 2], [1.0, 1.0]), ([1, 3], [1.0, 1.0])])


def _result(miou1, miou5, small, val, fb=50.0):
    buckets = lambda small_miou: [  # noqa: E731 - first bucket empty, as at 96 px when no object is that small
        {"bucket": "<1%", "miou": None, "episodes": 0, "classes": 0},
        {"bucket": "1-5%", "miou": small_miou, "episodes": 12, "classes": 5},
        {"bucket": "5-15%", "miou": 40.0, "episodes": 30, "classes": 9}]
    return {"best_val_miou": max(val), "best_epoch": val.index(max(val)) + 1,
            "curve": {"episodes": [100, 200, 300], "val_miou": val, "train_loss": [0.6, 0.5, 0.4]},
            "test_1shot": {"miou": miou1, "fb_iou": fb, "buckets": buckets(small)},
            "test_5shot": {"miou": miou5, "fb_iou": fb, "buckets": buckets(small + 1.0)}}


def test_summary_of_hand_made_runs():
    results = {
        ("fm", 0): _result(30.0, 40.0, 10.0, [5.0, 15.0, 25.0]),
        ("fm", 1): _result(32.0, 41.0, 12.0, [8.0, 12.0, 22.0]),
        ("fm", 2): _result(28.0, 39.0, 14.0, [2.0, 4.0, 6.0]),
        ("hm", 0): _result(31.0, 42.0, 13.0, [12.0, 20.0, 26.0]),
        ("hm", 1): _result(35.0, 44.0, 16.0, [9.0, 14.0, 24.0]),
        ("hm", 2): _result(27.0, 40.0, 14.0, [3.0, 11.0, 21.0]),
        ("hm", 3): _result(99.0, 99.0, 99.0, [99.0, 99.0, 99.0]),  # a seed outside the study: ignored
    }
    s = summarise(results, ["fm", "hm"], [0, 1, 2], [10.0, 20.0])
    one = s["test"]["1shot"]
    assert one["variants"]["hm"]["miou"]["mean"] == pytest.approx(31.0)
    d = one["paired"]["hm"]["miou"]  # HM - FM by seed: +1, +3, -1
    assert d["by_seed"] == {"0": 1.0, "1": 3.0, "2": -1.0}
    assert d["mean"] == pytest.approx(1.0) and d["sd"] == pytest.approx(2.0)
    assert (d["a_better"], d["b_better"]) == (2, 1)
    small = one["paired"]["hm"]["buckets"][1]  # 1-5%: +3, +4, 0
    assert small["mean"] == pytest.approx(7 / 3) and small["bucket"] == "1-5%"
    assert one["paired"]["hm"]["buckets"][0]["n"] == 0  # the empty bucket
    assert smallest_bucket(one) == 1
    # convergence: episodes to val mIoU >= 10: FM 200, 200, never; HM 100, 200, 200
    fm10, hm10 = s["validation"]["fm"]["episodes_to"]["10"], s["validation"]["hm"]["episodes_to"]["10"]
    assert (fm10["reached"], fm10["mean"], hm10["reached"], hm10["mean"]) == (2, 200.0, 3, pytest.approx(500 / 3))
    e = s["paired_validation"]["hm"]["episodes_to"]["10"]  # only seeds 0 and 1 (both reached): -100, 0
    assert e["by_seed"] == {"0": -100.0, "1": 0.0} and (e["a_better"], e["b_better"], e["ties"]) == (1, 0, 1)
    area = s["paired_validation"]["hm"]["mean_val_miou"]  # curve means: HM 58/3, 47/3, 35/3; FM 45/3, 42/3, 12/3
    assert area["by_seed"] == {"0": pytest.approx(13 / 3), "1": pytest.approx(5 / 3), "2": pytest.approx(23 / 3)}
    f = s["findings"]
    assert f["1shot"]["miou"]["fm"] == [pytest.approx(30.0), pytest.approx(2.0)]
    assert f["1shot"]["minus_fm"]["hm"]["mean"] == pytest.approx(1.0)
    assert f["5shot"]["small_objects"]["bucket"] == "1-5%"
    assert f["5shot"]["small_objects"]["minus_fm"]["hm"]["mean"] == pytest.approx(7 / 3)
    reached = f["episodes_to_val_miou"]["20"]
    assert (reached["fm"]["reached"], reached["hm"]["reached"], reached["hm"]["runs"]) == (2, 3, 3)
    assert len(s["runs"]) == 6
    with pytest.raises(ValueError):
        summarise(results, ["fm", "hm"], [0, 1, 5], [10.0])


def test_verdicts_follow_the_numbers():
    clear = paired({0: 3.0, 1: 3.5, 2: 2.5}, {0: 1.0, 1: 1.0, 2: 1.0})  # +2, +2.5, +1.5
    assert verdict(clear, "HM", "FM", "mIoU").startswith("**HM ahead**: HM − FM = +2.00 ± 0.50 mIoU")
    assert "HM better in 3 of 3 seeds" in verdict(clear, "HM", "FM", "mIoU")
    behind = paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 3.0, 1: 3.5, 2: 2.5})
    assert verdict(behind, "HM", "FM", "mIoU").startswith("**FM ahead**: HM − FM = -2.00 ± 0.50")
    unclear = paired({0: 1.0, 1: 3.0, 2: 2.0}, {0: 2.0, 1: 1.0, 2: 2.5})
    assert verdict(unclear, "HM", "FM", "mIoU").startswith("no clear difference")
    sooner = paired({0: 400, 1: 400, 2: 800}, {0: 800, 1: 800, 2: 1200}, higher_is_better=False)  # episodes
    assert verdict(sooner, "HM", "FM", "episodes", better="earlier", digits=0, higher_is_better=False).startswith(
        "**HM ahead**: HM − FM = -400 ± 0 episodes")
    assert "HM earlier in 3 of 3 seeds, FM in 0" in verdict(sooner, "HM", "FM", "episodes", better="earlier",
                                                            higher_is_better=False)
    assert "no verdict" in verdict(paired({0: 1.0}, {0: 0.0}), "HM", "FM", "mIoU")
    assert "no seed" in verdict(paired({0: None}, {0: 0.0}), "HM", "FM", "mIoU")
