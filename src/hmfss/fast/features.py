"""Backbone passes on the CPU: pixel-count groups, and a BatchNorm-folded copy for channels-last passes."""

from __future__ import annotations

import torch
from torch import Tensor

from hmfss.backbones import Backbone
from hmfss.fast.folding import fold_backbone

CPU_PIXELS_PER_PASS = 400 * 400  # at most this many pixels per backbone pass (one 400x400 image)
# while training: the 8 channels-last images of a batch-4 HM step (queries and masked supports)
CPU_TRAINING_PIXELS_PER_PASS = 8 * 400 * 400


def grouped_passes(backbone: Backbone, images: Tensor, layout: torch.memory_format, sizes: list[int],
                   pixels_per_pass: int = CPU_PIXELS_PER_PASS) -> list[list[Tensor]]:
    """Backbone maps of consecutive parts of a batch (``sizes`` images each), in ``layout``.

    On the CPU the batch goes in groups of at most ``pixels_per_pass`` pixels, so that small
    images share a pass while large ones keep their activations in cache; elsewhere in one. A
    part that is one group takes that group's maps as they are (no concatenation). The group may
    change maps by rounding: NCHW ones at small image sizes, channels-last ones of EfficientNet-Lite0
    on AVX2 code paths (none measured with AVX-512).
    """
    images = images.contiguous(memory_format=layout)
    n, _, h, w = images.shape
    per_pass = max(1, pixels_per_pass // (h * w)) if images.device.type == "cpu" else n
    groups = [(start, backbone(images[start:start + per_pass])) for start in range(0, n, per_pass)]
    parts, first = [], 0
    for size in sizes:
        last = first + size
        pieces = [[m[max(first, start) - start:min(last, start + per_pass) - start] for m in maps]
                  for start, maps in groups if start < last and start + per_pass > first]
        parts.append(pieces[0] if len(pieces) == 1 else [torch.cat(p) for p in zip(*pieces)])
        first = last
    return parts


class FoldedBackboneCache:
    """:func:`fold_backbone` copy of a backbone, rebuilt whenever the backbone's tensors change
    (load_state_dict, ``.to()``, in-place edits)."""

    def __init__(self) -> None:
        self._cached: tuple[tuple, Backbone] | None = None

    def get(self, backbone: Backbone) -> Backbone:
        key = (id(backbone),) + tuple((t.data_ptr(), t._version, t.dtype)
                                      for t in (*backbone.parameters(), *backbone.buffers()))
        cached = self._cached
        if cached is None or cached[0] != key:
            cached = self._cached = (key, fold_backbone(backbone))
        return cached[1]
