import collections
import copy
import pickle
import re

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hmfss.fast import folding as backbones
from hmfss.fast.folding import fold_backbone
from hmfss.backbones import BACKBONES, build_backbone, lite0_weights_path
from hmfss.backbones.resnet import max_pool_3x3_s2
from hmfss.errors import HmfssError
from hmfss.evaluation.timing import count_flops


def _reference_resnet50_names(shared_reference):
    names = {}
    for line in (shared_reference / "hsnet_resnet50_checkpoint_keys.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        if key.startswith("module.backbone.") and not key.startswith("module.backbone.fc."):
            names[key.removeprefix("module.backbone.")] = tuple(int(x) for x in re.findall(r"\d+", shape))
    return names


def test_resnet50_names_and_shapes_equal_torchvision(shared_reference):
    expected = _reference_resnet50_names(shared_reference)
    state = build_backbone("resnet50").state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_vgg16_names_follow_torchvision_indices():
    state = build_backbone("vgg16").state_dict()
    conv_ids = sorted({int(k.split(".")[1]) for k in state})
    assert conv_ids == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert state["features.28.weight"].shape == (512, 512, 3, 3)


@pytest.mark.parametrize(
    "name,count,shapes",
    [
        ("resnet50", 13, {0: (512, 50, 50), 4: (1024, 25, 25), 12: (2048, 13, 13)}),
        ("resnet101", 30, {3: (512, 50, 50), 26: (1024, 25, 25), 27: (2048, 13, 13)}),
        ("vgg16", 7, {0: (512, 50, 50), 3: (512, 25, 25), 6: (512, 12, 12)}),
        ("efficientnet-lite0", 13, {0: (40, 50, 50), 2: (80, 25, 25), 12: (320, 13, 13)}),
    ],
)
def test_tap_count_and_shapes_at_400(name, count, shapes):
    backbone = build_backbone(name)
    feats = backbone(torch.randn(1, 3, 400, 400))
    assert len(feats) == count == sum(backbone.info.levels)
    for index, shape in shapes.items():
        assert tuple(feats[index].shape[1:]) == shape
    assert [f.shape[1] for f in feats] == list(backbone.info.channels)


def test_resnet_taps_are_pre_relu_block_outputs():
    backbone = build_backbone("resnet50")
    x = torch.randn(1, 3, 96, 96)
    feats = backbone(x)
    assert all((f < 0).any() for f in feats)
    # independent recomputation of layer2.0's output: stem, layer1 (with ReLUs), then block
    with torch.no_grad():
        h = torch.nn.functional.max_pool2d(torch.relu(backbone.bn1(backbone.conv1(x))), 3, 2, 1)
        for block in backbone.layer1:
            h = torch.relu(block(h))
        b = backbone.layer2[0]
        out = b.bn3(b.conv3(torch.relu(b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(h))))))))
        out = out + b.downsample(h)
    torch.testing.assert_close(feats[0], out)


def test_extra_shallow_map_comes_first():
    feats = build_backbone("resnet50", extra_shallow=True)(torch.randn(1, 3, 64, 64))
    assert len(feats) == 14 and feats[0].shape[1] == 256 and feats[0].shape[-1] == 16


def test_backbone_stays_frozen_and_in_eval_mode():
    backbone = build_backbone("resnet50")
    backbone.train()
    assert not backbone.training
    assert not any(p.requires_grad for p in backbone.parameters())
    feats = backbone(torch.randn(1, 3, 64, 64, requires_grad=True))
    assert not feats[-1].requires_grad


def test_lite0_imagenet_weights_load_and_are_not_random():
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    backbone = build_backbone("efficientnet-lite0", "imagenet")
    torch.testing.assert_close(backbone._conv_stem.weight, state["_conv_stem.weight"])
    torch.testing.assert_close(backbone._blocks[15]._bn2.running_var, state["_blocks.15._bn2.running_var"])


def test_torchvision_style_weight_file_loads_with_fc_keys(tmp_path):
    source = build_backbone("resnet50")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 2048)
    state["fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(state, path)
    loaded = build_backbone("resnet50", path)
    torch.testing.assert_close(loaded.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])


def test_wrong_weight_file_is_a_clear_error(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(build_backbone("vgg16").state_dict(), path)
    with pytest.raises(HmfssError, match="vgg.pth does not fit ResNetBackbone: missing key"):
        build_backbone("resnet50", path)
    with pytest.raises(HmfssError, match="not found"):
        build_backbone("resnet50", tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(HmfssError, match="junk.pth"):
        build_backbone("resnet50", tmp_path / "junk.pth")
    with pytest.raises(HmfssError, match="unknown backbone"):
        build_backbone("resnet18")
    with pytest.raises(HmfssError, match="no offline ImageNet weights"):
        build_backbone("resnet50", "imagenet")


def test_registry_lists_all_backbones():
    assert set(BACKBONES) == {"resnet50", "resnet101", "vgg16", "efficientnet-lite0"}


@pytest.mark.parametrize("name", ["resnet50", "efficientnet-lite0", "vgg16"])
def test_folded_copy_gives_the_same_maps_without_batchnorm(name):
    torch.manual_seed(3)
    backbone = build_backbone(name)
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:  # non-trivial statistics, so a wrong fold shows
        norm.running_mean.normal_(0, 0.2)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.normal_(0, 0.2)
    images = torch.randn(2, 3, 64, 64)
    expected = backbone(images)
    folded = fold_backbone(backbone)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules()) == len(norms)  # original kept
    assert len(list(backbone.conv_bn_pairs())) == len(norms)  # every BatchNorm follows a listed conv
    got = folded(images.contiguous(memory_format=torch.channels_last))
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * float(e.abs().max()))
    for e, r in zip(expected, backbone(images)):
        assert torch.equal(e, r)


