"""4D cosine correlation between query and masked support features (SPEC §2.2).

Every correlated layer gives a (B, Hq, Wq, Hs, Ws) tensor of cosine similarities clamped at 0;
the layers of one pyramid level are stacked on dim 1: (B, L, Hq, Wq, Hs, Ws). Levels are
returned deepest first: [level4, level3, level2].
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-5  # added to the norm, as in the original


def _normalise(feat: Tensor) -> Tensor:
    """(..., C, h, w) -> (..., C, h*w) with unit channel vectors (norm + eps)."""
    flat = feat.flatten(-2)
    return flat / (flat.norm(dim=-2, keepdim=True) + EPS)


def cosine_correlation(query: Tensor, support: Tensor) -> Tensor:
    """(..., C, hq, wq) x (..., C, hs, ws) -> (..., hq, wq, hs, ws), negatives set to 0.

    Leading dims broadcast, so one query (B, 1, ...) correlates with K supports (B, K, ...).
    """
    q = _normalise(query)
    s = _normalise(support)
    corr = torch.matmul(q.transpose(-1, -2), s).clamp_(min=0)
    return corr.unflatten(-1, support.shape[-2:]).unflatten(-3, query.shape[-2:])


def level_slices(levels: tuple[int, int, int], count: int) -> list[slice]:
    """Index ranges of the deepest, middle, shallowest level within ``count`` tapped maps."""
    n4, n3, n2 = levels
    return [slice(count - n4, count), slice(count - n4 - n3, count - n4), slice(count - n4 - n3 - n2, count - n4 - n3)]


def hypercorrelation(
    query_feats: list[Tensor], support_feats: list[Tensor], levels: tuple[int, int, int],
    query_major: bool = False,
    buffers: dict | None = None,
) -> list[Tensor]:
    """Correlation pyramid [(..., L_i, hq, wq, hs, ws)] for the last ``sum(levels)`` maps.

    Maps are (..., C, h, w) with broadcastable leading dims. Layers of a level with equal
    shapes are correlated in one batched matmul. ``query_major`` (no autograd): every level
    is written straight into (..., hq, wq, L_i, hs, ws) memory, returned as a permuted view
    of the same logical shape; heads that read that layout (HSNet) skip a transposed copy.
    ``buffers`` (query-major only): a dict in which the outputs are kept and overwritten by
    the next call with equal shapes, sparing the CPU the page faults of fresh 100 MB
    allocations; the caller must be done with the results before calling again.
    """
    if query_major:
        return [_query_major_level(query_feats[sl], support_feats[sl], buffers, level)
                for level, sl in enumerate(level_slices(levels, len(query_feats)))]
    pyramid = []
    for sl in level_slices(levels, len(query_feats)):
        qs, ss = query_feats[sl], support_feats[sl]
        if len({q.shape for q in qs}) == 1 and len({s.shape for s in ss}) == 1:
            pyramid.append(cosine_correlation(torch.stack(qs, -4), torch.stack(ss, -4)))
        else:
            pyramid.append(torch.stack([cosine_correlation(q, s) for q, s in zip(qs, ss)], -5))
    return pyramid


def _query_major_level(qs: list[Tensor], ss: list[Tensor], buffers: dict | None, level: int) -> Tensor:
    """One level, layer by layer: each (Q, S) product lands in its slot of (..., Q, L, S).

    Under autocast the products run in the autocast dtype, as the plain path's matmul does.
    """
    lead = torch.broadcast_shapes(*(t.shape[:-3] for t in qs + ss))
    (hq, wq), (hs, ws) = qs[0].shape[-2:], ss[0].shape[-2:]
    device = qs[0].device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else qs[0].dtype
    shape = (*lead, hq * wq, len(qs), hs * ws)
    out = buffers.get(level) if buffers is not None else None
    if out is None or out.shape != shape or out.dtype != dtype or out.device != qs[0].device:
        out = qs[0].new_empty(shape, dtype=dtype)
        if buffers is not None:
            buffers[level] = out
    rows = out.view(-1, hq * wq, len(qs), hs * ws)
    for layer, (q, s) in enumerate(zip(qs, ss)):
        qn = _normalise(q).expand(*lead, q.shape[-3], hq * wq).reshape(-1, q.shape[-3], hq * wq)
        sn = _normalise(s).expand(*lead, s.shape[-3], hs * ws).reshape(-1, s.shape[-3], hs * ws)
        with torch.autocast(device, enabled=False):
            torch.bmm(qn.transpose(1, 2).to(dtype), sn.to(dtype), out=rows[:, :, layer])
    out.clamp_(min=0)
    return out.view(*lead, hq, wq, len(qs), hs, ws).movedim(-3, -5)
