"""Center-pivot 4D convolution (HSNet's 4D layer) on correlation tensors.

4D correlation tensors are (N, C, Hq, Wq, Hs, Ws) at module boundaries: query dims, then
support dims. The layer works on the query-major channels-last form (N, Hq, Wq, Hs, Ws, C)
of :mod:`hmfss.fast.channels_last`, where the support-plane conv reads its input without a
copy and only the (sub-sampled) query-plane branch needs a transpose.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hmfss.fast.channels_last import from_channels_last, to_channels_last


def _conv_planes(conv: nn.Conv2d, planes: Tensor) -> Tensor:
    """Conv over a (M, H, W, C) stack of planes (channels-last) -> (M, H', W', C')."""
    out = conv(planes.permute(0, 3, 1, 2))
    return out.permute(0, 2, 3, 1)


def add_branches(a: Tensor, b: Tensor) -> Tensor:
    """``a + b``, written into ``a`` unless autograd records it: an in-place add on ``a`` (a
    view of a conv's output) would make the backward pass copy the whole gradient (CopySlices)."""
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return a + b
    return a.add_(b)


def _conv_output_size(conv: nn.Conv2d, height: int, width: int) -> tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    return (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1


def plane_conv_matrix(conv: nn.Conv2d, height: int, width: int) -> Tensor:
    """``conv``'s weights (no groups, no dilation) acting on one (height, width) plane, as a
    dense (height*width*Cin, height'*width'*Cout) matrix with rows and columns ordered
    (y, x, channel): a flattened channels-last plane times it is the conv's output plane
    without bias. Each (Cin, Cout) block is a kernel tap or zero, picked with ``index_select``:
    its backward sums the blocks of a tap with ``index_add_``, in the same order in every run
    (an advanced-index gather's backward adds them with atomics on several CPU threads).
    """
    out_h, out_w = _conv_output_size(conv, height, width)
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    ty = torch.arange(height)[:, None] - torch.arange(out_h)[None, :] * sh + ph  # tap row of (y, y')
    tx = torch.arange(width)[:, None] - torch.arange(out_w)[None, :] * sw + pw
    valid = ((ty >= 0) & (ty < kh))[:, None, :, None] & ((tx >= 0) & (tx < kw))[None, :, None, :]
    tap = ty.clamp(0, kh - 1)[:, None, :, None] * kw + tx.clamp(0, kw - 1)[None, :, None, :]  # (y, x, y', x')
    tap = torch.where(valid, tap, kh * kw).flatten().to(conv.weight.device)  # row kh*kw: the zero block
    taps = conv.weight.permute(2, 3, 1, 0).reshape(kh * kw, conv.in_channels, conv.out_channels)
    taps = torch.cat([taps, taps.new_zeros(1, *taps.shape[1:])])
    dense = taps.index_select(0, tap).view(height, width, out_h, out_w, *taps.shape[1:])
    return dense.permute(0, 1, 4, 2, 3, 5).reshape(height * width * conv.in_channels, -1)


def _conv_support_planes(conv: nn.Conv2d, planes: Tensor) -> Tensor:
    """:func:`_conv_planes` for the support-plane conv. On the CPU, planes with no more
    positions than the kernel has taps (the 2x2 support grids of HSNet's fusion blocks) go as
    one matmul by :func:`plane_conv_matrix`, which skips the products with the padding."""
    m, h, w, c = planes.shape
    kh, kw = conv.kernel_size
    if h * w > kh * kw or planes.device.type != "cpu":
        return _conv_planes(conv, planes)
    dense = plane_conv_matrix(conv, h, w).to(planes.dtype)
    out = planes.reshape(m, h * w * c) @ dense
    out_h, out_w = _conv_output_size(conv, h, w)
    out = out.view(m, out_h, out_w, conv.out_channels)
    return out if conv.bias is None else add_branches(out, conv.bias.to(out.dtype))




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
        support = _conv_support_planes(self.conv2, x.view(n * hq * wq, hs, ws, c))
        hs2, ws2, cout = support.shape[1:]
        sub = x[:, :, :, ::s, ::s] if s > 1 else x
        sub = sub.permute(0, 3, 4, 1, 2, 5).reshape(n * hs2 * ws2, hq, wq, c)
        query = _conv_planes(self.conv1, sub).reshape(n, hs2, ws2, hq, wq, cout)
        return add_branches(support.reshape(n, hq, wq, hs2, ws2, cout), query.permute(0, 3, 4, 1, 2, 5))

    def forward_query_major(self, x: Tensor) -> Tensor:
        """(N, Hq, Wq, Cin, Hs, Ws) contiguous (as the correlation writes it) ->
        (N, Hq, Wq, Hs', Ws', Cout) contiguous: the first layer of a block, reading the
        correlation without a layout copy (its support planes are already NCHW)."""
        n, hq, wq, c, hs, ws = x.shape
        s = self.stride
        support = self.conv2(x.view(n * hq * wq, c, hs, ws))  # (M, Cout, Hs', Ws')
        cout, hs2, ws2 = support.shape[1:]
        sub = x[..., ::s, ::s] if s > 1 else x
        sub = sub.permute(0, 4, 5, 1, 2, 3).reshape(n * hs2 * ws2, hq, wq, c)  # small gather
        query = _conv_planes(self.conv1, sub).view(n, hs2, ws2, hq, wq, cout)
        support = support.view(n, hq, wq, cout, hs2, ws2).permute(0, 1, 2, 4, 5, 3)
        # one transposing copy, then an add with a single strided operand (docs/performance.md)
        return support.contiguous().add_(query.permute(0, 3, 4, 1, 2, 5))
