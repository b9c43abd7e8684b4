"""ASNet learner (attentive squeeze network, iFSL fs-s) and its support pooling.

An attentive squeeze layer treats a correlation block (N, C, Hq, Wq, Hs, Ws) as Hq*Wq
independent support planes. At every query position it runs global multi-head attention from
a strided "query" plane (a k x k / stride s conv of the support plane) to a "key" plane (the
same kind of conv when ``pool_kv``, else a 1x1 conv of the full plane), with keys at zero-mask
support positions blanked; the attended values are aggregated into Cout channels, added to a
shortcut of the input, and followed by a position-wise feed-forward layer. Support dims shrink,
query dims stay.

Reproduced as the original has them (so that its checkpoints give its results): the attention
logits are *not* scaled by 1/sqrt(d), and a key is blanked (logit -1e9) iff the support mask,
bilinearly resized (align_corners=True) to the key plane, is exactly 0 there.

Support maps at least ``pool_threshold`` (50) wide are average-pooled (3x3, stride 2, pad 1)
before any masking, for the support and the input-masked support alike. The original ASNet
uses no feature masking (``masking="none"``); ASNet-HM masks after the pooling.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.backbones import BackboneInfo
from hmfss.errors import HmfssError
from hmfss.masking import mask_support_features
from hmfss.heads.base import Head, register_head
from hmfss.heads.hsnet import decode, hsnet_decoder
from hmfss.heads.recipe import ASNET_RECIPE
from hmfss.heads.volume import resize_query_dims

ATTENTION_HEADS = 8
GROUPS = 4
MASKED_LOGIT = -1e9


def _plane_conv(cin: int, cout: int, kernel: int, stride: int, padding: int, bias: bool) -> nn.Conv3d:
    """A 2D conv over the support plane, applied at every query position of (N, C, T, Hs, Ws)."""
    return nn.Conv3d(cin, cout, (1, kernel, kernel), (1, stride, stride), (0, padding, padding), bias=bias)


def apply_pointwise_as_matmul(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)``, with 1x1x1 convolutions (also inside Sequentials) done as one matmul:
    the same arithmetic, several times faster than a 3D convolution on the CPU."""
    if isinstance(module, nn.Sequential):
        for child in module:
            x = apply_pointwise_as_matmul(child, x)
        return x
    if isinstance(module, nn.Conv3d) and module.kernel_size == (1, 1, 1) and module.stride == (1, 1, 1):
        n, c = x.shape[:2]
        out = torch.matmul(module.weight.view(module.out_channels, c), x.reshape(n, c, -1))
        if module.bias is not None:
            out = out + module.bias.view(1, -1, 1)
        return out.view(n, module.out_channels, *x.shape[2:])
    return module(x)


