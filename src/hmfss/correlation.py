"""4D cosine correlation between query and masked support features: the plain reference.

Every correlated layer gives a (B, Hq, Wq, Hs, Ws) tensor of cosine similarities clamped at 0;
the layers of one pyramid level are stacked on dim 1: (B, L, Hq, Wq, Hs, Ws). Levels are
returned deepest first: [level4, level3, level2]. :mod:`hmfss.fast.correlation` writes the
same values in another memory layout.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-5  # added to the norm, as in the original


def normalise(feat: Tensor) -> Tensor:
    """(..., C, h, w) -> (..., C, h*w) with unit channel vectors (norm + eps)."""
    flat = feat.flatten(-2)
    return flat / (flat.norm(dim=-2, keepdim=True) + EPS)


def cosine_correlation(query: Tensor, support: Tensor) -> Tensor:
    """(..., C, hq, wq) x (..., C, hs, ws) -> (..., hq, wq, hs, ws), negatives set to 0.

    Leading dims broadcast, so one query (B, 1, ...) correlates with K supports (B, K, ...).
    """
    q = normalise(query)
    s = normalise(support)
    corr = torch.matmul(q.transpose(-1, -2), s).clamp_(min=0)
    return corr.unflatten(-1, support.shape[-2:]).unflatten(-3, query.shape[-2:])


def level_slices(levels: tuple[int, int, int], count: int) -> list[slice]:
    """Index ranges of the deepest, middle, shallowest level within ``count`` tapped maps."""
    n4, n3, n2 = levels
    return [slice(count - n4, count), slice(count - n4 - n3, count - n4), slice(count - n4 - n3 - n2, count - n4 - n3)]


def hypercorrelation(query_feats: list[Tensor], support_feats: list[Tensor], levels: tuple[int, int, int]) -> list[Tensor]:
    """Correlation pyramid [(..., L_i, hq, wq, hs, ws)] for the last ``sum(levels)`` maps.

    Maps are (..., C, h, w) with broadcastable leading dims. Layers of a level with equal
    shapes are correlated in one batched matmul.
    """
    pyramid = []
    for sl in level_slices(levels, len(query_feats)):
        qs, ss = query_feats[sl], support_feats[sl]
        if len({q.shape for q in qs}) == 1 and len({s.shape for s in ss}) == 1:
            pyramid.append(cosine_correlation(torch.stack(qs, -4), torch.stack(ss, -4)))
        else:
            pyramid.append(torch.stack([cosine_correlation(q, s) for q, s in zip(qs, ss)], -5))
    return pyramid
