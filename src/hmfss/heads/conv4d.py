"""Center-pivot 4D convolution (HSNet, SPEC §3.1) and 6D tensor helpers.

4D correlation tensors are laid out (N, C, Hq, Wq, Hs, Ws): query dims, then support dims.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def resize_query_dims(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly (align_corners=True) resize the query dims of (N, C, Hq, Wq, Hs, Ws)."""
    n, c, hq, wq, hs, ws = x.shape
    if (hq, wq) == tuple(size):
        return x
    planes = x.permute(0, 4, 5, 1, 2, 3).reshape(n * hs * ws, c, hq, wq)
    planes = F.interpolate(planes, size, mode="bilinear", align_corners=True)
    return planes.view(n, hs, ws, c, *size).permute(0, 3, 4, 5, 1, 2)


def conv_query_plane(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Apply a 2D conv over (Hq, Wq) independently at every support position."""
    n, c, hq, wq, hs, ws = x.shape
    planes = x.permute(0, 4, 5, 1, 2, 3).reshape(n * hs * ws, c, hq, wq)
    out = conv(planes)
    return out.view(n, hs, ws, *out.shape[1:]).permute(0, 3, 4, 5, 1, 2)


def conv_support_plane(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Apply a 2D conv over (Hs, Ws) independently at every query position."""
    n, c, hq, wq, hs, ws = x.shape
    planes = x.permute(0, 2, 3, 1, 4, 5).reshape(n * hq * wq, c, hs, ws)
    out = conv(planes)
    return out.view(n, hq, wq, *out.shape[1:]).permute(0, 3, 1, 2, 4, 5)


class CenterPivotConv4d(nn.Module):
    """4D conv whose kernel is non-zero only on the two planes through its centre.

    ``conv1`` (query plane) runs over (Hq, Wq) on the support grid sub-sampled by the stride;
    ``conv2`` (support plane) runs over (Hs, Ws) with the stride. Query dims are never strided.
    (N, Cin, Hq, Wq, Hs, Ws) -> (N, Cout, Hq, Wq, ceil(Hs/s), ceil(Ws/s)).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        pad = kernel_size // 2
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad)
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=pad)

    def forward(self, x: Tensor) -> Tensor:
        s = self.stride
        sub = x[..., ::s, ::s] if s > 1 else x
        return conv_query_plane(self.conv1, sub) + conv_support_plane(self.conv2, x)
