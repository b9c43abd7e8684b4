"""Helpers shared by the heads for 4D correlation volumes (N, C, Hq, Wq, Hs, Ws)."""

from __future__ import annotations

import torch
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


def max_pool_blocks(x: Tensor, dims: tuple[int, ...], size: int) -> Tensor:
    """Max over non-overlapping ``size``-long blocks along ``dims``, a last shorter block
    keeping its own maximum: the values of ``F.max_pool2d/3d(..., size, size, ceil_mode=True)``
    over those dims. A separable max of strided views (dims padded with -inf to a multiple of
    ``size``): on the CPU it skips the argmax indices PyTorch's pooling computes (see
    docs/performance.md), and a maximum involves no rounding. For inference: the gradient of
    a tie would differ from pooling's.
    """
    pad = [0] * (2 * x.dim())
    for d in dims:
        pad[2 * (x.dim() - 1 - d) + 1] = -x.shape[d] % size
    if any(pad):
        x = F.pad(x, pad, value=float("-inf"))
    for d in dims:
        lead = (slice(None),) * d
        out = x[lead + (slice(0, None, size),)]
        for offset in range(1, size):
            out = torch.maximum(out, x[lead + (slice(offset, None, size),)])
        x = out
    return x
