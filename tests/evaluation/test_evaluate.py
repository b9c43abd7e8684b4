import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_data import make_pascal
from PIL import Image

from hmfss import build_model
from hmfss.data.dataset import EpisodeDataset, episode_loader
from hmfss.data.episodes import make_episodes
from hmfss.data.readers import make_reader
from hmfss.data.splits import pascal_split
from hmfss.evaluation.evaluate import evaluate
from hmfss.errors import HmfssError
from hmfss.evaluation.metrics import SegmentationMeter


class ConstantModel(torch.nn.Module):
    """Predicts the same value everywhere; records the output sizes it was asked for."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.sizes = []

    def predict_mask(self, query, supports, masks, output_size=None, allow_empty_support=False):
        self.sizes.append(output_size)
        if isinstance(output_size, list):
            return [torch.full(tuple(s), self.value, dtype=torch.long) for s in output_size]
        return torch.full((query.shape[0], *query.shape[-2:]), self.value, dtype=torch.long)


@pytest.fixture(scope="module")
def pascal(tmp_path_factory):
    return make_pascal(tmp_path_factory.mktemp("pascal"))


def setup(pascal, episodes=10, nshot=1, size=32, original=False, bsz=1):
    info = pascal_split(pascal.splits, 0)
    eps = make_episodes(info, nshot, episodes)
    dataset = EpisodeDataset(make_reader("pascal", pascal.datapath), eps, size, original_size=original)
    meter = SegmentationMeter(info.class_ids, info.n_classes, info.class_names)
    return eps, episode_loader(dataset, bsz), meter


def expected_all_foreground(pascal, eps, size=None):
    """Per-class (inter fg, union fg, inter bg, union bg) of an all-ones prediction, by hand."""
    acc = {}
    for ep in eps:
        label = pascal.labels[ep.query]
        if size is not None:
            label = F.interpolate(torch.from_numpy(label).float()[None, None], (size, size), mode="nearest")[0, 0].numpy()
        valid = label != 255
        fg = int(((label == ep.class_id + 1) & valid).sum())
        a = acc.setdefault(ep.class_id, np.zeros(4))
        a += [fg, int(valid.sum()), 0, int(valid.sum()) - fg]  # bg: no predicted bg -> inter 0, union = gt bg
    return acc


@pytest.mark.parametrize("original", [False, True])
def test_all_foreground_prediction_by_hand(pascal, original):
    eps, loader, meter = setup(pascal, original=original, bsz=3)
    model = ConstantModel(1)
    result = evaluate(model, loader, meter, original_size=original, progress=False)
    acc = expected_all_foreground(pascal, eps, None if original else 32)
    ious = [acc[c][0] / acc[c][1] if c in acc else 0.0 for c in range(5)]
    assert result["miou"] == pytest.approx(100 * np.mean(ious))
    fg = sum(a[0] for a in acc.values()) / sum(a[1] for a in acc.values())
    assert result["fb_iou"] == pytest.approx(100 * fg / 2)  # bg IoU is 0
    assert result["evaluated"] == 10 and result["skipped"] == 0
    assert [c["episodes"] for c in result["classes"]][:2] == [sum(e.class_id == c for e in eps) for c in (0, 1)]
    if original:
        assert model.sizes[0] == [pascal.labels[e.query].shape for e in eps[:3]]
    else:
        assert model.sizes[0] is None


def test_empty_prediction_gives_zero_miou(pascal):
    _, loader, meter = setup(pascal, episodes=4)
    result = evaluate(ConstantModel(0), loader, meter, progress=False)
    assert result["miou"] == 0.0 and 0 < result["fb_iou"] < 50


def test_bad_image_fails_or_is_skipped(tmp_path):
    data = make_pascal(tmp_path)
    (data.datapath / "VOC2012" / "JPEGImages" / "2009_000002.jpg").write_bytes(b"\x00garbage")
    eps, loader, meter = setup(data, episodes=10, bsz=2)
    with pytest.raises(HmfssError, match=r"cannot read image .*2009_000002\.jpg"):
        evaluate(ConstantModel(1), loader, meter, progress=False)
    eps, loader, meter = setup(data, episodes=10, bsz=2)
    result = evaluate(ConstantModel(1), loader, meter, progress=False, skip_bad=True)
    bad = [i for i, e in enumerate(eps) if "2009_000002" in (e.query, *e.supports)]
    assert bad and result["skipped"] == len(bad) and result["evaluated"] == 10 - len(bad)
    assert [s["index"] for s in result["skipped_episodes"]] == bad


def test_a_run_stopped_by_a_bad_image_leaves_no_visualization(tmp_path):
    data = make_pascal(tmp_path)
    (data.datapath / "VOC2012" / "JPEGImages" / "2009_000002.jpg").write_bytes(b"\x00garbage")
    eps, loader, meter = setup(data, episodes=10, bsz=1)
    first_bad = min(i for i, e in enumerate(eps) if "2009_000002" in (e.query, *e.supports))
    assert first_bad > 0  # earlier episodes were visualized before the error
    (tmp_path / "vis").mkdir()
    (tmp_path / "vis" / "mine.txt").write_text("kept")
    with pytest.raises(HmfssError, match="2009_000002"):
        evaluate(ConstantModel(1), loader, meter, progress=False, visualize=tmp_path / "vis")
    assert [p.name for p in (tmp_path / "vis").iterdir()] == ["mine.txt"]


def test_visualize_writes_one_strip_per_episode(pascal, tmp_path):
    _, loader, meter = setup(pascal, episodes=3, nshot=2)
    evaluate(ConstantModel(1), loader, meter, progress=False, visualize=tmp_path / "vis")
    files = sorted((tmp_path / "vis").glob("*.jpg"))
    assert len(files) == 3 and files[0].name.startswith("00000_class-0_2008_000001_iou-")
    assert Image.open(files[0]).size == (4 * 32, 32)  # 2 supports + prediction + ground truth


def test_real_model_batch_size_and_resolution_modes(pascal):
    torch.manual_seed(0)
    model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32).eval()
    results = {}
    for bsz in (1, 3):
        for original in (False, True):
            _, loader, meter = setup(pascal, episodes=3, nshot=2, original=original, bsz=bsz)
            results[bsz, original] = evaluate(model, loader, meter, original_size=original, progress=False)
    for original in (False, True):
        a, b = results[1, original], results[3, original]
        assert a["miou"] == pytest.approx(b["miou"], abs=1e-9) and a["fb_iou"] == pytest.approx(b["fb_iou"], abs=1e-9)
    # same episodes, scored at two resolutions: both complete
    assert results[1, True]["evaluated"] == results[1, False]["evaluated"] == 3
