import pytest
import torch

from hmfss.errors import HmfssError
from hmfss.fast.masking import mask_support_features_in_place, mask_window
from hmfss.masking import (
    STRATEGIES,
    feature_mask,
    input_mask,
    mask_support_features,
    needs_input_masking,
    resize_mask,
)

# A 1-channel 2x2 feature map and a 2x2 mask: no resizing involved.
F = torch.tensor([[[[2.0, -1.0], [3.0, -4.0]]]])
IM = torch.tensor([[[[5.0, 6.0], [-7.0, 0.5]]]])
MASK = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])


@pytest.mark.parametrize(
    "name,expected",
    [
        ("none", [[2.0, -1.0], [3.0, -4.0]]),
        ("fm", [[2.0, -1.0], [0.0, 0.0]]),
        ("im", [[5.0, 6.0], [-7.0, 0.5]]),
        # HM keeps FM where FM > 0, else IM
        ("hm", [[2.0, 6.0], [-7.0, 0.5]]),
        ("hm-add", [[7.0, 5.0], [-7.0, 0.5]]),
        # reverse keeps IM where IM > 0, else FM
        ("hm-reverse", [[5.0, 6.0], [0.0, 0.5]]),
    ],
)
def test_strategies_on_hand_made_tensors(name, expected):
    out = mask_support_features(name, [F], [IM], MASK)[0]
    assert out.tolist() == [[expected]]


def test_six_strategies_and_which_need_input_masking():
    assert list(STRATEGIES) == ["none", "fm", "im", "hm", "hm-add", "hm-reverse"]
    assert [needs_input_masking(n) for n in STRATEGIES] == [False, False, True, True, True, True]
    with pytest.raises(HmfssError, match="unknown masking"):
        needs_input_masking("fancy")


def test_mask_resize_is_bilinear_align_corners():
    mask = torch.tensor([[[0.0, 0.0, 1.0]] * 3])  # (1, 3, 3): right column on
    out = resize_mask(mask, (3, 5))[0, 0, 0]
    # align_corners=True: output x in {0, .5, 1, 1.5, 2} in input coordinates
    assert out.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]
    feat = torch.ones(1, 2, 3, 5)
    assert feature_mask(feat, mask)[0, 1, 0].tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_input_masking_zeroes_normalised_pixels():
    img = torch.randn(2, 3, 4, 4)
    mask = torch.zeros(2, 4, 4)
    mask[:, :2] = 1
    out = input_mask(img, mask)
    assert torch.equal(out[:, :, :2], img[:, :, :2]) and out[:, :, 2:].abs().sum() == 0


@pytest.mark.parametrize("name", ["none", "fm", "im", "hm", "hm-add", "hm-reverse"])
def test_overwriting_the_input_masked_maps_gives_the_same_results(name):
    expected = mask_support_features(name, [F], [IM], MASK)[0]
    scratch = IM.clone()
    with torch.no_grad():
        out = mask_support_features_in_place(name, [F], [scratch], MASK)[0]
    assert torch.equal(out, expected)
    if name.startswith("hm"):  # the hybrid results land in the scratch maps
        assert out.data_ptr() == scratch.data_ptr()
    assert torch.equal(mask_support_features(name, [F], [IM], MASK)[0], expected)  # the plain rule: IM untouched


def test_mask_window_is_the_smallest_box_over_the_batch():
    resized = torch.zeros(2, 1, 6, 7)
    resized[0, 0, 1, 2] = 0.25
    resized[1, 0, 3, 5] = 1.0
    assert mask_window(resized) == (slice(1, 4), slice(2, 6))
    assert mask_window(torch.zeros(1, 1, 4, 4)) is None


def _plain_hm(feat, im, mask):
    fm = feat * torch.nn.functional.interpolate(mask.unsqueeze(1), feat.shape[-2:], mode="bilinear", align_corners=True)
    return torch.where(fm > 0, fm, im)


@pytest.mark.parametrize("overwrite", [False, True])
def test_hm_inside_the_mask_window_equals_the_rule_on_the_whole_map(overwrite):
    gen = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 40, 40)
    mask[0, 5:12, 20:31] = 1  # two objects of different size and place
    mask[1, 22:25, 3:6] = 1
    feats = [torch.randn(2, 8, s, s, generator=gen) for s in (20, 20, 10, 5)]
    ims = [torch.randn(2, 8, s, s, generator=gen).contiguous(memory_format=torch.channels_last) for s in (20, 20, 10, 5)]
    feats[0][:, :, 0, 0] = float("inf")  # outside the window: FM = inf * 0 = NaN, never > 0
    feats[1][:, :, -1, -1] = float("nan")
    expected = [_plain_hm(f, i, mask) for f, i in zip(feats, ims)]
    originals = [i.clone() for i in ims]
    scratch = [i.clone() for i in ims]
    with torch.no_grad():
        if overwrite:
            out = mask_support_features_in_place("hm", feats, scratch, mask)
        else:
            out = mask_support_features("hm", feats, ims, mask)
    for o, e in zip(out, expected):
        assert torch.equal(o, e)
    assert torch.equal(out[0][:, :, 0, 0], ims[0][:, :, 0, 0])  # IM kept outside the window
    assert all(torch.equal(a, b) for a, b in zip(ims, originals))  # the model's IM maps: untouched


def test_hm_with_an_empty_mask_is_input_masking():
    feats, ims = [torch.randn(1, 4, 5, 5)], [torch.randn(1, 4, 5, 5)]
    out = mask_support_features("hm", feats, ims, torch.zeros(1, 10, 10))[0]
    assert torch.equal(out, ims[0]) and out.data_ptr() != ims[0].data_ptr()
    scratch = [ims[0].clone()]
    with torch.no_grad():
        out = mask_support_features_in_place("hm", feats, scratch, torch.zeros(1, 10, 10))[0]
    assert torch.equal(out, ims[0]) and out.data_ptr() == scratch[0].data_ptr()


def test_in_place_masking_under_autograd_is_the_plain_rule():
    feat, im = torch.randn(1, 3, 6, 6, requires_grad=True), torch.randn(1, 3, 6, 6)
    mask = torch.zeros(1, 6, 6)
    mask[0, 1:3, 2:5] = 1
    out = mask_support_features_in_place("hm", [feat], [im], mask)[0]
    assert out.requires_grad and out.data_ptr() != im.data_ptr()
    assert torch.equal(out, _plain_hm(feat, im, mask))


def test_hm_stays_differentiable_for_features_that_require_grad():
    feat = torch.randn(1, 3, 6, 6, requires_grad=True)
    im = torch.randn(1, 3, 6, 6)
    mask = torch.zeros(1, 6, 6)
    mask[0, 1:3, 2:5] = 1
    out = mask_support_features("hm", [feat], [im], mask)[0]
    assert torch.equal(out, _plain_hm(feat, im, mask))
    out.sum().backward()
    assert torch.equal(feat.grad[0, :, 0], torch.zeros(3, 6))  # outside the mask: IM, no gradient
    assert torch.equal(feat.grad[0][:, 1:3, 2:5], (feat[0, :, 1:3, 2:5] > 0).float())
