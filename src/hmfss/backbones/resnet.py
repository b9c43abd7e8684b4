"""ResNet-50/101 (torchvision layout) tapping every bottleneck output of layer2-4 before its ReLU."""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.backbones.base import Backbone, BackboneInfo


class Bottleneck(nn.Module):
    """torchvision "v1.5" Bottleneck (stride in the 3x3 conv); ``forward`` returns the block
    output *before* its final ReLU."""

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
    inputs on the CPU go as a separable max (rows, then columns) of strided views, which
    skips the unused argmax indices PyTorch's NCHW CPU kernel computes.
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
    """ResNet-50/101 tapping every bottleneck output of layer2-layer4 before its ReLU (the
    original HSNet taps), plus layer1's last output as the optional extra shallow map."""

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
