"""Shifted-window self-attention over a D-dimensional token grid (VAT's transformer).

VAT uses the same transformer twice: over 4D correlation volumes (Hq, Wq, Hs, Ws) and, as a
2D decoder, over image-like maps (H, W). Both are handled here for any number of grid dims D.
Tensors are channels-last, (B, *grid, C).

A stage is ``depth`` pre-norm blocks, ``x + W-MSA(LN(x))`` then ``x + MLP(LN(x))``, whose
windows are shifted by ``window // 2`` (cyclic roll) in every odd block. Attention inside a
window adds a learnable relative-position bias looked up from a table of ``(2w - 1)^D`` rows;
in shifted blocks, token pairs that came from different regions of the rolled grid get -100.
The relative-position index and the shift mask depend only on the geometry: they are computed
once per stage and kept as non-persistent buffers shared by all its blocks.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SHIFT_MASK_VALUE = -100.0

# Attention logits are clamped here (after subtracting the row maximum) before the in-place
# exp: exp of anything lower is below float32's smallest normal number (it changes the
# normalised weights by less than 1e-37), and PyTorch's CPU exp is ~30x slower on such inputs,
# which the shifted-window mask (SHIFT_MASK_VALUE) produces in every masked row.
EXP_FLOOR = -87.0


# --------------------------------------------------------------------------------------------
# Geometry


@lru_cache(maxsize=8)
def _relative_position_index(window: int, ndim: int) -> Tensor:
    with torch.device("cpu"):
        return relative_position_index(window, ndim)


def relative_position_index(window: int, ndim: int) -> Tensor:
    """(w^D, w^D) int64: bias-table row of every (query token, key token) pair of a window.

    Tokens are numbered row-major over the D window coordinates. The row of a pair with
    coordinate differences (d_1, ..., d_D) is the base-(2w - 1) number with digits d_k + w - 1,
    d_1 most significant.
    """
    axes = torch.meshgrid(*[torch.arange(window)] * ndim, indexing="ij")
    coords = torch.stack([a.flatten() for a in axes])  # (D, T)
    digits = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (D, T, T)
    base = 2 * window - 1
    weights = base ** torch.arange(ndim - 1, -1, -1)
    return (digits * weights.view(ndim, 1, 1)).sum(0)


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, S_1..S_D, C) -> (B * nW, w^D, C).

    Windows are ordered batch-major, then by their grid position (row-major over the D dims);
    tokens inside a window row-major over the D window coordinates.
    """
    b, *sizes, c = x.shape
    d = len(sizes)
    split = [b]
    for size in sizes:
        split += [size // window, window]
    order = [0] + [1 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)] + [2 * d + 1]
    return x.reshape(*split, c).permute(order).reshape(-1, window**d, c)