class AttentiveSqueeze(nn.Module):
    """Masked global attention over the support plane, per query position."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, pool_kv: bool):
        super().__init__()
        hidden = cout // 2
        if hidden % ATTENTION_HEADS:
            raise ValueError(f"half of the output channels ({hidden}) must be divisible by {ATTENTION_HEADS}")
        # identity shortcut only where the layer keeps the channels and the plane size
        keeps_size = math.floor((2 * padding - kernel) / stride) == -1
        if cin == cout and keeps_size:
            self.short_cut: nn.Module = nn.Identity()
        else:
            self.short_cut = nn.Sequential(
                _plane_conv(cin, cout, kernel, stride, padding, bias=False),
                nn.GroupNorm(GROUPS, cout),
                nn.ReLU(inplace=True),
            )
        self.qhead = _plane_conv(cin, hidden, kernel, stride, padding, bias=True)
        kv = (kernel, stride, padding) if pool_kv else (1, 1, 0)
        self.khead = _plane_conv(cin, hidden, *kv, bias=True)
        self.vhead = _plane_conv(cin, hidden, *kv, bias=True)
        self.agg = nn.Sequential(
            nn.GroupNorm(GROUPS, hidden),
            nn.ReLU(inplace=True),
            nn.Conv3d(hidden, cout, 1, bias=False),
            nn.GroupNorm(GROUPS, cout),
            nn.ReLU(inplace=True),
        )
        self.out_norm = nn.GroupNorm(GROUPS, cout)

    def forward(self, x: Tensor, support_mask: Tensor) -> Tensor:
        """x (N, Cin, T, Hs, Ws), support_mask (N, H, W) -> (N, Cout, T, Hs', Ws')."""
        shortcut = apply_pointwise_as_matmul(self.short_cut, x)
        q, k, v = (apply_pointwise_as_matmul(conv, x) for conv in (self.qhead, self.khead, self.vhead))
        n, hidden, t, hq, wq = q.shape
        hk, wk = k.shape[-2:]
        d = hidden // ATTENTION_HEADS
        # (N, heads, T, positions, d): one attention problem per (episode, head, query position)
        q = q.view(n, ATTENTION_HEADS, d, t, hq * wq).permute(0, 1, 3, 4, 2)
        k = k.view(n, ATTENTION_HEADS, d, t, hk * wk).permute(0, 1, 3, 2, 4)
        v = v.view(n, ATTENTION_HEADS, d, t, hk * wk).permute(0, 1, 3, 4, 2)
        logits = q @ k  # (N, heads, T, Lq, Lk), no 1/sqrt(d) scaling
        key_mask = F.interpolate(support_mask.unsqueeze(1).float(), (hk, wk), mode="bilinear", align_corners=True)
        blank = (key_mask == 0).view(n, 1, 1, 1, hk * wk)
        logits = logits.masked_fill(blank, MASKED_LOGIT)
        out = logits.softmax(dim=-1) @ v  # (N, heads, T, Lq, d)
        out = out.permute(0, 1, 4, 2, 3).reshape(n, hidden, t, hq, wq)
        return self.out_norm(apply_pointwise_as_matmul(self.agg, out) + shortcut)


class FeedForward(nn.Module):
    """Position-wise 1x1 MLP (C -> C/2 -> C) with a residual and a GroupNorm."""

    def __init__(self, channels: int):
        super().__init__()
        self.ff = nn.Sequential(
            nn.Conv3d(channels, channels // 2, 1, bias=False),
            nn.GroupNorm(GROUPS, channels // 2),
            nn.ReLU(inplace=True),
            nn.Conv3d(channels // 2, channels, 1, bias=False),
        )
        self.out_norm = nn.GroupNorm(GROUPS, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_norm(apply_pointwise_as_matmul(self.ff, x) + x)


class AttentiveSqueezeLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, pool_kv: bool = False):
        super().__init__()
        padding = kernel // 2 if kernel > 2 else 0
        self.attn = AttentiveSqueeze(cin, cout, kernel, stride, padding, pool_kv)
        self.ff = FeedForward(cout)

    def forward(self, x: Tensor, support_mask: Tensor) -> Tensor:
        """(N, Cin, Hq, Wq, Hs, Ws) -> (N, Cout, Hq, Wq, Hs', Ws')."""
        n, _, hq, wq, hs, ws = x.shape
        out = self.ff(self.attn(x.reshape(n, -1, hq * wq, hs, ws), support_mask))
        return out.view(*out.shape[:2], hq, wq, *out.shape[-2:])


class SqueezeBlock(nn.Sequential):
    """Attentive squeeze layers in sequence; every layer sees the support mask."""

    def __init__(self, cin: int, couts: list[int], kernels: list[int], strides: list[int], pool_kv: bool = False):
        layers = []
        for cout, k, s in zip(couts, kernels, strides):
            layers.append(AttentiveSqueezeLayer(cin, cout, k, s, pool_kv))
            cin = cout
        super().__init__(*layers)

    def forward(self, x: Tensor, support_mask: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, support_mask)
        return x


@register_head("asnet")
class ASNetHead(Head):
    """ASNet learner. Option ``pool_threshold`` (default 50): support maps at least this wide
    are average-pooled by 2 before masking and correlation. ``levels``: the backbone's tapped
    maps per correlation level (deepest first), the channels L_i of the input.

    Input: [level4, level3, level2] of (N, L_i, Hq, Wq, Hs, Ws); output (N, 2, 2*Hq2, 2*Wq2).
    """

    original_prefix = "learner."
    recipe = ASNET_RECIPE
    # the middle and shallow blocks' two stride-4 layers (kernel 5, padding 2) take a side s to
    # ceil(s / 16); the mixing blocks' 2x2 kernels then need 2, so s >= 17
    min_support_plane = (1, 17, 17)

    def __init__(
        self,
        levels: tuple[int, int, int],
        backbone_info: BackboneInfo | None = None,
        pool_threshold: int = 50,
        **options: Any,
    ):
        super().__init__()
        if options:
            raise HmfssError(f"unknown ASNet option(s): {', '.join(sorted(options))}")
        if isinstance(pool_threshold, bool) or not isinstance(pool_threshold, numbers.Integral) or pool_threshold < 1:
            raise HmfssError(f"ASNet option pool_threshold must be a positive integer, got {pool_threshold!r}")
        self.pool_threshold = int(pool_threshold)
        l4, l3, l2 = levels
        self.encoder_layer4 = SqueezeBlock(l4, [32, 128], [5, 3], [4, 2])
        self.encoder_layer3 = SqueezeBlock(l3, [32, 128], [5, 5], [4, 4], pool_kv=True)
        self.encoder_layer2 = SqueezeBlock(l2, [32, 128], [5, 5], [4, 4], pool_kv=True)
        self.encoder_layer4to3 = SqueezeBlock(128, [128, 128], [1, 2], [1, 1])
        self.encoder_layer3to2 = SqueezeBlock(128, [128, 128], [1, 2], [1, 1])
        self.decoder1, self.decoder2 = hsnet_decoder()

    def _pool(self, feats: list[Tensor]) -> list[Tensor]:
        return [
            F.avg_pool2d(f, kernel_size=3, stride=2, padding=1) if f.shape[-1] >= self.pool_threshold else f
            for f in feats
        ]

    def support_features(
        self, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor, masking: str
    ) -> list[Tensor]:
        feats = self._pool(feats)
        im_feats = self._pool(im_feats) if im_feats is not None else None
        return mask_support_features(masking, feats, im_feats, mask)

    def forward(self, corr: list[Tensor], *, support_mask: Tensor, **context) -> Tensor:
        sqz4 = self.encoder_layer4(corr[0], support_mask)
        sqz3 = self.encoder_layer3(corr[1], support_mask)
        sqz2 = self.encoder_layer2(corr[2], support_mask)
        sqz4 = sqz4.mean(dim=(-2, -1), keepdim=True)
        mix43 = self.encoder_layer4to3(resize_query_dims(sqz4, sqz3.shape[2:4]) + sqz3, support_mask)
        mix432 = self.encoder_layer3to2(resize_query_dims(mix43, sqz2.shape[2:4]) + sqz2, support_mask)
        # support dims are 1x1 at the original sizes; averaging generalises the squeeze
        return decode(self.decoder1, self.decoder2, mix432.mean(dim=(-2, -1)))
