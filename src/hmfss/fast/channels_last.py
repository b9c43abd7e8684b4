"""Channels-last helpers for 6D correlation tensors, used by the HSNet head's 4D layers.

A 4D correlation is (N, C, Hq, Wq, Hs, Ws) at module boundaries. Kept "query-major
channels-last", (N, Hq, Wq, Hs, Ws, C) contiguous, every support-plane conv reads its
input without a copy and GroupNorm reduces over contiguous channel vectors (see
docs/performance.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def to_channels_last(x: Tensor) -> Tensor:
    """(N, C, Hq, Wq, Hs, Ws) -> contiguous (N, Hq, Wq, Hs, Ws, C)."""
    return x.permute(0, 2, 3, 4, 5, 1).contiguous()


def from_channels_last(x: Tensor) -> Tensor:
    """(N, Hq, Wq, Hs, Ws, C) -> (N, C, Hq, Wq, Hs, Ws) view."""
    return x.permute(0, 5, 1, 2, 3, 4)


def resize_query_dims_cl(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly (align_corners=True) resize the query dims of (N, Hq, Wq, Hs, Ws, C):
    every (support position, channel) is one plane."""
    n, hq, wq, hs, ws, c = x.shape
    if (hq, wq) == tuple(size):
        return x
    planes = x.reshape(n, hq, wq, hs * ws * c).permute(0, 3, 1, 2)  # channels-last NCHW view
    out = F.interpolate(planes, tuple(size), mode="bilinear", align_corners=True)
    return out.permute(0, 2, 3, 1).reshape(n, *size, hs, ws, c)


def _balanced_split(count: int) -> tuple[int, int]:
    """(outer, inner) with outer * inner == count and inner the largest divisor <= sqrt(count)."""
    for inner in range(math.isqrt(count), 0, -1):
        if count % inner == 0:
            return count // inner, inner
    return count, 1


def group_norm_cl(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm`` applied to a channels-last (N, ..., C) tensor (same result as on (N, C, ...)).

    Statistics in two passes (mean, then centred squares), each summed in two stages over a
    balanced (outer, inner) split of the positions, so that float32 sums over many positions
    stay accurate; float32 statistics under autocast. Without autograd the result is written
    into the centred temporary.
    """
    n, c, g = x.shape[0], x.shape[-1], norm.num_groups
    positions = x.numel() // (n * c)
    outer, inner = _balanced_split(positions)
    v = x.reshape(n, outer, inner, c)
    stats = v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
    count = positions * (c // g)
    mean = stats.sum(2).sum(1).view(n, g, c // g).sum(-1, keepdim=True) / count  # (N, G, 1)
    centred = stats - mean.expand(n, g, c // g).reshape(n, 1, 1, c)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, norm.weight, norm.bias))
    if grad:
        squares = centred.square().sum(2)
    else:  # no temporary of squares (a norm's gradient is undefined at 0, hence the branch)
        squares = torch.linalg.vector_norm(centred, dim=2).square()
    var = squares.sum(1).view(n, g, c // g).sum(-1, keepdim=True) / count
    scale = (torch.rsqrt(var + norm.eps) * norm.weight.view(g, c // g)).view(n, 1, 1, c)
    bias = norm.bias.view(1, 1, 1, c)
    out = centred * scale + bias if grad else centred.mul_(scale).add_(bias)
    return out.to(x.dtype).view(x.shape)
