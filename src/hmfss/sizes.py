"""The input sizes a model accepts: the backbone's smallest image side and the head's
smallest support maps (ASNet's attention layers need 17x17 at its middle and shallow levels,
so 257 px with a ResNet). A model checks its inputs against them before its head runs and
names the smallest square size in its error.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hmfss.backbones import Backbone, build_backbone
from hmfss.correlation import level_slices
from hmfss.heads import Head
from hmfss.inputs import MAX_IMG_SIZE
from hmfss.meta import quick_meta_resize


def image_side_problem(backbone: Backbone, h: int, w: int) -> str | None:
    """Why images of h x w pixels are too small for ``backbone`` (None: they fit)."""
    need = backbone.info.min_side
    if min(h, w) < need:
        return f"the backbone needs a height and width of at least {need}"
    return None


def support_plane_problem(head: Head, masked: list[Tensor], levels: tuple[int, int, int]) -> str | None:
    """Why masked support maps (N, C, h, w) are too small for ``head`` (None: they fit)."""
    names = ("deepest", "middle", "shallowest")
    for name, part, need in zip(names, level_slices(levels, len(masked)), head.min_support_plane):
        for feat in masked[part]:
            if min(feat.shape[-2:]) < need:
                h, w = feat.shape[-2:]
                return f"its {name} support maps are {h}x{w} and the head needs at least {need}x{need}"
    return None


class SquareSides:
    """Which square image sides a backbone (by name) and ``head`` accept, found on shapes
    alone: the backbone runs on meta tensors (about 0.3 s a side for a ResNet), and only for
    heads with a minimum support plane."""

    def __init__(self, backbone_name: str, head: Head):
        with torch.device("meta"):
            self.backbone = build_backbone(backbone_name, extra_shallow=head.extra_shallow)
        self.head = head
        self.shapes_only = set(head.min_support_plane) != {1}

    def problem(self, side: int) -> str | None:
        """Why square images of this side are too small (None: they fit)."""
        problem = image_side_problem(self.backbone, side, side)
        if problem is not None or not self.shapes_only:
            return problem
        image, mask = torch.empty(1, 3, side, side, device="meta"), torch.empty(1, side, side, device="meta")
        with quick_meta_resize():
            maps = self.backbone(image)
            masked = self.head.support_features(maps, maps, mask, "fm")
        return support_plane_problem(self.head, masked, self.backbone.info.levels)

    def smallest(self) -> int | None:
        """The smallest side that fits (None: none up to MAX_IMG_SIZE), by bisection."""
        if not self.shapes_only:
            return self.backbone.info.min_side
        if self.problem(MAX_IMG_SIZE) is not None:
            return None
        low, high = 1, MAX_IMG_SIZE
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if self.problem(middle) is None else (middle + 1, high)
        return low
