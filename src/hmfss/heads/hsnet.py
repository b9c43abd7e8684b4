"""HSNet learner (hypercorrelation squeeze network): center-pivot 4D conv blocks squeeze each
correlation level, the levels are fused coarse to fine, a 2D decoder gives the logits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmfss.errors import HmfssError
from hmfss.heads.base import Head, register_head
from hmfss.fast.channels_last import group_norm_cl, resize_query_dims_cl, to_channels_last
from hmfss.fast.traits import accepts_fast_inputs
from hmfss.heads.conv4d import CenterPivotConv4d


def squeeze_block(cin: int, couts: list[int], kernels: list[int], strides: list[int]) -> nn.Sequential:
    """[CP-Conv4d -> GroupNorm(4) -> ReLU] x len(couts)."""
    layers: list[nn.Module] = []
    for cout, k, s in zip(couts, kernels, strides):
        layers += [CenterPivotConv4d(cin, cout, k, s), nn.GroupNorm(4, cout), nn.ReLU(inplace=True)]
        cin = cout
    return nn.Sequential(*layers)


def run_block_cl(block: nn.Sequential, x: Tensor) -> Tensor:
    """Run a :func:`squeeze_block` on a query-major channels-last (N, Hq, Wq, Hs, Ws, C) tensor."""
    for index in range(0, len(block), 3):
        conv, norm = block[index], block[index + 1]
        x = torch.relu_(group_norm_cl(conv.forward_cl(x), norm))
    return x


def squeeze_correlation(block: nn.Sequential, corr: Tensor) -> Tensor:
    """Run a :func:`squeeze_block` on a correlation level (N, L, Hq, Wq, Hs, Ws) of either
    memory layout -> channels-last (N, Hq, Wq, Hs', Ws', C). Query-major memory (as
    ``hmfss.fast.correlation`` writes it) is read in place by the first layer, except when
    training on the CPU: there the first layer's weight gradient is several times faster from
    channels-last support planes, which are worth their copy."""
    query_major = corr.permute(0, 2, 3, 1, 4, 5)
    training_cpu = corr.device.type == "cpu" and torch.is_grad_enabled() and block[0].conv2.weight.requires_grad
    if query_major.is_contiguous() and not training_cpu:
        x = block[0].forward_query_major(query_major)
    else:
        x = block[0].forward_cl(to_channels_last(corr))
    x = torch.relu_(group_norm_cl(x, block[1]))
    return run_block_cl(block[3:], x)


def hsnet_decoder(channels: int = 128) -> tuple[nn.Sequential, nn.Sequential]:
    """HSNet's 2D decoder: (N, 128, h, w) -> [x2 upsample in between] -> (N, 2, 2h, 2w)."""
    decoder1 = nn.Sequential(
        nn.Conv2d(channels, 128, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(inplace=True),
    )
    decoder2 = nn.Sequential(
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 2, 3, padding=1)
    )
    return decoder1, decoder2


def decode(decoder1: nn.Module, decoder2: nn.Module, x: Tensor) -> Tensor:
    """Run the decoder with the x2 bilinear upsample between its halves."""
    x = decoder1(x)
    x = F.interpolate(x, (x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=True)
    return decoder2(x)


@register_head("hsnet")
@accepts_fast_inputs(channels_last_maps=True, query_major_corr=True, plain_support_masking=True)
class HSNetHead(Head):
    """Squeeze each correlation level with CP-Conv4d blocks, fuse coarse to fine, decode.

    Input: [level4, level3, level2] of (N, L_i, Hq, Wq, Hs, Ws); output (N, 2, 2*Hq2, 2*Wq2).
    """

    original_prefix = "hpn_learner."

    def __init__(self, levels: tuple[int, int, int], backbone_info: Any = None, **options: Any):
        super().__init__()
        if options:
            raise HmfssError(f"unknown HSNet option(s): {', '.join(sorted(options))} (HSNet has none)")
        l4, l3, l2 = levels
        self.encoder_layer4 = squeeze_block(l4, [16, 64, 128], [3, 3, 3], [2, 2, 2])
        self.encoder_layer3 = squeeze_block(l3, [16, 64, 128], [5, 3, 3], [4, 2, 2])
        self.encoder_layer2 = squeeze_block(l2, [16, 64, 128], [5, 5, 3], [4, 4, 2])
        self.encoder_layer4to3 = squeeze_block(128, [128] * 3, [3] * 3, [1] * 3)
        self.encoder_layer3to2 = squeeze_block(128, [128] * 3, [3] * 3, [1] * 3)
        self.decoder1, self.decoder2 = hsnet_decoder()

    def forward(self, corr: list[Tensor], **context) -> Tensor:
        # all 4D work in the query-major channels-last layout (see fast/channels_last.py)
        sqz4 = squeeze_correlation(self.encoder_layer4, corr[0])
        sqz3 = squeeze_correlation(self.encoder_layer3, corr[1])
        sqz2 = squeeze_correlation(self.encoder_layer2, corr[2])
        mix43 = run_block_cl(self.encoder_layer4to3, resize_query_dims_cl(sqz4, sqz3.shape[1:3]) + sqz3)
        mix432 = run_block_cl(self.encoder_layer3to2, resize_query_dims_cl(mix43, sqz2.shape[1:3]) + sqz2)
        return decode(self.decoder1, self.decoder2, mix432.mean(dim=(3, 4)).permute(0, 3, 1, 2))
