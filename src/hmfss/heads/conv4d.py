"""Center-pivot 4D convolution (HSNet, SPEC §3.1) and 6D tensor helpers.

4D correlation tensors are (N, C, Hq, Wq, Hs, Ws) at module boundaries: query dims, then
support dims. Inside the HSNet head they are kept "query-major channels-last",
(N, Hq, Wq, Hs, Ws, C) contiguous: then every support-plane conv reads its input without a
copy (a channels-last (N*Hq*Wq, C, Hs, Ws) batch), GroupNorm normalises contiguous channel
groups, and only the (sub-sampled) query-plane branch needs a transpose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def to_channels_last(x: Tensor) -> Tensor:
    """(N, C, Hq, Wq, Hs, Ws) -> contiguous (N, Hq, Wq, Hs, Ws, C)."""
    return x.permute(0, 2, 3, 4, 5, 1).contiguous()


def from_channels_last(x: Tensor) -> Tensor:
    """(N, Hq, Wq, Hs, Ws, C) -> (N, C, Hq, Wq, Hs, Ws) view."""
    return x.permute(0, 5, 1, 2, 3, 4)


def _conv_planes(conv: nn.Conv2d, planes: Tensor) -> Tensor:
    """Conv over a (M, H, W, C) stack of planes (channels-last) -> (M, H', W', C')."""
    out = conv(planes.permute(0, 3, 1, 2))
    return out.permute(0, 2, 3, 1)


def resize_query_dims(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly (align_corners=True) resize the query dims of (N, C, Hq, Wq, Hs, Ws)."""
    return from_channels_last(resize_query_dims_cl(to_channels_last(x), size))


def resize_query_dims_cl(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Same on (N, Hq, Wq, Hs, Ws, C): every (support position, channel) is one plane."""
    n, hq, wq, hs, ws, c = x.shape
    if (hq, wq) == tuple(size):
        return x
    planes = x.reshape(n, hq, wq, hs * ws * c).permute(0, 3, 1, 2)  # channels-last NCHW view
    out = F.interpolate(planes, tuple(size), mode="bilinear", align_corners=True)
    return out.permute(0, 2, 3, 1).reshape(n, *size, hs, ws, c)


def group_norm_cl(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm`` applied to a channels-last (N, ..., C) tensor (same result as on (N, C, ...))."""
    n, c, g = x.shape[0], x.shape[-1], norm.num_groups
    grouped = x.reshape(n, -1, g, c // g)
    # statistics in fp32 also under bf16/fp16 autocast
    var, mean = torch.var_mean(grouped.float(), dim=(1, 3), keepdim=True, correction=0)
    var, mean = var.to(x.dtype), mean.to(x.dtype)
    scale = torch.rsqrt(var + norm.eps) * norm.weight.view(1, 1, g, c // g).to(x.dtype)
    shift = norm.bias.view(1, 1, g, c // g).to(x.dtype) - mean * scale
    return torch.addcmul(shift, grouped, scale).view(x.shape)


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
        return from_channels_last(self.forward_cl(to_channels_last(x)))

    def forward_cl(self, x: Tensor) -> Tensor:
        """(N, Hq, Wq, Hs, Ws, Cin) contiguous -> (N, Hq, Wq, Hs', Ws', Cout) contiguous."""
        n, hq, wq, hs, ws, c = x.shape
        s = self.stride
        support = _conv_planes(self.conv2, x.view(n * hq * wq, hs, ws, c))
        hs2, ws2, cout = support.shape[1:]
        sub = x[:, :, :, ::s, ::s] if s > 1 else x
        sub = sub.permute(0, 3, 4, 1, 2, 5).reshape(n * hs2 * ws2, hq, wq, c)
        query = _conv_planes(self.conv1, sub).reshape(n, hs2, ws2, hq, wq, cout)
        return support.reshape(n, hq, wq, hs2, ws2, cout) + query.permute(0, 3, 4, 1, 2, 5)