def window_merge(windows: Tensor, window: int, batch: int, sizes: Sequence[int]) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, w^D, C) -> (B, S_1..S_D, C)."""
    d = len(sizes)
    c = windows.shape[-1]
    x = windows.reshape(batch, *[s // window for s in sizes], *[window] * d, c)
    order = [0]
    for i in range(d):
        order += [1 + i, 1 + d + i]
    order.append(2 * d + 1)
    return x.permute(order).reshape(batch, *sizes, c)


def region_ids(sizes: Sequence[int], window: int, shift: int) -> Tensor:
    """Region label of every grid position after the cyclic shift, shape ``sizes``.

    Along each dim the rolled grid has three regions: [0, S-w), [S-w, S-s), [S-s, S); the
    label of a position combines its D per-dim regions into one base-3 number.
    """
    label = torch.zeros(tuple(sizes), dtype=torch.long)
    for dim, size in enumerate(sizes):
        per_dim = torch.zeros(size, dtype=torch.long)
        per_dim[size - window:] = 1
        per_dim[size - shift:] = 2
        view = [1] * len(sizes)
        view[dim] = size
        label = label * 3 + per_dim.view(view)
    return label


def shifted_window_mask(sizes: Sequence[int], window: int, shift: int) -> Tensor:
    """(nW, w^D, w^D) float: -100 between tokens of different regions of a window, else 0."""
    ids = region_ids(sizes, window, shift)
    ids = window_partition(ids[None, ..., None], window)[..., 0]  # (nW, T)
    different = ids[:, :, None] != ids[:, None, :]
    return torch.zeros(different.shape).masked_fill_(different, SHIFT_MASK_VALUE)


# --------------------------------------------------------------------------------------------
# Modules


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a relative-position bias table."""

    def __init__(self, dim: int, heads: int, window: int, ndim: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** ndim, heads))

    def forward(self, x: Tensor, index: Tensor, mask: Tensor | None) -> Tensor:
        """x (B * nW, T, C), index (T, T), mask (nW, T, T) or None -> (B * nW, T, C)."""
        bw, t, c = x.shape
        q, k, v = self.qkv(x).view(bw, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # (B * nW, heads, T, T)
        bias = self.relative_position_bias_table[index.view(-1)].view(t, t, self.heads)
        logits += bias.permute(2, 0, 1)  # in place: no extra copy of the attention matrix
        if mask is not None:
            windows = mask.shape[0]
            logits.view(bw // windows, windows, self.heads, t, t).add_(mask.unsqueeze(1).to(logits.dtype))
        if torch.is_grad_enabled() and logits.requires_grad:
            attn = logits.softmax(dim=-1)
        else:  # inference: normalise in place, one attention matrix alive instead of two
            shifted = logits.sub_(logits.amax(dim=-1, keepdim=True))
            attn = shifted.clamp_(min=EXP_FLOOR).exp_()
            attn /= attn.sum(dim=-1, keepdim=True)
        del logits
        out = (attn @ v).transpose(1, 2).reshape(bw, t, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention block over a channels-last (B, *grid, C) tensor."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, ndim: int, mlp_ratio: int = 4):
        super().__init__()
        self.window, self.shift, self.ndim = window, shift, ndim
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, ndim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor, index: Tensor, mask: Tensor | None) -> Tensor:
        b, *sizes, _ = x.shape
        dims = tuple(range(1, self.ndim + 1))
        h = self.norm1(x)
        if self.shift:
            h = torch.roll(h, (-self.shift,) * self.ndim, dims)
        h = self.attn(window_partition(h, self.window), index, mask if self.shift else None)
        h = window_merge(h, self.window, b, sizes)
        if self.shift:
            h = torch.roll(h, (self.shift,) * self.ndim, dims)
        x = x + h
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    """``depth`` blocks over a fixed grid ``sizes``, shift 0 / window//2 alternating.

    As in Swin, a grid no larger than the window in some dim is one unshifted window of
    ``min(sizes)``. ``final_norm`` adds a LayerNorm after the last block. Input and output are
    channels-last (B, *sizes, C).
    """

    def __init__(
        self,
        dim: int,
        sizes: Sequence[int],
        depth: int,
        heads: int,
        window: int,
        final_norm: bool = False,
    ):
        super().__init__()
        self.sizes = tuple(sizes)
        ndim = len(self.sizes)
        shift = window // 2
        if min(self.sizes) <= window:
            window, shift = min(self.sizes), 0
        if any(s % window for s in self.sizes):
            raise ValueError(f"grid {self.sizes} is not a multiple of the window {window}")
        self.window, self.shift = window, shift
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, shift if i % 2 else 0, ndim) for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim) if final_norm else None
        # cached (on the CPU): the same for every stage; moved to the current default device
        index = _relative_position_index(window, ndim).to(torch.empty(0).device, copy=True)
        self.register_buffer("relative_position_index", index, persistent=False)
        mask = shifted_window_mask(self.sizes, window, shift) if shift and depth > 1 else None
        self.register_buffer("attn_mask", mask, persistent=False)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:-1]) != self.sizes:
            raise ValueError(f"expected a grid {self.sizes}, got {tuple(x.shape[1:-1])}")
        for block in self.blocks:
            x = block(x, self.relative_position_index, self.attn_mask)
        return self.norm(x) if self.norm is not None else x


def _truncated_normal(tensor: Tensor, std: float = 0.02) -> None:
    """Swin's init, N(0, 0.02) truncated to [-2, 2]: the bounds are 100 sigma away and never
    reached, so plain normal sampling gives the same distribution (and is much faster)."""
    nn.init.normal_(tensor, 0.0, std)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        _truncated_normal(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, WindowAttention):
        _truncated_normal(module.relative_position_bias_table)
