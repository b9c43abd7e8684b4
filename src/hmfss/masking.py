"""Support-feature masking strategies: the plain reference operations.

Given the backbone features of the support image ``feats``, the features of the input-masked
support image ``im_feats`` (same shapes) and the binary support mask, a strategy returns the
support features that enter the correlation:

==============  ==============================================================
``none``        features unmasked (HSNet "without masking", original ASNet)
``fm``          feature masking: F * resize(mask)
``im``          input masking: features of (normalised image * mask)
``hm``          hybrid masking: where(FM > 0, FM, IM)
``hm-add``      FM + IM ("simple add" ablation)
``hm-reverse``  where(IM > 0, IM, FM) ("reverse" ablation)
==============  ==============================================================

The mask is resized to each map bilinearly with aligned corners, as in the original models.
:mod:`hmfss.fast.masking` computes the same values faster on the CPU.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hmfss.errors import HmfssError


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) binary mask -> (B, 1, h, w) by bilinear interpolation with align_corners=True."""
    return F.interpolate(mask.unsqueeze(1).float(), size, mode="bilinear", align_corners=True)


def feature_mask(feat: Tensor, mask: Tensor) -> Tensor:
    """FM: (B, C, h, w) features times the (B, H, W) mask resized to (h, w)."""
    return feat * resize_mask(mask, tuple(feat.shape[-2:])).to(feat.dtype)


def input_mask(images: Tensor, mask: Tensor) -> Tensor:
    """IM input: normalised (B, 3, H, W) images times the (B, H, W) mask (0 = mean colour)."""
    return images * mask.unsqueeze(1).to(images.dtype)


# Each rule: (feats, im_feats, FM = feats times the mask resized to the map) -> masked maps.
Rule = Callable[[Tensor, "Tensor | None", "Tensor | None"], Tensor]

STRATEGIES: dict[str, Rule] = {
    "none": lambda feat, im, fm: feat,
    "fm": lambda feat, im, fm: fm,
    "im": lambda feat, im, fm: im,
    "hm": lambda feat, im, fm: torch.where(fm > 0, fm, im),
    "hm-add": lambda feat, im, fm: fm + im,
    "hm-reverse": lambda feat, im, fm: torch.where(im > 0, im, fm),
}


def check_strategy(name: str) -> str:
    """``name`` if it is a masking strategy; an HmfssError naming the choices otherwise."""
    if name not in STRATEGIES:
        raise HmfssError(f"unknown masking strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return name


def needs_input_masking(name: str) -> bool:
    """Whether the strategy needs the features of the input-masked support image."""
    return check_strategy(name) in ("im", "hm", "hm-add", "hm-reverse")


def selecting_input(name: str) -> str | None:
    """Which input's feature signs choose between FM and IM in a ``where`` rule: "feats" (hm),
    "im" (hm-reverse) or None. Rounding that flips such a sign near 0 swaps whole values."""
    return {"hm": "feats", "hm-reverse": "im"}.get(check_strategy(name))


def mask_support_features(name: str, feats: list[Tensor], im_feats: list[Tensor] | None, mask: Tensor) -> list[Tensor]:
    """Apply strategy ``name`` to every map: lists of (B, C_i, h_i, w_i), mask (B, H, W)."""
    rule = STRATEGIES[check_strategy(name)]
    if needs_input_masking(name) and im_feats is None:
        raise ValueError(f"masking {name!r} needs the input-masked support features")
    others = im_feats if im_feats is not None else [None] * len(feats)
    with_fm = name not in ("none", "im")
    return [rule(f, i, feature_mask(f, mask) if with_fm else None) for f, i in zip(feats, others)]
