"""The multi-class rule on hand-made maps, and its agreement with single-class prediction."""

import pytest
import torch

from hmfss import build_model
from hmfss.errors import HmfssError
from hmfss.multiclass import class_maps, combine, encode_classes, segment_classes


def test_overlap_goes_to_the_most_probable_class_ties_to_the_lowest_index():
    probs = torch.tensor([[[0.9, 0.6, 0.7]], [[0.8, 0.95, 0.7]]])  # (C=2, H=1, W=3)
    masks = torch.ones_like(probs, dtype=torch.long)
    assert combine(probs, masks).tolist() == [[1, 2, 1]]


def test_only_classes_whose_own_mask_is_foreground_compete():
    probs = torch.tensor([[[0.9, 0.9]], [[0.6, 0.6]]])
    masks = torch.tensor([[[0, 1]], [[1, 1]]])
    assert combine(probs, masks).tolist() == [[2, 1]]


def test_threshold_removes_classes_below_it():
    probs = torch.tensor([[[0.6, 0.6, 0.9]], [[0.55, 0.75, 0.2]]])
    masks = torch.tensor([[[1, 1, 1]], [[1, 1, 0]]])
    assert combine(probs, masks, threshold=0.7).tolist() == [[0, 2, 1]]
    assert combine(probs, masks).tolist() == [[1, 2, 1]]


def test_no_class_is_background():
    probs = torch.tensor([[[0.3, 0.9]], [[0.2, 0.8]]])
    masks = torch.zeros_like(probs, dtype=torch.long)
    assert combine(probs, masks).tolist() == [[0, 0]]


def test_class_maps_probability_is_the_mean_softmax_and_mask_the_vote():
    logits = torch.zeros(3, 2, 1, 2)
    logits[:, 1, 0, 0] = torch.tensor([2.0, 2.0, -1.0])  # two of three shots vote foreground
    logits[:, 1, 0, 1] = torch.tensor([-1.0, -1.0, 0.0])  # a tie (0 vs 0) is background
    prob, mask = class_maps(logits, (1, 2))
    expected = torch.sigmoid(torch.tensor([[2.0, 2.0, -1.0], [-1.0, -1.0, 0.0]])).mean(dim=1)
    assert torch.allclose(prob[0], expected)
    assert mask.tolist() == [[1, 0]]


def test_one_class_label_map_equals_the_single_class_mask_and_classes_are_independent():
    torch.manual_seed(0)
    model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=64).eval()
    query = torch.randn(2, 3, 64, 64)
    supports = [(torch.randn(1, k, 3, 64, 64), (torch.rand(1, k, 64, 64) > 0.5).float()) for k in (1, 3)]
    sizes = [(50, 70), (64, 64)]
    with torch.inference_mode():
        states = encode_classes(model, supports)
        both = segment_classes(model, query, states, sizes)
        for c, state in enumerate(states):
            single = model.segment(query, state, output_size=sizes)
            alone = segment_classes(model, query, [state], sizes)
            for i in range(2):
                assert torch.equal(alone[i].labels, single[i])
                assert torch.equal(both[i].masks[c], single[i])


def test_multiclass_api_is_public_under_hmfss():
    import hmfss
    import hmfss.app.pipeline
    import hmfss.multiclass

    assert hmfss.segment_classes is hmfss.multiclass.segment_classes
    assert hmfss.encode_classes is hmfss.multiclass.encode_classes
    assert hmfss.ClassPrediction is hmfss.multiclass.ClassPrediction
    assert hmfss.MultiClassSegmenter is hmfss.app.pipeline.MultiClassSegmenter
    assert hmfss.read_support_dir is hmfss.app.pipeline.read_support_dir
    assert {"segment_classes", "MultiClassSegmenter"} <= set(dir(hmfss))


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    model = build_model("hsnet", "efficientnet-lite0", "hm", img_size=32).eval()
    images, masks = torch.randn(1, 1, 3, 32, 32), torch.zeros(1, 1, 32, 32)
    masks[..., 8:24, 8:24] = 1
    with torch.inference_mode():
        return model, encode_classes(model, [(images, masks)])


@pytest.mark.parametrize("states, options, message", [
    ([], {}, "needs at least one class state"),
    (["cat"], {}, r"states\[0\] must be a SupportState .* got str"),
    (None, {"output_sizes": [(10, 10)]}, r"output_sizes must hold one \(h, w\) per query \(2\)"),
    (None, {"output_sizes": (10, 10)}, r"output_sizes\[0\] must be \(height, width\), .* got 10$"),
    (None, {"output_sizes": [(10, 10), (0, 10)]}, r"output_sizes\[1\] must be \(height, width\)"),
    (None, {"threshold": 1.5}, "threshold must be a number from 0 to 1, got 1.5"),
    (None, {"threshold": float("nan")}, "threshold must be a number from 0 to 1, got nan"),
])
def test_bad_arguments_are_refused_in_one_line(lite0, states, options, message):
    model, good = lite0
    with torch.inference_mode(), pytest.raises(HmfssError, match=message):
        segment_classes(model, torch.randn(2, 3, 32, 32), good if states is None else states, **options)
