"""The correlation pyramid written in query-major memory, into reusable buffers.

Same values as :func:`hmfss.correlation.hypercorrelation`, same logical shape
(..., L, hq, wq, hs, ws), but every level lives in (..., hq, wq, L, hs, ws) memory: a head
that reads that layout (HSNet's first 4D layer) skips a transposed copy of the largest
tensors of the pass. Buffers spare the CPU the page faults of fresh large allocations.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from hmfss.correlation import level_slices, normalise


def query_major_hypercorrelation(
    query_feats: list[Tensor], support_feats: list[Tensor], levels: tuple[int, int, int], buffers: dict | None = None
) -> list[Tensor]:
    """Correlation pyramid as permuted views of query-major memory (no autograd).

    ``buffers``: a dict in which the outputs are kept and overwritten by the next call with
    equal shapes; the caller must be done with the results before calling again.
    """
    return [_query_major_level(query_feats[sl], support_feats[sl], buffers, level)
            for level, sl in enumerate(level_slices(levels, len(query_feats)))]


def _autocast_on(device: str) -> bool:
    """Whether autocast is on for this device type (never for types without autocast: "meta")."""
    return torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)


def _level_memory(qs: list[Tensor], ss: list[Tensor], buffers: dict | None, level: int) -> Tensor:
    """(lead, hq*wq, L, hs*ws) output memory of a level, from ``buffers`` when it fits.
    Under autocast it has the autocast dtype, as the plain path's matmul result has."""
    lead = torch.broadcast_shapes(*(t.shape[:-3] for t in qs + ss))
    (hq, wq), (hs, ws) = qs[0].shape[-2:], ss[0].shape[-2:]
    device = qs[0].device.type
    dtype = torch.get_autocast_dtype(device) if _autocast_on(device) else qs[0].dtype
    shape = (*lead, hq * wq, len(qs), hs * ws)
    out = buffers.get(level) if buffers is not None else None
    # a buffer made under torch.inference_mode() cannot be written outside it (under no_grad)
    stale = out is not None and out.is_inference() and not torch.is_inference_mode_enabled()
    if out is None or stale or out.shape != shape or out.dtype != dtype or out.device != qs[0].device:
        out = qs[0].new_empty(shape, dtype=dtype)
        if buffers is not None:
            buffers[level] = out
    return out


def _query_major_level(qs: list[Tensor], ss: list[Tensor], buffers: dict | None, level: int) -> Tensor:
    """One level, layer by layer: each (Q, S) product lands in its slot of (..., Q, L, S)."""
    out = _level_memory(qs, ss, buffers, level)
    lead = out.shape[:-3]
    (hq, wq), (hs, ws) = qs[0].shape[-2:], ss[0].shape[-2:]
    device = qs[0].device.type
    rows = out.view(-1, hq * wq, len(qs), hs * ws)
    for layer, (q, s) in enumerate(zip(qs, ss)):
        qn = normalise(q).expand(*lead, q.shape[-3], hq * wq).reshape(-1, q.shape[-3], hq * wq)
        sn = normalise(s).expand(*lead, s.shape[-3], hs * ws).reshape(-1, s.shape[-3], hs * ws)
        with torch.autocast(device, enabled=False) if _autocast_on(device) else contextlib.nullcontext():
            torch.bmm(qn.transpose(1, 2).to(out.dtype), sn.to(out.dtype), out=rows[:, :, layer])
    out.clamp_(min=0)
    return out.view(*lead, hq, wq, len(qs), hs, ws).movedim(-3, -5)
