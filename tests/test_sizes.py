"""Inputs too small for a backbone or head are refused with one HmfssError naming the size and
the smallest square size that works, before any layer fails with its own error.

Hand-derived sizes: a ResNet's or Lite0's middle-level map (stride 16, every stride-2 step
padded) is ceil(s / 16) wide, VGG16's (unpadded 2x2 pools) floor(s / 16). ASNet needs 17
there, so s >= 16 * 16 + 1 = 257 on a ResNet or Lite0 and s >= 17 * 16 = 272 on VGG16. VGG16
alone needs five 2x2 pools' worth: s >= 32.
"""

from __future__ import annotations

import pytest
import torch

import hmfss.model
from helpers import on_meta
from hmfss import build_model, load_model, save_checkpoint
from hmfss.errors import HmfssError
from hmfss.sizes import SquareSides


def meta_model(arch: str, backbone: str):
    with torch.device("meta"):
        return build_model(arch, backbone, "hm").eval()


def meta_forward(model, h: int, w: int) -> None:
    with on_meta(), torch.no_grad():
        image, mask = torch.empty(1, 3, h, w), torch.empty(1, h, w)
        model(image, image, mask)


@pytest.mark.parametrize("arch,backbone,side", [
    ("asnet", "resnet50", 257),
    ("asnet", "vgg16", 272),
    ("hsnet", "vgg16", 32),
    ("hsnet", "resnet101", 1),
    ("vat", "resnet50", 1),
])
def test_the_smallest_accepted_side_is_the_hand_derived_one(arch, backbone, side):
    sides = SquareSides(backbone, meta_model(arch, backbone).head)
    assert sides.problem(side) is None
    if side > 1:
        assert sides.problem(side - 1) is not None


def test_bisection_finds_the_smallest_side():
    assert SquareSides("vgg16", meta_model("asnet", "vgg16").head).smallest() == 272
    assert SquareSides("vgg16", meta_model("hsnet", "vgg16").head).smallest() == 32
    assert SquareSides("resnet50", meta_model("hsnet", "resnet50").head).smallest() == 1


@pytest.mark.parametrize("arch,backbone,side", [("asnet", "efficientnet-lite0", 257), ("hsnet", "vgg16", 32)])
def test_the_declared_minimum_is_where_the_layers_themselves_start_to_fail(arch, backbone, side, monkeypatch):
    model = meta_model(arch, backbone)
    meta_forward(model, side, side)
    # without hmfss's checks, one pixel less fails inside a layer
    monkeypatch.setattr(model.head, "min_support_plane", (1, 1, 1))
    monkeypatch.setattr(hmfss.model, "image_side_problem", lambda *args: None)
    with pytest.raises(RuntimeError) as failure:
        meta_forward(model, side - 1, side - 1)
    assert not isinstance(failure.value, HmfssError)


@pytest.fixture(scope="module")
def asnet():
    torch.manual_seed(0)
    return build_model("asnet", "efficientnet-lite0", "hm").eval()


def test_every_entry_point_refuses_images_too_small_for_the_head(asnet):
    query, mask = torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    message = (r"images of 64x64 pixels are too small for asnet on efficientnet-lite0: its middle support maps "
               r"are 4x4 and the head needs at least 17x17; square images need at least 257x257")
    with torch.no_grad():
        with pytest.raises(HmfssError, match=message):
            asnet(query, query, mask)
        with pytest.raises(HmfssError, match=message):
            asnet.predict_mask(query, query.unsqueeze(1), mask.unsqueeze(1))
        with pytest.raises(HmfssError, match=message):
            asnet.encode_support(query.unsqueeze(1), mask.unsqueeze(1))
    with pytest.raises(HmfssError, match=message.replace("64x64 pixels", "100x100 pixels").split(":")[0]):
        asnet.check_image_size(100)
    asnet.check_image_size(257)
    assert asnet.min_image_size() == 257


def test_a_wide_image_is_measured_on_its_pooled_maps():
    # 1000 px wide: the middle map is 63 wide, so ASNet pools it by 2 on both axes; 300 px
    # high gives 19 rows before pooling and 10 after, below 17 although 300 >= 257
    with pytest.raises(HmfssError, match="images of 300x1000 pixels .* its middle support maps are 10x32"):
        meta_forward(meta_model("asnet", "efficientnet-lite0"), 300, 1000)


def test_the_backbone_minimum_is_checked_on_each_side():
    with pytest.raises(HmfssError, match="images of 20x200 pixels are too small for hsnet on vgg16: the backbone "
                                         "needs a height and width of at least 32; square images need at least 32x32"):
        meta_forward(meta_model("hsnet", "vgg16"), 20, 200)


def test_loading_a_checkpoint_at_a_size_too_small_is_refused(asnet, tmp_path):
    path = save_checkpoint(asnet, tmp_path / "asnet.pt")
    with pytest.raises(HmfssError, match=r"asnet\.pt: images of 128x128 pixels are too small .* at least 257x257"):
        load_model(path, img_size=128)
    assert load_model(path, img_size=257).config.img_size == 257
