import numpy as np
import pytest
import torch

from hmfss.evaluation.metrics import BUCKETS, SegmentationMeter, area_stats, foreground_fraction, size_bucket

T = torch.tensor


def test_area_stats_by_hand_with_ignore():
    gt = T([[1, 1, 0], [0, 0, 0]])
    pred = T([[1, 0, 0], [1, 0, 0]])
    ignore = T([[False, False, False], [True, False, False]])
    # 5 counted pixels: (fg,fg) (fg,bg) (bg,bg) (bg,bg) (bg,bg) as (gt, pred)
    inter, union = area_stats(pred, gt, ignore)
    np.testing.assert_array_equal(inter, [3, 1])
    np.testing.assert_array_equal(union, [4, 2])  # bg: 4 pred + 3 gt - 3; fg: 1 + 2 - 1
    # without the ignore map the false positive at (1, 0) counts
    inter, union = area_stats(pred, gt)
    np.testing.assert_array_equal(inter, [3, 1])
    np.testing.assert_array_equal(union, [5, 3])


def test_area_stats_empty_prediction_and_empty_union():
    gt = T([[1, 1], [0, 0]], dtype=torch.float32)
    inter, union = area_stats(torch.zeros(2, 2, dtype=torch.long), gt)
    np.testing.assert_array_equal(inter, [2, 0])
    np.testing.assert_array_equal(union, [4, 2])
    inter, union = area_stats(torch.zeros(2, 2), torch.zeros(2, 2))
    np.testing.assert_array_equal(inter, [4, 0])
    np.testing.assert_array_equal(union, [4, 0])
    # everything ignored: nothing counted
    inter, union = area_stats(torch.ones(2, 2), gt, torch.ones(2, 2, dtype=torch.bool))
    assert inter.sum() == 0 and union.sum() == 0


def test_meter_miou_and_fb_iou_by_hand():
    meter = SegmentationMeter(class_ids=[0, 1, 2], n_classes=4, class_names=["a", "b", "c", "d"])
    meter.update(0, np.array([3.0, 1.0]), np.array([4.0, 2.0]))
    meter.update(0, np.array([5.0, 3.0]), np.array([6.0, 4.0]))
    meter.update(1, np.array([4.0, 0.0]), np.array([4.0, 0.0]))  # empty union: IoU 0 (max(union, 1))
    meter.update(3, np.array([0.0, 9.0]), np.array([9.0, 9.0]))  # class 3 is not evaluated
    # class 0: 4/6; class 1: 0/max(0,1); class 2: never sampled -> 0
    assert meter.miou() == pytest.approx(100 * (4 / 6) / 3)
    # FB-IoU: dataset-level sums over the evaluated classes: bg 12/14, fg 4/6
    assert meter.fb_iou() == pytest.approx(100 * (12 / 14 + 4 / 6) / 2)
    summary = meter.summary()
    assert summary["miou"] == pytest.approx(meter.miou()) and summary["fb_iou"] == pytest.approx(meter.fb_iou())
    assert [(c["name"], round(c["iou"], 4), c["episodes"]) for c in summary["classes"]] == [
        ("a", round(100 * 4 / 6, 4), 2), ("b", 0.0, 1), ("c", 0.0, 0)]
    assert meter.count == 4


def test_meter_add_matches_the_original_per_episode_rule():
    meter = SegmentationMeter([0], 1)
    gt = T([[1, 1, 0], [0, 0, 0]])
    iou = meter.add(0, T([[1, 0, 0], [1, 0, 0]]), gt, T([[False, False, False], [True, False, False]]))
    assert iou == pytest.approx(0.5)
    assert meter.miou() == pytest.approx(50.0)
    assert meter.fb_iou() == pytest.approx(100 * (3 / 4 + 1 / 2) / 2)


def test_size_buckets():
    assert [b[0] for b in BUCKETS] == ["<1%", "1-5%", "5-15%", ">15%"]
    cases = {0.0: 0, 0.0099: 0, 0.01: 1, 0.0499: 1, 0.05: 2, 0.1499: 2, 0.15: 3, 1.0: 3}
    assert {f: size_bucket(f) for f in cases} == cases
    gt = torch.zeros(10, 10)
    gt[0, :3] = 1
    assert foreground_fraction(gt) == pytest.approx(0.03)
    assert size_bucket(foreground_fraction(gt)) == 1


def test_bucket_miou_by_hand():
    meter = SegmentationMeter([0, 1, 2], 3)
    meter.update(0, np.array([0.0, 1.0]), np.array([0.0, 4.0]), fg_fraction=0.005)
    meter.update(0, np.array([0.0, 1.0]), np.array([0.0, 1.0]), fg_fraction=0.0)
    meter.update(1, np.array([0.0, 0.0]), np.array([0.0, 3.0]), fg_fraction=0.009)
    meter.update(2, np.array([0.0, 5.0]), np.array([0.0, 10.0]), fg_fraction=0.5)
    meter.update(0, np.array([0.0, 9.0]), np.array([0.0, 10.0]), fg_fraction=0.07)
    # bucket <1%: class 0 -> 2/5, class 1 -> 0 => 20; class 2 has no small episode and does not count
    # bucket 5-15%: only class 0 (9/10); >15%: only class 2 (5/10); 1-5%: empty
    assert meter.bucket_miou() == [pytest.approx(20.0), None, pytest.approx(90.0), pytest.approx(50.0)]
    buckets = meter.summary()["buckets"]
    assert [(b["bucket"], b["episodes"], b["classes"]) for b in buckets] == [
        ("<1%", 3, 2), ("1-5%", 0, 0), ("5-15%", 1, 1), (">15%", 1, 1)]
    assert buckets[0]["min_fraction"] == 0.0 and buckets[3]["max_fraction"] is None
    # the overall figures are unaffected by the buckets: class 0 = 11/15, 1 = 0, 2 = 1/2
    assert meter.miou() == pytest.approx(100 * (11 / 15 + 0 + 0.5) / 3)


def test_update_rejects_unknown_class():
    with pytest.raises(ValueError):
        SegmentationMeter([0], 2).update(5, np.zeros(2), np.zeros(2))
