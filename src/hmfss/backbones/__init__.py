"""Frozen ImageNet backbones, one file per family, and the registry that builds them by name."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from hmfss.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneInfo
from hmfss.backbones.efficientnet import EfficientNetLite0Backbone, lite0_weights_path
from hmfss.backbones.resnet import ResNetBackbone
from hmfss.backbones.vgg import VGG16Backbone
from hmfss.errors import HmfssError

__all__ = ["BACKBONES", "Backbone", "BackboneInfo", "IMAGENET_MEAN", "IMAGENET_STD", "build_backbone",
           "lite0_weights_path"]

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