@pytest.mark.parametrize("size", [(9, 9), (8, 11), (1, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool_equals_pytorch_bit_for_bit(size, channels_last):
    x = torch.randn(2, 5, *size)
    x[0, 0, 0, 0] = float("inf")
    x[1, 1] = -3.0  # ties
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(max_pool_3x3_s2(x), torch.nn.functional.max_pool2d(x, 3, 2, 1))


@pytest.mark.skipif(not backbones.PACKED_CONVS, reason="this PyTorch has no oneDNN conv ops")
@pytest.mark.parametrize("name", ["resnet50", "efficientnet-lite0", "vgg16"])
def test_packed_convs_give_the_maps_of_plain_convs_and_depend_on_the_input_alone(name, monkeypatch):
    torch.manual_seed(4)
    folded = fold_backbone(build_backbone(name))
    packed = [m for m in folded.modules() if isinstance(m, backbones.PackedConv2d)]
    plain_convs = [m for m in folded.modules() if type(m) is torch.nn.Conv2d]
    assert packed and not plain_convs  # every plain conv is packed (Lite0's depthwise "same" convs are not plain)
    images = torch.randn(1, 3, 72, 72).contiguous(memory_format=torch.channels_last)

    def maps(module):
        with torch.no_grad():
            return module(images)

    def plain(module):
        with monkeypatch.context() as m:
            m.setattr(backbones, "PACKED_CONVS", False)
            return maps(module)

    def assert_close(got, expected):  # oneDNN may pick another kernel: same values up to rounding
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5 * float(e.abs().max()))

    got = maps(folded)
    assert all(p._packed is not None for p in packed)
    assert_close(got, plain(folded))
    other = torch.randn(1, 3, 40, 56).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        folded(other)  # another shape packs again; back at the first, the same bits as before
    assert all(torch.equal(a, b) for a, b in zip(maps(folded), got))
    copied = copy.deepcopy(folded)  # packed weights are not copied; the copy packs its own
    assert all(p._packed is None for p in copied.modules() if isinstance(p, backbones.PackedConv2d))
    assert all(torch.equal(a, b) for a, b in zip(maps(copied), got))
    pickle.dumps(folded)
    with torch.no_grad():  # weights changed in place: packed again
        packed[0].weight.mul_(1.5)
    changed = maps(folded)
    assert not torch.equal(changed[-1], got[-1])
    assert_close(changed, plain(folded))


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _unfused_fold(backbone, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(backbones, "_fuse_resnet", lambda net: None)
        return fold_backbone(backbone)


@pytest.mark.skipif(not backbones.PACKED_CONVS, reason="this PyTorch has no oneDNN conv ops")
@pytest.mark.parametrize("extra_shallow", [False, True])
def test_folded_resnet_runs_relus_and_residual_sums_inside_its_convs(extra_shallow, monkeypatch):
    torch.manual_seed(5)
    backbone = build_backbone("resnet50", extra_shallow=extra_shallow)
    fused, unfused = fold_backbone(backbone), _unfused_fold(backbone, monkeypatch)
    images = torch.randn(2, 3, 72, 72).contiguous(memory_format=torch.channels_last)
    with _CountOps() as ops, torch.no_grad():
        got = fused(images)
    # 16 blocks: 3 convs each (their ReLUs and the sum inside) + 4 downsample convs, and the stem's
    assert ops.names["_convolution_pointwise"] == 16 * 2 + 4 + 1
    assert ops.names["_convolution_pointwise_"] == 16
    assert ops.names["add_"] == ops.names["add"] == 0
    # the only ReLUs left outside the convs: one after each block (the taps are pre-ReLU block outputs)
    assert ops.names["relu"] + ops.names["relu_"] == 16
    for g, e in zip(got, unfused(images), strict=True):  # oneDNN may pick another kernel: up to rounding
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5 * float(e.abs().max()))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # not packed: the very same ops
        assert all(torch.equal(g, e) for g, e in zip(fused(images), unfused(images), strict=True))
    # the benchmark's FLOP count knows the fused ops: the same count as the reference pass
    assert count_flops(lambda: fused(images)) == count_flops(lambda: backbone(images.contiguous()))


@pytest.mark.skipif(not backbones.PACKED_CONVS, reason="this PyTorch has no oneDNN conv ops")
def test_packed_conv_adds_into_the_other_tensor_where_packed(monkeypatch):
    torch.manual_seed(6)
    conv = backbones.PackedConv2d(torch.nn.Conv2d(8, 16, 1).requires_grad_(False))
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    other = torch.randn(2, 16, 5, 7).contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias) + other
    kept = other.clone()
    with torch.no_grad():
        got = conv.add_to(x, other)
    assert got.data_ptr() == other.data_ptr()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with monkeypatch.context() as m, torch.no_grad():  # the plain path leaves `other` alone
        m.setattr(backbones, "PACKED_CONVS", False)
        plain = conv.add_to(x, kept)
    assert plain.data_ptr() != kept.data_ptr()
    torch.testing.assert_close(plain, expected, rtol=1e-5, atol=1e-5)
    grad_other = kept.clone().requires_grad_()  # with autograd the plain path, so gradients stay right
    got = conv.add_to(x, grad_other)
    got.sum().backward()
    assert torch.equal(grad_other.grad, torch.ones_like(kept))
