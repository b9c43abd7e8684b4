"""Helpers shared by the heads for 4D correlation volumes (N, C, Hq, Wq, Hs, Ws)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def resize_query_dims(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly (align_corners=True) resize the query dims of (N, C, Hq, Wq, Hs, Ws) to
    ``size``: every (channel, support position) is one (Hq, Wq) plane. Returns a
    (N, C, *size, Hs, Ws) view (``x`` itself when the size already fits). Coarse-to-fine
    fusion in VAT and ASNet; HSNet has a channels-last twin in :mod:`hmfss.heads.conv4d`."""
    n, c, hq, wq, hs, ws = x.shape
    size = (int(size[0]), int(size[1]))
    if (hq, wq) == size:
        return x
    planes = x.permute(0, 1, 4, 5, 2, 3).reshape(n, c * hs * ws, hq, wq)
    planes = F.interpolate(planes, size, mode="bilinear", align_corners=True)
    return planes.view(n, c, hs, ws, *size).permute(0, 1, 4, 5, 2, 3)
