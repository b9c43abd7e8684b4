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


def _math_dtype(x: Tensor) -> torch.dtype:
    """float32 for half-precision maps (autocast), else the maps' own dtype."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


BLOCK_BYTES = 1 << 20  # a block of rows small enough to stay in a core's L2 cache


def row_blocks(x: Tensor, block_bytes: int | None = None) -> list[slice]:
    """Slices of the outer dim of (N, outer, inner, C) in blocks of about ``block_bytes``
    (default :data:`BLOCK_BYTES`): element-wise chains and their sums run block by block in
    the cache instead of one memory pass per operation. One block on devices other than the
    CPU (a loop would only add kernel launches) and under torch.compile (the compiler fuses
    the chain itself; traced, the loop would unroll into hundreds of operations)."""
    n, outer, inner, c = x.shape
    size = BLOCK_BYTES if block_bytes is None else block_bytes
    rows = max(1, min(outer, size // max(1, n * inner * c * x.element_size())))
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        rows = outer
    return [slice(first, min(first + rows, outer)) for first in range(0, outer, rows)]


def _two_stage_sum(v: Tensor) -> Tensor:
    """(N, outer, inner, C) -> (N, C): summed over inner, then outer (accurate float32 sums).
    Half-precision maps are summed block by block: a whole-tensor ``sum(dtype=float32)``
    first converts the whole tensor in memory."""
    math = _math_dtype(v)
    if v.dtype == math:
        return v.sum(2).sum(1)
    partial = v.new_empty(v.shape[0], v.shape[1], v.shape[3], dtype=math)
    for rows in row_blocks(v):
        torch.sum(v[:, rows], 2, dtype=math, out=partial[:, rows])
    return partial.sum(1)


def _block_buffer(x: Tensor, blocks: list[slice]) -> Tensor:
    """Scratch for one block of ``x`` in the math dtype."""
    return x.new_empty(x.shape[0], blocks[0].stop - blocks[0].start, *x.shape[2:], dtype=_math_dtype(x))


def _centred_products_summed(x: Tensor, mean_c: Tensor, other: Tensor | None) -> Tensor:
    """(N, C): sum over positions of (x - mean) * other (``other`` None: (x - mean) squared),
    in the math dtype, summed over inner then outer, block by block."""
    n, outer, _, c = x.shape
    blocks = row_blocks(x)
    buffer, partial = _block_buffer(x, blocks), x.new_empty(n, outer, c, dtype=_math_dtype(x))
    for rows in blocks:
        xc = buffer[:, :rows.stop - rows.start]
        torch.sub(x[:, rows], mean_c, out=xc)
        torch.mul(xc, xc if other is None else other[:, rows], out=xc)
        torch.sum(xc, 2, out=partial[:, rows])
    return partial.sum(1)


def _affine_of_centred(x: Tensor, mean_c: Tensor, scale: Tensor, shift: Tensor, out: Tensor,
                       addend: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``out`` (x's shape and dtype) = (x - mean) * scale + shift (+ a * b for ``addend``),
    block by block in the math dtype, each block rounded to ``out``'s dtype once."""
    blocks = row_blocks(x)
    buffer = None if out.dtype == _math_dtype(x) else _block_buffer(x, blocks)
    for rows in blocks:
        target = out[:, rows] if buffer is None else buffer[:, :rows.stop - rows.start]
        torch.sub(x[:, rows], mean_c, out=target)
        target.mul_(scale).add_(shift)
        if addend is not None:
            target.addcmul_(addend[0][:, rows], addend[1])
        if buffer is not None:
            out[:, rows].copy_(target)
    return out


