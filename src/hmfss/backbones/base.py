"""Frozen ImageNet backbones that return the tapped intermediate features.

Each backbone maps an image batch (B, 3, H, W), normalised with the ImageNet mean/std, to a
list of feature maps ``[(B, C_i, h_i, w_i), ...]`` ordered shallow to deep. The last
``sum(levels)`` maps form the correlation pyramid: ``levels = (n4, n3, n2)`` counts the maps
of the deepest, middle and shallowest level. Backbones optionally return one extra
shallow map in front (VAT's layer1 skip feature), which is never correlated.

Parameter names equal torchvision's (ResNet, VGG16) or efficientnet_pytorch's
(EfficientNet-Lite0), so the usual ImageNet ``.pth`` files load as they are. The classifier
heads are not built; their keys are ignored when loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

from hmfss.errors import HmfssError
from hmfss.inputs import check_path
from hmfss.weights import check_archive_crc, load_state

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone returns: channels of every correlated map and the pyramid grouping."""

    channels: tuple[int, ...]  # channels of the correlated maps, shallow to deep
    levels: tuple[int, int, int]  # number of maps in the deepest, middle, shallowest level
    extra_channels: int | None = None  # channels of the optional extra shallow map
    min_side: int = 1  # smallest image height and width it accepts


class Backbone(nn.Module):
    """Base class: a frozen feature extractor (eval mode, no gradients)."""

    info: BackboneInfo
    ignored_keys: tuple[str, ...] = ()  # prefixes of weight-file keys with no module here

    def __init__(self, extra_shallow: bool = False) -> None:
        super().__init__()
        self.extra_shallow = extra_shallow

    def train(self, mode: bool = True) -> "Backbone":
        # Frozen: BatchNorm always uses the ImageNet running statistics, as in the original models.
        return super().train(False)

    def extract(self, images: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def forward(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) -> tapped maps, shallow to deep; computed without gradients.

        Maps come out in the memory layout of ``images`` (NCHW or channels-last). The two
        layouts round differently; which images may use channels-last is decided by the
        model's execution path (see ``hmfss.fast.path``).
        """
        with torch.no_grad():
            return self.extract(images)

    def conv_bn_pairs(self) -> Iterator[tuple[nn.Module, str, str]]:
        """(parent, conv name, BatchNorm name) for every BatchNorm applied straight to a conv."""
        return iter(())

    def load_weights(self, path: str | Path) -> None:
        """Load an ImageNet weight file with this backbone's parameter names."""
        path = check_path(path, "backbone weights")
        if not path.is_file():
            raise HmfssError(f"backbone weights file not found: {path}")
        check_archive_crc(path, "backbone weights")
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
        load_state(self, state, path, kind="backbone weights")
