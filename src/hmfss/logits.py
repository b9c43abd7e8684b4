"""From a head's 2-class logits to masks: the argmax, the resize to the query's size and the
original K-shot vote."""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

from hmfss.errors import HmfssError


def vote(shot_masks: Tensor) -> Tensor:
    """The original K-shot rule: (B, K, H, W) binary -> (B, H, W) binary.

    K = 1 returns the mask; otherwise votes are normalised by the episode's maximum vote
    (at least 1) and thresholded at 0.5.
    """
    if not isinstance(shot_masks, Tensor) or shot_masks.dim() != 4:
        raise HmfssError(f"vote takes (B, K, H, W) binary masks, got {type(shot_masks).__name__} "
                         f"{tuple(getattr(shot_masks, 'shape', ()))}")
    votes = shot_masks.sum(dim=1)
    if shot_masks.shape[1] == 1:
        return votes
    top = votes.flatten(1).amax(dim=1).clamp(min=1).view(-1, 1, 1)
    return (votes.float() / top >= 0.5).to(votes.dtype)


def foreground(logits: Tensor) -> Tensor:
    """``logits.argmax(dim=1)`` for 2-class logits (N, 2, H, W) -> (N, H, W) int64.

    Computed as a comparison, with argmax's rules for ties (background) and NaN (a NaN wins
    unless the other logit is NaN too): the same mask, without a slow argmax over a strided
    2-element dim (docs/performance.md).
    """
    background, fg = logits.unbind(1)
    return ((fg > background) | (fg.isnan() & ~background.isnan())).long()


def upsample_logits(logits: Tensor, size: Sequence[int]) -> Tensor:
    """(N, C, h, w) logits -> (N, C, H, W), bilinear with aligned corners as the original
    resizes them; unchanged at the same size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, tuple(size), mode="bilinear", align_corners=True)