def _group_stats(x: Tensor, groups: int, eps: float) -> tuple[Tensor, Tensor]:
    """Mean and 1/std per (sample, group) of (N, outer, inner, C), each (N, G, 1), in two
    passes (mean, then centred squares)."""
    n, _, _, c = x.shape
    count = x[0].numel() // groups
    mean = _two_stage_sum(x).view(n, groups, c // groups).sum(-1, keepdim=True) / count
    squares = _centred_products_summed(x, _per_channel(mean, n, c), None)
    var = squares.view(n, groups, c // groups).sum(-1, keepdim=True) / count
    return mean, torch.rsqrt(var + eps)


def _per_channel(stat: Tensor, n: int, c: int) -> Tensor:
    """(N, G, 1) -> (N, 1, 1, C), each group's value repeated over its channels."""
    groups = stat.shape[1]
    return stat.expand(n, groups, c // groups).reshape(n, 1, 1, c)


def _normalise(x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float,
               shape: torch.Size) -> tuple[Tensor, Tensor, Tensor]:
    """GroupNorm of (N, outer, inner, C) as a fresh tensor of ``shape`` and x's dtype (no view:
    autograd would copy a view's whole gradient for an in-place op on it); with the mean and
    1/std, each (N, G, 1). Not differentiable as written."""
    n, c = x.shape[0], x.shape[-1]
    mean, rstd = _group_stats(x, groups, eps)
    scale = _per_channel(rstd, n, c) * weight.view(1, 1, 1, c)
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    _affine_of_centred(x, _per_channel(mean, n, c), scale, bias.view(1, 1, 1, c), out.view(x.shape))
    return out, mean, rstd


class _GroupNormCL(torch.autograd.Function):
    """GroupNorm of (N, outer, inner, C) with an analytic backward: the input is saved (not
    the temporaries of a composite), gradients come from two per-channel sums and one
    element-wise pass. The output is a fresh tensor of the caller's ``shape``. Half-precision
    maps stay so in memory (input, output, gradients); the math is float32."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float, shape: torch.Size) -> Tensor:
        out, mean, rstd = _normalise(x, weight, bias, groups, eps, shape)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        """dx = rstd * (w * dy - xhat * b - a), xhat = (x - mean) * rstd, with a and b the
        group means of w * dy and w * dy * xhat; xhat is formed block by block, never whole."""
        x, weight, mean, rstd = ctx.saved_tensors
        n, c, g = x.shape[0], x.shape[-1], ctx.groups
        count = x[0].numel() // g
        grad = grad.contiguous().view(x.shape)
        mean_c, rstd_c, w = _per_channel(mean, n, c), _per_channel(rstd, n, c), weight.view(1, 1, 1, c)
        sum_dy = _two_stage_sum(grad)  # (N, C)
        sum_dy_xhat = _centred_products_summed(x, mean_c, grad) * rstd_c.view(n, c)
        a = (sum_dy * w.view(1, c)).view(n, g, c // g).sum(-1, keepdim=True) / count  # (N, G, 1)
        b = (sum_dy_xhat * w.view(1, c)).view(n, g, c // g).sum(-1, keepdim=True) / count
        scale_xc = -(rstd_c * rstd_c) * _per_channel(b, n, c)
        shift = -rstd_c * _per_channel(a, n, c)
        dx = _affine_of_centred(x, mean_c, scale_xc, shift, torch.empty_like(x), (grad, rstd_c * w))
        return dx, sum_dy_xhat.sum(0), sum_dy.sum(0), None, None, None


def group_norm_cl(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm`` applied to a channels-last (N, ..., C) tensor (same result as on (N, C, ...)).

    Statistics in two passes (mean, then centred squares), each summed in two stages over a
    balanced (outer, inner) split of the positions, so that float32 sums over many positions
    stay accurate; float32 math for half-precision maps (autocast); on the CPU each chain runs
    block by block in the cache (:func:`row_blocks`). With autograd an analytic backward
    (:class:`_GroupNormCL`); without, :func:`_normalise` alone.
    """
    n, c, g = x.shape[0], x.shape[-1], norm.num_groups
    positions = x.numel() // (n * c)
    outer, inner = _balanced_split(positions)
    v = x.reshape(n, outer, inner, c)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, norm.weight, norm.bias))
    if grad:
        return _GroupNormCL.apply(v, norm.weight, norm.bias, g, norm.eps, x.shape)
    return _normalise(v, norm.weight, norm.bias, g, norm.eps, x.shape)[0]
